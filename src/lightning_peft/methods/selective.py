"""Selective fine-tuning: train a chosen subset of a model's own weights, add nothing.

- Full fine-tuning: every weight trains (the baseline).
- HFT, Half Fine-Tuning: Hui et al. 2024, "HFT: Half Fine-Tuning for Large Language Models",
  arXiv:2404.18466. In every transformer layer a random half of the weights is frozen at category
  level (2 of the 4 attention projections; 2 of the 3 FFN projections in half of the layers and 1
  of 3 in the other half), redrawn at every training stage. Freezing half keeps part of the base's
  knowledge intact (less forgetting) and halves optimizer state.
- Lightweight variants: Zlotchevski et al. 2022, "Exploring and Evaluating Personalized Models for
  Code Generation", arXiv:2208.13928: token embeddings + output layer only; the last block only.
- BitFit: Ben Zaken et al. 2022, arXiv:2106.10199: bias terms only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from torch import nn

from .base import Adapted, MethodConfigError, SelectiveMethod, freeze, trainable_groups

Placement = Literal["train", "freeze"]


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: its longest ModuleList of same-type modules."""
    stacks = [
        m for m in model.modules()
        if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(block) for block in m}) == 1
    ]
    if not stacks:
        raise MethodConfigError(f"No stack of transformer layers found in {type(model).__name__}.")
    return max(stacks, key=len)


