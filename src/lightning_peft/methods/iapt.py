"""IAPT: instruction-aware prompt tuning.

Zhu, Tian, Yin, Ni, Wang, Xie 2024, "IAPT: Instruction-Aware Prompt Tuning for Large Language Models",
arXiv:2405.18203 (ACL 2024 as "IAPT: Instance-Aware Prompt Tuning for Large Language Models"). No public code.

Instead of one fixed soft prompt, a small generator at every transformer layer l turns that layer's
hidden states of the *instruction* into k soft tokens (paper: k=4): down-projection, self-attention
pooling to k vectors, a learned rational activation P(x)/Q(x), up-projection. The prompt thus adapts
to each input while the backbone stays frozen.

How it is wired here (our decisions; the paper does not pin them down):

- The wrapper (`IAPTModel`, a `PromptedModel`) prepends k prompt positions to the input
  embeddings. A forward pre-hook on each layer computes the layer's generated prompt from the
  layer's *incoming* hidden states at the instruction positions and writes it into those k
  positions. The generator thus reads the instruction's states "right before the layer" in the
  same pass (unverified: the paper might read them from a separate prompt-free pass).
- Residual form (default, ``residual=True``; ours): the prompt positions start as the embeddings
  of k real tokens (``init_text``, else random vocabulary tokens; a trained ``start`` [k, d]) and
  travel through the layers like tokens; each layer's generator *adds* its output to the states
  there, and its up-projection starts at zero. At step 0 the model is therefore exactly the base
  reading k tokens in front of the input, and the generators grow from there. Whether the paper
  adds to or replaces the prompt positions' states, and how it initialises the generators, is
  not stated in what we could read (the abstract): unverified.
  ``residual=False`` is the form we had first, closer to deep prompt tuning: each layer's prompt
  *replaces* the states at those positions (default-initialised up-projection, no start vectors).
  On SmolLM2-135M it did not learn (docs/methods/iapt.md, "What we found"): the replaced positions
  hold vectors of RMS ~0.16 at every layer while the other tokens' RMS is 2-29, and the base's
  first position carries a massive activation (max |h| ~24,000 from layer 12 on) on which later
  tokens put 44-88% of their attention in most layers; with the prompt at position 0, overwritten
  at every layer, neither the prompt nor the first real token carries that activation any more and
  the attention lands on the generated vectors instead, so at step 0 the test loss was 3.11
  against the base's 1.64. In the residual form the prompt positions develop the activation.
- ``scale_to_hidden`` (ours): multiply the generator's output by the RMS of the layer's
  incoming hidden states over the instruction (not trained through), so one learning rate
  suits layers whose residual streams differ in scale (RMS ~0.1 at layer 0, ~29 at layer 29).
  Off by default: on SmolLM2 / TREC-6 it was not better in the benchmark's runs.
- Instruction positions: real tokens (`attention_mask`) that carry no loss (`labels == -100`
  when token labels are given), so an SFT response never leaks into the prompt. Without token
  labels (classification, generation) the whole input is the instruction.
- Encoder-decoder models (T5): the prompt goes to the encoder and only encoder layers get
  generators.
- Unverified in the paper, so they are arguments: the bottleneck width, sharing one generator
  across layers, the rational degrees and initialisation, and normalising the hidden states
  before the down-projection (parameter-free layer norm; residual streams grow with depth and a
  degree-5 numerator amplifies large inputs). Pooling uses k learned queries attending over the
  down-projected instruction states, which serve as both keys and values.
"""

from __future__ import annotations

import math
import weakref
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..constants import IGNORE_INDEX
from .base import Adapted, MethodConfigError, freeze, trainable_groups
from .prompt_inputs import PromptedModel, initial_prompt, is_encoder_decoder, left_align_rows, pools_last_token
from .selective import transformer_layers
from .soft_prompt_io import PromptedMethod
from .targets import check_targets

RationalInit = Literal["gelu", "identity"]

