"""Bottleneck adapters (Houlsby, Pfeiffer placements), MAD-X stacks, and pre-trained adapters as initialisation (PVP).

- Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP", arXiv:1902.00751: a small
  bottleneck (down-projection, non-linearity, up-projection, residual) after the attention output and
  after the FFN output of every layer; the base stays frozen.
- Pfeiffer et al. 2021, "AdapterFusion", arXiv:2005.00247: one adapter per layer, after the FFN only,
  about as good at half the parameters.
- Pfeiffer et al. 2020, "MAD-X: An Adapter-Based Framework for Multi-Task Cross-Lingual Transfer",
  arXiv:2005.00052: a language adapter trained with the (masked) LM objective, frozen under a task
  adapter (stack: language, then task, in each layer); swapping the language adapter transfers the task.
- Cappellazzo et al. 2024, "Parameter-Efficient Transfer Learning of Audio Spectrogram Transformers",
  arXiv:2312.03694: bottleneck adapters beat prompt tuning, LoRA and other methods at equal budgets.
- Song et al. 2023, "PVP: Pre-trained Visual Parameter-Efficient Tuning", arXiv:2304.13639: pre-train the
  PEFT module on a large task and start few-shot tuning from it (here `init_from`).
- Wang et al. 2022, "LiST: Lite Prompted Self-training Makes Parameter-efficient Few-shot Learners"
  (NAACL Findings; arXiv:2110.06274): lite adapters x + W2 W1 x (here `non_linearity: identity`,
  `init_std: 0.02`) at the Houlsby placement.

Our choices (the papers' details differ, see docs/methods/adapters.md): the adapter reads the output
projection of a sublayer before its residual addition (`adapter_layers.INSERTION_POINTS`); Pfeiffer's
placement is the same adapter at the FFN only, without AdapterHub's extra layer-norm reuse; no
invertible embedding adapters for MAD-X.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Iterator

from torch import nn

from . import adapter_io as io
from .adapter_layers import (PLACEMENTS, NON_LINEARITIES, NonLinearity, Placement, adapters_off, base_signature,
                             bottleneck_width, insert, insertion_points, model_type, role_parameters)
from .base import Adapted, Capabilities, MethodBase, MethodConfigError, freeze
from .selective import _train_heads


class AdapterMethod(MethodBase):
    """Family base of the adapters we implement (not peft's): modules added to a frozen base, switched
    off in place, exported as their own weights; they cannot be folded into the base (a non-linear
    function of the hidden states is no weight update), so `merge` is refused. `AdapterModule` accepts
    any subclass."""

    capabilities: ClassVar[Capabilities] = Capabilities(export=True, merge=False, disable=True)

    @contextlib.contextmanager
    def disabled(self, model: nn.Module) -> Iterator[nn.Module]:
        with adapters_off(model):
            yield model


class BottleneckAdapter(AdapterMethod):
    """Bottleneck adapters at the Houlsby or Pfeiffer placement; optionally on a frozen language adapter
    (MAD-X) and/or starting from a pre-trained adapter (PVP).

    Example::

        from transformers import AutoModelForSequenceClassification
        from lightning_peft.methods import BottleneckAdapter
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        adapted = BottleneckAdapter(placement="pfeiffer", reduction_factor=16).apply(model, ["classifier"])
        adapted.groups  # {"adapter": {...}, "head": {...}}

    Args:
        placement: "houlsby": after the attention output and after the FFN output of every layer (the
            paper's); "pfeiffer": after the FFN output only (half the adapters).
        reduction_factor: Width of the bottleneck = hidden size // reduction_factor (16: AdapterHub's default
            for both placements); refused when it leaves a width below 1.
        non_linearity: Between the projections. Default relu: the MAD-X / Pfeiffer configuration's, and with the
            up-projection at zero any choice starts as the identity. "identity" makes the linear adapter
            h + W_up W_down h of LiST (Wang et al. 2022).
        init_std: Draw both projections' weights from N(0, init_std^2), biases at zero (LiST: 0.02); the adapter
            then starts near, not at, the identity. Default null: the identity start (down-projection
            Kaiming-uniform, up-projection zero).
        modules_to_save: Modules trained in full besides the adapters (a task adds its new head itself).
        language_adapter: A folder exported from another BottleneckAdapter run (e.g. trained with the LM
            objective): stacked frozen under the adapters this run trains (MAD-X). Set it on `load` to swap
            the language adapter under an exported task adapter.
        init_from: A folder exported from a BottleneckAdapter run with the same placement and width on the
            same base: the trained adapters start from its weights instead of the identity (PVP); its head
            is not taken.
    """

    def __init__(
        self,
        placement: Placement = "houlsby",
        reduction_factor: float = 16,
        non_linearity: NonLinearity = "relu",
        modules_to_save: list[str] | None = None,
        language_adapter: str | None = None,
        init_from: str | None = None,
        init_std: float | None = None,
    ) -> None:
        if placement not in PLACEMENTS:
            raise MethodConfigError(f"placement={placement!r} is not an adapter placement; use one of {sorted(PLACEMENTS)}.")
        if not isinstance(reduction_factor, (int, float)) or reduction_factor <= 0:
            raise MethodConfigError(f"reduction_factor={reduction_factor!r} must be a positive number (width = hidden // factor; "
                                    "typical 8-64).")
        if non_linearity not in NON_LINEARITIES:
            raise MethodConfigError(f"non_linearity={non_linearity!r} is not available; use one of {sorted(NON_LINEARITIES)}.")
        if init_std is not None and (isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or init_std <= 0):
            raise MethodConfigError(f"init_std={init_std!r} must be a positive standard deviation (LiST: 0.02) or null "
                                    "(the identity start).")
        self.placement, self.reduction_factor, self.non_linearity = placement, reduction_factor, non_linearity
        self.modules_to_save = list(modules_to_save or [])
        self.init_std = None if init_std is None else float(init_std)
        for what, folder in (("language_adapter", language_adapter), ("init_from", init_from)):
            if folder is not None and (not isinstance(folder, str) or not folder):
                raise MethodConfigError(f"{what}={folder!r} must be the folder of an exported bottleneck adapter, or null.")
        # Read at apply, not here: a recipe may name the export of a run that has not happened yet.
        self.language_adapter, self.init_from = language_adapter, init_from
        self._spec: io.AdapterSpec | None = None  # what `export` records, set by `apply`
        self._exported: set[str] = set()  # the parameters `export` writes: trained adapters and heads

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        """Freeze `model`, stack the language adapter (if any), add trainable adapters; groups "adapter", "head"."""
        points = insertion_points(model, PLACEMENTS[self.placement])
        width = bottleneck_width(model.config.hidden_size, self.reduction_factor)
        spec = self.spec(model, width)
        # Both folders are read and checked against this base before the model changes.
        language, init = (self._pretrained(model, folder, what) for what, folder in
                          (("language_adapter", self.language_adapter), ("init_from", self.init_from)))
        freeze(model)
        if language is not None:
            self._stack_language(model, Path(self.language_adapter), language)
        insert(model, points, io.TRAINED, width, self.non_linearity, self.init_std)
        if init is not None:
            io.copy_into(model, io.read_weights(Path(self.init_from), adapters_only=True),
                         set(role_parameters(model, io.TRAINED)), Path(self.init_from), "init_from")
        heads = sorted(set(self.modules_to_save) | set(modules_to_save or []))
        adapted = _train_heads(model, heads, lambda name: "adapter")
        self._spec, self._exported = replace(spec, modules_to_save=heads), adapted.trainable_names()
        return adapted

    def spec(self, model: nn.Module, width: int) -> io.AdapterSpec:
        """What an export of this method on `model` records (computed on the base, before any insertion)."""
        return io.AdapterSpec(
            placement=self.placement, reduction_factor=self.reduction_factor, non_linearity=self.non_linearity,
            width=width, hidden_size=model.config.hidden_size, base_model_type=model_type(model),
            base_signature=base_signature(model), base_model_name_or_path=model.name_or_path,
            modules_to_save=list(self.modules_to_save), language_adapter=bool(self.language_adapter))

    @staticmethod
    def _pretrained(model: nn.Module, folder: str | None, what: str) -> io.AdapterSpec | None:
        """The spec of the exported adapter `folder` (None when unset), refused if trained on another base."""
        if folder is None:
            return None
        spec = io.read_spec(folder, what)
        io.check_base(spec, model, Path(folder), what)
        return spec

    @staticmethod
    def _stack_language(model: nn.Module, folder: Path, spec: io.AdapterSpec) -> None:
        """Insert the language adapter exported in `folder` (frozen, first in each stack) and load its weights."""
        added = insert(model, insertion_points(model, PLACEMENTS[spec.placement]), io.LANGUAGE, spec.width, spec.non_linearity)
        io.copy_into(model, io.read_weights(folder, io.LANGUAGE, adapters_only=True), set(role_parameters(model, io.LANGUAGE)),
                     folder, "language_adapter")
        for adapter in added.values():
            adapter.requires_grad_(False)

    def export(self, model: nn.Module, folder: Path) -> None:
        """The trained adapters and heads (and the language adapter under them, in `language_adapter/`)."""
        if self._spec is None:
            raise MethodConfigError("BottleneckAdapter.export needs the model this method's apply() returned; apply it first.")
        io.write_adapter(folder, self._spec, {n: p for n, p in model.named_parameters() if n in self._exported})
        if self.language_adapter:
            language = {io.renamed(n, io.LANGUAGE, io.TRAINED): p for n, p in role_parameters(model, io.LANGUAGE).items()}
            io.write_adapter(folder / io.LANGUAGE_FOLDER, io.read_spec(self.language_adapter, "language_adapter"), language)

    def load(self, base: nn.Module, folder: str | Path) -> nn.Module:
        """The adapter exported in `folder` on `base`, in eval mode. Its own settings are read from the folder;
        this method's `language_adapter`, when set, replaces the one it was trained on (MAD-X transfer)."""
        folder = Path(folder)
        spec = io.read_spec(folder, "The adapter folder")
        io.check_base(spec, base, folder, "The adapter folder")
        language = self.language_adapter or (str(folder / io.LANGUAGE_FOLDER) if spec.language_adapter else None)
        method = BottleneckAdapter(spec.placement, spec.reduction_factor, spec.non_linearity, spec.modules_to_save,
                                   language_adapter=language)
        adapted = method.apply(base)
        io.copy_into(adapted.model, io.read_weights(folder), adapted.trainable_names(), folder, "The adapter folder")
        return adapted.model.eval()
