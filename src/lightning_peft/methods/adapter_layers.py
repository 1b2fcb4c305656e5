"""Bottleneck adapter layers and where they sit in each architecture (pure PyTorch, no Lightning).

A bottleneck adapter (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP",
arXiv:1902.00751) maps a sublayer's output h to h + W_up f(W_down h + b_down) + b_up. Adapters sit on
the output projection of a sublayer, before the residual addition: after the attention output
("attention") and after the FFN output ("ffn"). Each insertion point holds an `AdapterStack`, an
ordered set of adapters applied one after another (MAD-X: the language adapter, then the task adapter),
run by a forward hook on the projection, so the base model's own modules and parameter names are
untouched and the stack can be switched off in place.

Where the points are is declared per architecture in `INSERTION_POINTS` (model_type -> module name
patterns), never guessed from attributes; an architecture without a row is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Iterator, Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from .base import MethodConfigError

Placement = Literal["houlsby", "pfeiffer"]
NonLinearity = Literal["relu", "gelu", "silu", "tanh", "identity"]
# "identity": a linear adapter h + W_up W_down h, LiST's lite adapter (Wang et al. 2022).
NON_LINEARITIES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
                                               "identity": nn.Identity}
# Which sublayer outputs each placement adapts: Houlsby after attention and FFN, Pfeiffer after the FFN only.
PLACEMENTS: dict[str, tuple[str, ...]] = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}
SLOT = "bottleneck"  # the child name of the stack on each adapted projection (it appears in parameter names)


# model_type -> sublayer -> pattern over full module names matching that sublayer's output projection.
INSERTION_POINTS: dict[str, dict[str, str]] = {
    "llama": {"attention": r"(^|\.)layers\.\d+\.self_attn\.o_proj$", "ffn": r"(^|\.)layers\.\d+\.mlp\.down_proj$"},
    "gpt2": {"attention": r"(^|\.)h\.\d+\.attn\.c_proj$", "ffn": r"(^|\.)h\.\d+\.mlp\.c_proj$"},
    "bert": {"attention": r"(^|\.)layer\.\d+\.attention\.output\.dense$", "ffn": r"(^|\.)layer\.\d+\.output\.dense$"},
    # T5: self-attention of encoder and decoder blocks (not the decoder's cross-attention), and the FFN.
    "t5": {"attention": r"(^|\.)block\.\d+\.layer\.0\.SelfAttention\.o$",
           "ffn": r"(^|\.)block\.\d+\.layer\.\d+\.DenseReluDense\.wo$"},
}


def model_type(model: nn.Module) -> str:
    """The model's `config.model_type`; a model that is not a `transformers` model is refused."""
    if not isinstance(model, PreTrainedModel):
        raise MethodConfigError(f"Bottleneck adapters adapt transformers models (PreTrainedModel), not {type(model).__name__}; "
                                "load the model with from_pretrained.")
    return model.config.model_type


def insertion_points(model: nn.Module, sublayers: tuple[str, ...]) -> list[str]:
    """Module names of the given sublayers' output projections ("attention", "ffn"), in model order."""
    kind = model_type(model)
    if kind not in INSERTION_POINTS:
        raise MethodConfigError(f"Bottleneck adapters do not know where to sit in a {kind!r} model; supported: "
                                f"{', '.join(sorted(INSERTION_POINTS))} (add a row to INSERTION_POINTS in "
                                "lightning_peft/methods/adapter_layers.py).")
    patterns = [re.compile(INSERTION_POINTS[kind][sublayer]) for sublayer in sublayers]
    found = [name for name, _ in model.named_modules() if any(p.search(name) for p in patterns)]
    if not found:
        raise MethodConfigError(f"No {'/'.join(sublayers)} output projection of this {kind!r} model matches "
                                "INSERTION_POINTS; its module names differ from the table's, so update the table.")
    return found


