"""LoRA family through peft: LoRA, DoRA, rsLoRA and IA3 (never re-implemented here).

- LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
  W x + (alpha / r) * B A x with A, B low rank; B starts at zero so training starts at the base.
- rsLoRA: Kalajdzievski 2023, arXiv:2312.03732: scale alpha / sqrt(r) keeps updates stable as r grows.
- DoRA: Liu et al. 2024, arXiv:2402.09353: splits W into magnitude and direction; LoRA on the direction.
- IA3: Liu et al. 2022, arXiv:2205.05638: learned vectors rescale keys, values and FFN activations.

Each class is a small config whose `apply(model)` calls `peft.get_peft_model` and returns the
adapted model with named groups: "adapter" (the low-rank / scaling weights) and "head"
(`modules_to_save`, trained in full, e.g. a classification head). Export, loading and disabling
come from peft (`PeftBacked`); `merge` folds the adapter into the base weights.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Literal

from peft import IA3Config, LoraConfig, PeftConfig, get_peft_model
from torch import nn

from .base import Adapted, Capabilities, MethodConfigError, trainable_groups
from .peft_backed import PeftBacked, peft_task_type, start_from
from .lora_dropout import use_compact_dropout
from .targets import ALL_LINEAR, check_targets

HEAD_MARKER = ".modules_to_save."


def _group_of(name: str) -> str:
    return "head" if HEAD_MARKER in name else "adapter"


class PeftMethod(PeftBacked):
    """Shared mechanics of the LoRA family in peft: validate targets, inject, group parameters; merge."""

    capabilities: ClassVar[Capabilities] = Capabilities(export=True, merge=True, disable=True)

    def __init__(self, target_modules: list[str] | str, modules_to_save: list[str] | None) -> None:
        if not target_modules:
            raise MethodConfigError("target_modules is empty; name the layers to adapt (e.g. [q_proj, v_proj]) or 'all-linear'.")
        self.target_modules = target_modules
        self.modules_to_save = list(modules_to_save or [])

    @abstractmethod
    def peft_config(self, target_modules: list[str] | str, modules_to_save: list[str]) -> PeftConfig:
        """The peft config that injects this method into the named modules."""

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        """Inject the adapter into `model` (frozen otherwise) and return it with its groups."""
        check_targets(model, self.target_modules)
        save = sorted(set(self.modules_to_save) | set(modules_to_save or []))
        check_targets(model, save, what="modules_to_save") if save else None
        config = self.peft_config(self.target_modules, save)
        config.task_type = peft_task_type(model)
        peft_model = get_peft_model(model, config)
        return Adapted(peft_model, trainable_groups(peft_model, _group_of))

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the adapter into the base weights and return the plain `transformers` model."""
        return model.merge_and_unload()


class Lora(PeftMethod):
    """LoRA and its variants DoRA and rsLoRA (peft).

    Example::

        from transformers import AutoModelForCausalLM
        from lightning_peft.methods import Lora
        adapted = Lora(r=8, target_modules=["q_proj", "v_proj"]).apply(AutoModelForCausalLM.from_pretrained(path))
        adapted.groups["adapter"]  # {name: parameter}

    Args:
        r: Rank of the update B A.
        alpha: Scale numerator: the update is multiplied by alpha / r (alpha / sqrt(r) with rsLoRA).
        dropout: Dropout on the adapter's input during training.
        target_modules: Layer names to adapt (e.g. [q_proj, v_proj]) or "all-linear".
        modules_to_save: Modules trained in full besides the adapter (e.g. a new head).
        variant: "lora"; "dora" (weight-decomposed, Liu et al. 2024); "rslora" (rank-stabilised scaling).
        bias: Which biases to train: "none", "lora_only" or "all".
        compact_dropout: On a CPU, keep each adapter's (shared) input and a 1-byte dropout mask for the
            backward pass instead of PyTorch's float noise and a dropped copy per adapter
            (`lora_dropout.py`): bitwise the same outputs and gradients, less memory. False: peft's nn.Dropout.
        init_from: A folder with an exported LoRA adapter (`lightning-peft export`, peft's format) of the same r,
            alpha, variant and targets on the same base: training starts from its weights instead of B = 0,
            e.g. PPO from a briefly supervised policy. Read when the method is applied.
    """

    def __init__(
        self,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        target_modules: list[str] | str = ALL_LINEAR,
        modules_to_save: list[str] | None = None,
        variant: Literal["lora", "dora", "rslora"] = "lora",
        bias: Literal["none", "lora_only", "all"] = "none",
        compact_dropout: bool = True,
        init_from: str | None = None,
    ) -> None:
        super().__init__(target_modules, modules_to_save)
        if init_from is not None and (not isinstance(init_from, str) or not init_from):
            raise MethodConfigError(f"init_from={init_from!r} must be the folder of an exported LoRA adapter, or null.")
        if r < 1:
            raise MethodConfigError(f"LoRA rank r={r} must be a positive integer (typical: 4-64).")
        if not 0.0 <= dropout < 1.0:
            raise MethodConfigError(f"LoRA dropout={dropout} must be in [0, 1).")
        self.r, self.alpha, self.dropout, self.variant, self.bias = r, alpha, dropout, variant, bias
        self.compact_dropout = compact_dropout
        self.init_from = init_from

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        adapted = super().apply(model, modules_to_save)
        if self.init_from is not None:
            start_from(adapted.model, self.init_from, ("r", "lora_alpha", "use_rslora", "use_dora", "target_modules"))
        if self.compact_dropout:
            use_compact_dropout(adapted.model)
        return adapted

    def peft_config(self, target_modules, modules_to_save) -> LoraConfig:
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=target_modules,
            modules_to_save=modules_to_save or None,
            use_dora=self.variant == "dora",
            use_rslora=self.variant == "rslora",
            bias=self.bias,
        )


class IA3(PeftMethod):
    """IA3 (Liu et al. 2022): learned per-channel scaling of keys, values and FFN activations (peft).

    Args:
        target_modules: Layers whose outputs (or inputs, for feedforward ones) are rescaled.
        feedforward_modules: Subset of `target_modules` treated as FFN layers (scaling on the input).
        modules_to_save: Modules trained in full besides the scaling vectors.
    """

    def __init__(
        self,
        target_modules: list[str] | str = ("k_proj", "v_proj", "down_proj"),
        feedforward_modules: list[str] | None = ("down_proj",),
        modules_to_save: list[str] | None = None,
    ) -> None:
        super().__init__(list(target_modules) if not isinstance(target_modules, str) else target_modules, modules_to_save)
        self.feedforward_modules = list(feedforward_modules or [])
        if isinstance(self.target_modules, list) and not set(self.feedforward_modules) <= set(self.target_modules):
            raise MethodConfigError(
                f"IA3 feedforward_modules {self.feedforward_modules} must be a subset of target_modules {self.target_modules}."
            )

    def peft_config(self, target_modules, modules_to_save) -> IA3Config:
        return IA3Config(
            target_modules=target_modules,
            feedforward_modules=self.feedforward_modules or None,
            modules_to_save=modules_to_save or None,
        )