def _embedding_weights(model: nn.Module) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """Input-embedding and output-layer weights of a `transformers` model; (None, None) for a plain module."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return None, None
    head = model.get_output_embeddings()
    return model.get_input_embeddings().weight, (head.weight if head is not None else None)


def _train_heads(model: nn.Module, modules_to_save: list[str] | None, group_of) -> Adapted:
    """Unfreeze the modules a task added (e.g. a classification head) and group what trains."""
    heads, head_params = set(modules_to_save or []), set()
    for name, module in model.named_modules():
        if name in heads or name.rsplit(".", 1)[-1] in heads:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
                head_params.add(id(parameter))
    by_name = dict(model.named_parameters())
    return Adapted(model, trainable_groups(model, lambda n: "head" if id(by_name[n]) in head_params else group_of(n)))


class FullFineTuning(SelectiveMethod):
    """Train every weight of the model (one group, "model")."""

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return Adapted(model, trainable_groups(model, lambda name: "model"))


@dataclass
class HalfSelection:
    """Which projection of which layer is frozen in one stage: {layer index: [module names]}."""

    frozen: dict[int, list[str]]
    stage: int

    def describe(self) -> str:
        return "; ".join(f"L{i}: {','.join(names)}" for i, names in sorted(self.frozen.items()))


class HFT(SelectiveMethod):
    """HFT: per stage, freeze a random half of every transformer layer at category level.

    Example::

        hft = HFT(seed=0)
        adapted = hft.apply(model)            # stage 0 selection
        hft.select(model, stage=1)            # next stage: a new half

    Args:
        seed: Seed of the draw; stage s uses `seed + s`, so a selection is reproducible and a
            resumed run draws the same half.
        attention_modules: The 4 attention projections (2 of them frozen per layer).
        ffn_modules: The 3 FFN projections (2 frozen in half the layers, 1 in the others).
        norms: "train" or "freeze" the layer norms (the paper does not say; default train:
            they are tiny and carry no knowledge worth protecting).
        embeddings: "train" or "freeze" the input embeddings (default freeze: they hold the
            vocabulary knowledge HFT means to keep; unverified in the paper).
        lm_head: "train" or "freeze" an untied output layer (default freeze, like embeddings).
    """

    def __init__(
        self,
        seed: int = 0,
        attention_modules: list[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        ffn_modules: list[str] = ("gate_proj", "up_proj", "down_proj"),
        norms: Placement = "train",
        embeddings: Placement = "freeze",
        lm_head: Placement = "freeze",
    ) -> None:
        self.seed = seed
        self.attention_modules, self.ffn_modules = list(attention_modules), list(ffn_modules)
        if len(self.attention_modules) != 4 or len(self.ffn_modules) != 3:
            raise MethodConfigError(
                f"HFT freezes 2 of 4 attention and 1-2 of 3 FFN projections; got attention_modules="
                f"{self.attention_modules} and ffn_modules={self.ffn_modules}."
            )
        self.norms, self.embeddings, self.lm_head = norms, embeddings, lm_head

    def draw(self, num_layers: int, stage: int) -> HalfSelection:
        """The frozen projections of each layer for `stage`: exactly half of each category overall."""
        rng = random.Random(self.seed + stage)
        two_ffn = set(rng.sample(range(num_layers), num_layers // 2))
        if num_layers % 2 and rng.random() < 0.5:  # an odd layer count cannot split evenly; alternate by draw
            two_ffn = set(range(num_layers)) - two_ffn
        frozen = {
            i: sorted(rng.sample(self.attention_modules, 2)) + sorted(rng.sample(self.ffn_modules, 2 if i in two_ffn else 1))
            for i in range(num_layers)
        }
        return HalfSelection(frozen, stage)

    def _check(self, layers: nn.ModuleList) -> None:
        names = {name.rsplit(".", 1)[-1] for name, _ in layers[0].named_modules()}
        missing = [m for m in self.attention_modules + self.ffn_modules if m not in names]
        if missing:
            raise MethodConfigError(
                f"HFT needs separate projections {missing} in each layer of {type(layers[0]).__name__}; "
                f"set attention_modules/ffn_modules to this model's names ({sorted(n for n in names if n)})."
            )

    def select(self, model: nn.Module, stage: int = 0) -> HalfSelection:
        """Set `requires_grad` for `stage`'s half and return the selection."""
        layers = transformer_layers(model)
        self._check(layers)
        selection = self.draw(len(layers), stage)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        for i, block in enumerate(layers):
            for path, module in block.named_modules():
                if path.rsplit(".", 1)[-1] in selection.frozen[i]:
                    freeze(module)
                elif self.norms == "freeze" and "norm" in type(module).__name__.lower():
                    freeze(module)
        in_layers = {id(p) for p in layers.parameters()}
        embedding, head = _embedding_weights(model)
        for name, parameter in model.named_parameters():
            if id(parameter) in in_layers:
                continue
            is_embedding, is_head = parameter is embedding, parameter is head
            if (is_embedding and self.embeddings == "freeze") or (is_head and self.lm_head == "freeze"):
                parameter.requires_grad_(False)
            elif "norm" in name and self.norms == "freeze":
                parameter.requires_grad_(False)
        return selection

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None, stage: int = 0) -> Adapted:
        """Freeze stage `stage`'s half; groups: "layers" (transformer blocks) and "other" (norms, heads)."""
        self.select(model, stage)
        in_layers = {id(p) for p in transformer_layers(model).parameters()}
        layer_names = {name for name, p in model.named_parameters() if id(p) in in_layers}
        return Adapted(model, trainable_groups(model, lambda name: "layers" if name in layer_names else "other"))


class EmbeddingsAndHead(SelectiveMethod):
    """Train the token embeddings and the output layer only (Zlotchevski et al. 2022)."""

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        freeze(model)
        model.get_input_embeddings().weight.requires_grad_(True)
        if model.get_output_embeddings() is not None:
            model.get_output_embeddings().weight.requires_grad_(True)
        return _train_heads(model, modules_to_save, lambda name: "embeddings")


class LastBlock(SelectiveMethod):
    """Train the last transformer block only (Zlotchevski et al. 2022)."""

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        freeze(model)
        for parameter in transformer_layers(model)[-1].parameters():
            parameter.requires_grad_(True)
        return _train_heads(model, modules_to_save, lambda name: "last_block")


class BitFit(SelectiveMethod):
    """Train bias terms only (Ben Zaken et al. 2022); an error on models without biases (e.g. Llama)."""

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        freeze(model)
        biases = [p for name, p in model.named_parameters() if name.endswith(".bias")]
        if not biases:
            raise MethodConfigError(
                f"BitFit trains bias terms, but {type(model).__name__} has none; pick LoRA or HFT for this model."
            )
        for parameter in biases:
            parameter.requires_grad_(True)
        return _train_heads(model, modules_to_save, lambda name: "bias")