# Least-squares fit of the safe Pade form below to GELU on [-6, 6] (max error 4e-3 there), found with
# `fit_rational("gelu", 5, 4)`; stored so the default does not run an optimiser at construction.
GELU_5_4 = (
    (-0.0037356, 0.50029405, 0.42404209, 0.12888698, 0.01660467, 0.00076022),
    (0.0074555, 0.25234200, 0.00130672, 0.00141847),
)
_FIT_RANGE = 6.0


def rational(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """Safe Pade form R(x) = (a_0 + a_1 x + ... + a_m x^m) / (1 + |b_1 x + ... + b_n x^n|).

    Molina, Schramowski, Kersting 2020, "Pade Activation Units", arXiv:1907.06732: the absolute
    value keeps the denominator >= 1, so R has no poles whatever the learned coefficients.
    """
    p = torch.zeros_like(x) + numerator[-1]
    for coefficient in numerator.flip(0)[1:]:
        p = p * x + coefficient
    q = torch.zeros_like(x) + denominator[-1]
    for coefficient in denominator.flip(0)[1:]:
        q = q * x + coefficient
    return p / (1 + (q * x).abs())


@lru_cache(maxsize=None)
def fit_rational(function: RationalInit, numerator: int, denominator: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients (a_0..a_m, b_1..b_n) of `rational` closest to `function` on [-6, 6].

    A linear least-squares solve of P(x) - y (b_1 x + ... + b_n x^n) = y starts an L-BFGS refinement
    of the mean squared error of the exact (absolute-value) form.
    """
    if function == "identity":
        return tuple(float(j == 1) for j in range(numerator + 1)), (0.0,) * denominator
    x = torch.linspace(-_FIT_RANGE, _FIT_RANGE, 512, dtype=torch.float64)
    y = F.gelu(x)
    powers = torch.stack([x**j for j in range(max(numerator, denominator) + 1)], dim=-1)
    system = torch.cat([powers[:, : numerator + 1], -y[:, None] * powers[:, 1 : denominator + 1]], dim=1)
    start = torch.linalg.lstsq(system, y[:, None]).solution[:, 0]
    a, b = start[: numerator + 1].clone().requires_grad_(), start[numerator + 1 :].clone().requires_grad_()
    optimizer = torch.optim.LBFGS([a, b], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = (rational(x, a, b) - y).square().mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return tuple(a.detach().tolist()), tuple(b.detach().tolist())


class RationalActivation(nn.Module):
    """A learned rational activation (see `rational`) with its own coefficients.

    Args:
        numerator: Degree m of P.
        denominator: Degree n of Q (n >= 1).
        init: Start as "gelu" (least-squares fit) or exactly as "identity".
    """

    def __init__(self, numerator: int = 5, denominator: int = 4, init: RationalInit = "gelu") -> None:
        super().__init__()
        a, b = GELU_5_4 if (init, numerator, denominator) == ("gelu", 5, 4) else fit_rational(init, numerator, denominator)
        self.numerator = nn.Parameter(torch.tensor(a, dtype=torch.float32))
        self.denominator = nn.Parameter(torch.tensor(b, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rational(x, self.numerator, self.denominator)


class PromptGenerator(nn.Module):
    """One layer's generator: instruction hidden states [B, T, d] -> k soft tokens [B, k, d].

    down (d -> r) -> pooling (k learned queries, softmax over the instruction positions) ->
    rational activation -> up (r -> d). A row without instruction positions pools to zero.
    """

    def __init__(self, hidden_size: int, num_tokens: int, bottleneck: int, degrees: tuple[int, int],
                 rational_init: RationalInit, normalize_input: bool, zero_up: bool = False) -> None:
        super().__init__()
        self.normalize_input = normalize_input
        self.down = nn.Linear(hidden_size, bottleneck)
        # Small queries start as (almost) mean pooling over the instruction.
        self.queries = nn.Parameter(torch.randn(num_tokens, bottleneck) * 0.02)
        self.activation = RationalActivation(*degrees, init=rational_init)
        self.up = nn.Linear(bottleneck, hidden_size)
        if zero_up:  # the generator starts by writing nothing (residual form: the model starts as the base)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            hidden = F.layer_norm(hidden, hidden.shape[-1:])
        states = self.down(hidden)
        scores = torch.einsum("kr,btr->bkt", self.queries, states) / math.sqrt(states.shape[-1])
        scores = scores.masked_fill(~instruction[:, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all -inf (no instruction) -> zeros
        return self.up(self.activation(weights @ states))


def instruction_rms(hidden: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1] root mean square of each row's hidden states over its instruction positions (1 where none)."""
    mask = instruction[..., None].to(hidden.dtype)
    count = mask.sum(dim=(1, 2), keepdim=True) * hidden.shape[-1]
    mean_square = (hidden.square() * mask).sum(dim=(1, 2), keepdim=True) / count.clamp(min=1)
    return torch.where(count > 0, mean_square.sqrt(), torch.ones_like(mean_square))


class _LayerHook:
    """Forward pre-hook that writes layer `index`'s prompt into the first k hidden positions.

    It holds its wrapper weakly: hooks never keep a deleted wrapper alive, and the wrapper's
    finalizer removes them from the base.
    """

    def __init__(self, owner: IAPTModel, index: int) -> None:
        self.owner, self.index = weakref.ref(owner), index

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        owner = self.owner()
        if owner is None or owner.instruction is None or owner.layers[self.index] is not module:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[:2] != owner.instruction.shape:
            return None  # not the wrapper's sequence (e.g. a decoder layer with a shared class)
        generator = owner.generator(self.index)
        prompt = generator(hidden.to(generator.queries.dtype), owner.instruction).to(hidden.dtype)
        if owner.scale_to_hidden:  # the generator's output in units of this layer's residual-stream RMS
            prompt = prompt * instruction_rms(hidden.detach(), owner.instruction)
        if owner.residual:
            prompt = hidden[:, : owner.num_tokens] + prompt
        hidden = torch.cat([prompt, hidden[:, owner.num_tokens :]], dim=1)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}


class IAPTModel(PromptedModel):
    """A frozen model whose every (encoder) layer reads k soft tokens generated from the instruction.

    Built by `IAPT.apply`; call it like the base model. `remove_hooks()` (or deleting the wrapper)
    restores the base's own behaviour. `apply` sets ``method_config`` and ``head_names``, so
    `lightning_peft.methods.soft_prompt_io.save_soft_prompt` exports the generators (and heads) alone.
    """

    def __init__(self, base: nn.Module, num_tokens: int, bottleneck: int, share_generators: bool,
                 rational_degrees: tuple[int, int], rational_init: RationalInit, normalize_input: bool,
                 residual: bool = True, scale_to_hidden: bool = False, start: torch.Tensor | None = None) -> None:
        super().__init__(base)
        self.num_tokens, self.residual, self.scale_to_hidden = num_tokens, residual, scale_to_hidden
        stack = base.get_encoder() if is_encoder_decoder(base) else base
        self.layers = list(transformer_layers(stack))  # a plain list: the base already registers them
        hidden_size = base.get_input_embeddings().embedding_dim
        count = 1 if share_generators else len(self.layers)
        device = base.get_input_embeddings().weight.device
        self.generators = nn.ModuleList(
            PromptGenerator(hidden_size, num_tokens, bottleneck, tuple(rational_degrees), rational_init, normalize_input,
                            zero_up=residual)
            for _ in range(count)
        ).to(device)
        # What the k prompt positions hold before the first layer: with `residual` the layers process
        # them like tokens and the generators add to them; without it layer 0's hook overwrites them.
        self.start: nn.Parameter | None = None
        if residual:
            start = torch.zeros(num_tokens, hidden_size) if start is None else start.detach().float().clone()
            self.start = nn.Parameter(start.to(device))
        self.instruction: torch.Tensor | None = None  # [B, k + L] bool, set only while forward runs
        handles = [layer.register_forward_pre_hook(_LayerHook(self, i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        self._finalizer = weakref.finalize(self, _remove, handles)

    def generator(self, index: int) -> PromptGenerator:
        return self.generators[0 if len(self.generators) == 1 else index]

    def remove_hooks(self) -> nn.Module:
        """Detach the generators from the base for good and return the plain base model."""
        self._finalizer()
        return self.base

    def prompt(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None):
        """The k start vectors (with `residual`) or placeholders that layer 0's hook overwrites."""
        if self.start is None:
            return inputs_embeds.new_zeros(inputs_embeds.shape[0], self.num_tokens, inputs_embeds.shape[-1]), inputs_embeds
        start = self.start.to(inputs_embeds.dtype)
        return start.expand(inputs_embeds.shape[0], *start.shape), inputs_embeds

    def instruction_mask(self, batch: int, length: int, device: torch.device, attention_mask: torch.Tensor | None,
                         labels: torch.Tensor | None) -> torch.Tensor:
        """[B, k + L] bool: True at real input tokens without a loss; False at the k prompt positions."""
        mask = torch.ones(batch, length, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()
        token_labels = labels is not None and labels.dim() == 2 and labels.shape[1] == length
        if token_labels and not is_encoder_decoder(self.base):
            mask = mask & (labels == IGNORE_INDEX)
        if attention_mask is not None and pools_last_token(self.base):
            (mask,) = left_align_rows(attention_mask, mask)  # prepend_to_inputs reorders these rows the same way
        return torch.cat([mask.new_zeros(batch, self.num_tokens), mask], dim=1)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, inputs_embeds=None, **kwargs):
        if not self._finalizer.alive:
            raise RuntimeError("This IAPT wrapper's hooks were removed; call the base model (or apply IAPT again).")
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        self.instruction = self.instruction_mask(*reference.shape[:2], reference.device, attention_mask, labels)
        try:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   labels=labels, inputs_embeds=inputs_embeds, **kwargs)
        finally:
            self.instruction = None  # the base behaves as itself when called directly

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """`PromptedModel.generate` with the generators on: they write the prompt in the first (full-length)
        pass; later steps see one new position, whose shape the hooks skip, and read the prompt from the cache."""
        if not self._finalizer.alive:
            raise RuntimeError("This IAPT wrapper's hooks were removed; call the base model (or apply IAPT again).")
        self.instruction = self.instruction_mask(*input_ids.shape[:2], input_ids.device, attention_mask, None)
        try:
            return super().generate(input_ids, attention_mask, **kwargs)
        finally:
            self.instruction = None


def _remove(handles) -> None:
    for handle in handles:
        handle.remove()


class IAPT(PromptedMethod):
    """IAPT (Zhu et al., ACL 2024): per-layer prompt generators conditioned on the instruction.

    Example::

        from transformers import AutoModelForCausalLM
        from lightning_peft.methods.iapt import IAPT
        adapted = IAPT(num_tokens=4, bottleneck=32).apply(AutoModelForCausalLM.from_pretrained(path))
        adapted.model(input_ids=ids, attention_mask=mask)   # an IAPTModel; the base stays frozen
        adapted.groups["prompt"]                            # every generator parameter and the start vectors

    Args:
        num_tokens: Soft tokens generated per layer (paper: 4).
        bottleneck: Width r of the generator's down-projection (unverified; paper's value not public).
        share_generators: One generator for all layers instead of one per layer (the paper mentions
            cross-layer sharing to save parameters; what exactly it shares is unverified).
        rational_degrees: (m, n) degrees of the rational activation's numerator and denominator.
        rational_init: Initial shape of the rational activation: "gelu" (fitted) or "identity" (exact).
        normalize_input: Layer-normalise (no learned scale) the hidden states before the down-projection.
        residual: Add each layer's generated prompt to the states at the k prompt positions, which start
            as token embeddings (trained, group "prompt"), with zero-initialised up-projections, so the
            model starts as the base reading k tokens first (ours; default). False: each layer's prompt
            replaces those states (the earlier form; it did not learn on SmolLM2, see the module docstring).
        scale_to_hidden: Multiply each generated prompt by the RMS of the layer's incoming hidden
            states over the instruction (ours; off by default).
        init_text: With `residual`, the prompt positions start as the embeddings of this text's first
            k tokens (tiled when shorter), e.g. a task instruction; none: k random vocabulary tokens.
        tokenizer: Tokenizer for `init_text`: a loaded tokenizer or a name / folder (zoo short names
            work); none: the run's tokenizer, bound by the module (without a module: the model's own folder).
        modules_to_save: Base modules trained in full besides the generators (e.g. a new head).
    """

    def __init__(
        self,
        num_tokens: int = 4,
        bottleneck: int = 32,
        share_generators: bool = False,
        rational_degrees: tuple[int, int] = (5, 4),
        rational_init: RationalInit = "gelu",
        normalize_input: bool = True,
        residual: bool = True,
        scale_to_hidden: bool = False,
        init_text: str | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        modules_to_save: list[str] | None = None,
    ) -> None:
        if num_tokens < 1:
            raise MethodConfigError(f"IAPT num_tokens={num_tokens} must be a positive integer (paper: 4).")
        if bottleneck < 1:
            raise MethodConfigError(f"IAPT bottleneck={bottleneck} must be a positive integer (e.g. 32).")
        degrees = tuple(rational_degrees)
        if len(degrees) != 2 or degrees[0] < 1 or degrees[1] < 1:
            raise MethodConfigError(f"IAPT rational_degrees={list(rational_degrees)} must be two degrees >= 1, e.g. [5, 4].")
        if rational_init not in ("gelu", "identity"):
            raise MethodConfigError(f"IAPT rational_init={rational_init!r} must be 'gelu' or 'identity'.")
        self.num_tokens, self.bottleneck, self.share_generators = num_tokens, bottleneck, share_generators
        self.rational_degrees, self.rational_init, self.normalize_input = degrees, rational_init, normalize_input
        self.residual, self.scale_to_hidden = residual, scale_to_hidden
        self.init_text, self.tokenizer = init_text, tokenizer
        self.modules_to_save = list(modules_to_save or [])

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        """Freeze `model`, hook generators onto its layers and return the wrapper with its groups."""
        if model.get_input_embeddings() is None:
            raise MethodConfigError(f"IAPT needs a model with input embeddings; {type(model).__name__} has none.")
        layers = (model.get_encoder() if is_encoder_decoder(model) else model).modules()
        if any(isinstance(hook, _LayerHook) and hook.owner() is not None
               for layer in layers for hook in layer._forward_pre_hooks.values()):
            raise MethodConfigError("This model already carries IAPT generators; apply IAPT to a fresh base model.")
        save = sorted(set(self.modules_to_save) | set(modules_to_save or []))
        if save:
            check_targets(model, save, what="modules_to_save")
        freeze(model)
        for path, module in model.named_modules():
            if path in save or path.rsplit(".", 1)[-1] in save:
                module.requires_grad_(True)
        start = initial_prompt(model, self.num_tokens, self.init_text, self.tokenizer, "IAPT") if self.residual else None
        wrapper = IAPTModel(model, self.num_tokens, self.bottleneck, self.share_generators, self.rational_degrees,
                            self.rational_init, self.normalize_input, self.residual, self.scale_to_hidden, start)
        groups = trainable_groups(wrapper, lambda name: "head" if name.startswith("base.") else "prompt")
        wrapper.head_names = [name.removeprefix("base.") for name in groups.get("head", {})]
        wrapper.method_config = {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                                 "init_args": self.init_args(save)}
        return Adapted(wrapper, groups)

    def init_args(self, modules_to_save: list[str]) -> dict:
        """Constructor arguments that rebuild the same generators (and heads) on a base: saved with an export."""
        return {"num_tokens": self.num_tokens, "bottleneck": self.bottleneck, "share_generators": self.share_generators,
                "rational_degrees": list(self.rational_degrees), "rational_init": self.rational_init,
                "normalize_input": self.normalize_input, "residual": self.residual,
                "scale_to_hidden": self.scale_to_hidden, "modules_to_save": list(modules_to_save)}
                # init_text is left out: the start vectors travel with the weights, and a reload needs no tokenizer