def bottleneck_width(hidden_size: int, reduction_factor: float) -> int:
    """The adapter's inner width: hidden_size // reduction_factor, refused below 1."""
    width = int(hidden_size // reduction_factor)
    if width < 1:
        raise MethodConfigError(f"reduction_factor={reduction_factor} leaves a bottleneck of width {width} on this model "
                                f"(hidden size {hidden_size}); use a factor of at most {hidden_size}.")
    return width


def base_signature(model: nn.Module) -> str:
    """A hash of the weights every adapter of this architecture can sit on (all attention and FFN outputs).

    Per projection, in model order: its parameters' shapes and their float64 sum and sum of squares
    (5 significant digits). The names are left out, so the same body loaded with another head class
    (causal LM, sequence classifier) signs alike, while another base, or the same one fine-tuned, does not.
    """
    digest = hashlib.sha256()
    for name in insertion_points(model, ("attention", "ffn")):
        for tensor in model.get_submodule(name).parameters(recurse=False):
            values = tensor.detach().double()
            digest.update(f"{tuple(tensor.shape)}:{values.sum().item():.5e}:{values.square().sum().item():.5e};".encode())
    return digest.hexdigest()[:16]


class Bottleneck(nn.Module):
    """h -> h + W_up f(W_down h + b_down) + b_up.

    By default W_down keeps PyTorch's default (Kaiming-uniform) initialisation and W_up, b_up start at zero,
    so the adapter starts as the identity and still learns (W_up gets a gradient at once, W_down from the
    next step). With `init_std`, both weights are drawn from N(0, init_std^2) and both biases start at zero
    (LiST's lite adapters: 0.02), so the adapter starts near, not at, the identity.
    """

    def __init__(self, hidden_size: int, width: int, non_linearity: str, init_std: float | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, width)
        self.non_linearity = NON_LINEARITIES[non_linearity]()
        self.up = nn.Linear(width, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        if init_std is not None:
            for projection in (self.down, self.up):
                nn.init.normal_(projection.weight, std=init_std)
                nn.init.zeros_(projection.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.non_linearity(self.down(hidden)))


class AdapterStack(nn.ModuleDict):
    """The adapters at one insertion point, applied in insertion order (MAD-X: "language", then "task")."""

    def __init__(self) -> None:
        super().__init__()
        self.active = True

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return hidden
        for adapter in self.values():
            hidden = adapter(hidden)
        return hidden

    def after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the adapted projection: its output goes through the stack."""
        return self(output)


def stack_at(model: nn.Module, point: str) -> AdapterStack:
    """The stack on projection `point`, created (child `SLOT` plus a forward hook) on first use."""
    target = model.get_submodule(point)
    for name, child in target.named_children():
        if name == SLOT and isinstance(child, AdapterStack):
            return child
    stack = AdapterStack()
    target.add_module(SLOT, stack)
    target.register_forward_hook(stack.after)
    return stack


def insert(model: PreTrainedModel, points: list[str], role: str, width: int, non_linearity: str,
           init_std: float | None = None) -> dict[str, Bottleneck]:
    """Add a fresh `Bottleneck` named `role` at every point (last in each stack); returns them by point."""
    hidden = model.config.hidden_size
    added = {}
    for point in points:
        stack = stack_at(model, point)
        if role in stack:
            raise MethodConfigError(f"{point} already holds a {role!r} adapter; apply the method to a fresh base model.")
        stack[role] = Bottleneck(hidden, width, non_linearity, init_std).to(device=model.device, dtype=model.dtype)
        added[point] = stack[role]
    return added


def stacks(model: nn.Module) -> list[AdapterStack]:
    return [module for module in model.modules() if isinstance(module, AdapterStack)]


def role_parameters(model: nn.Module, role: str) -> dict[str, nn.Parameter]:
    """Every parameter of the adapters named `role`, by its full name in `model`."""
    marker = f".{SLOT}.{role}."
    return {name: p for name, p in model.named_parameters() if marker in name}


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """Switch every stack off in place (the base's outputs) for the block, then back to how it was."""
    previous = [(stack, stack.active) for stack in stacks(model)]
    for stack, _ in previous:
        stack.active = False
    try:
        yield model
    finally:
        for stack, active in previous:
            stack.active = active
