"""`HalfFineTuning`: HFT's per-stage half selection as a callback for any LightningModule.

Hui et al. 2024, "HFT: Half Fine-Tuning for Large Language Models", arXiv:2404.18466. At every
stage start a new random half of each transformer layer is frozen (see `methods.selective.HFT`),
and the optimizer is rebuilt so frozen weights carry no optimizer state: that is where HFT's
time and memory saving comes from. The paper's equivalent "reset" view trains everything and
restores the selected half to its stage-start values when the stage ends.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from transformers import PreTrainedModel

from ..methods.selective import HFT, transformer_layers


def find_transformer(pl_module: nn.Module) -> nn.Module:
    """The model HFT selects in: the first `transformers` model inside `pl_module`, else the module itself.

    A plain (non-`transformers`) module works when it has a stack of identical blocks and its
    projection names are given to the callback (`attention_modules`, `ffn_modules`).
    """
    for module in pl_module.modules():
        if isinstance(module, PreTrainedModel):
            return module
    return pl_module


def rebuild_optimizer(old: torch.optim.Optimizer, groups: list[list[nn.Parameter]]) -> torch.optim.Optimizer:
    """The same optimizer (class, hyperparameters, group settings) over the trainable subset of `groups`.

    State of parameters that stay trained carries over; frozen ones get none.
    """
    param_groups = [
        {**{k: v for k, v in settings.items() if k != "params"}, "params": [p for p in params if p.requires_grad]}
        for settings, params in zip(old.param_groups, groups)
    ]
    accepted = inspect.signature(type(old)).parameters  # `defaults` may hold keys __init__ does not take
    new = type(old)(param_groups, **{k: v for k, v in old.defaults.items() if k in accepted})
    for group in param_groups:
        for parameter in group["params"]:
            if parameter in old.state:
                new.state[parameter] = old.state[parameter]
    return new


class HalfFineTuning(L.Callback):
    """Freeze a new random half of every transformer layer at each stage and rebuild the optimizer.

    Give the module a method that trains everything (e.g. `FullFineTuning`); the callback does the
    rest. A stage is `every_n_epochs` epochs (default 1: every epoch is a stage); with a task
    sequence, one epoch per task makes each task a stage.

    Example::

        trainer = Trainer(callbacks=[HalfFineTuning(every_n_epochs=1, seed=0)])

    Args:
        every_n_epochs: Stage length in epochs.
        mode: "freeze": the half gets no gradient and no optimizer state (HFT proper);
            "reset": all weights train, and the half is restored to its stage-start values when
            the stage ends (the paper's equivalent view; costs a copy of that half).
        seed: Seed of the draws; stage s draws with `seed + s`.
        attention_modules: The 4 attention projection names (2 frozen per layer).
        ffn_modules: The 3 FFN projection names (2 frozen in half the layers, 1 in the others).
        norms: "train" or "freeze" layer norms during a stage.
        embeddings: "train" or "freeze" the input embeddings.
        lm_head: "train" or "freeze" an untied output layer.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        mode: Literal["freeze", "reset"] = "freeze",
        seed: int = 0,
        attention_modules: list[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        ffn_modules: list[str] = ("gate_proj", "up_proj", "down_proj"),
        norms: Literal["train", "freeze"] = "train",
        embeddings: Literal["train", "freeze"] = "freeze",
        lm_head: Literal["train", "freeze"] = "freeze",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be at least 1.")
        self.every_n_epochs, self.mode = every_n_epochs, mode
        self.hft = HFT(seed, attention_modules, ffn_modules, norms, embeddings, lm_head)
        self.stage: int | None = None
        self.history: list[dict[str, Any]] = []
        self._all_params: list[list[nn.Parameter]] | None = None
        self._snapshot: dict[str, torch.Tensor] = {}

    # -- stage mechanics ------------------------------------------------------------------

    def _stage_of(self, trainer: L.Trainer) -> int:
        return trainer.current_epoch // self.every_n_epochs

    def _start_stage(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: int, fresh: bool) -> None:
        if self._all_params is None:  # the optimizer as the module built it: every parameter it may train
            self._all_params = [list(g["params"]) for opt in trainer.optimizers for g in opt.param_groups]
        optimized = {id(p) for group in self._all_params for p in group}
        model = find_transformer(pl_module)
        selection = self.hft.select(model, stage)
        for parameter in model.parameters():  # what the module never optimizes (a frozen base) stays frozen
            if id(parameter) not in optimized:
                parameter.requires_grad_(False)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad and id(p) in optimized}
        if self.mode == "reset":
            if fresh:
                self._snapshot = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if n in frozen}
            for _, parameter in model.named_parameters():
                parameter.requires_grad_(id(parameter) in optimized)
        self._swap_optimizers(trainer)
        self.stage = stage
        if fresh:
            trainable = sum(p.numel() for p in transformer_layers(model).parameters() if p.requires_grad or self.mode == "reset")
            total = sum(p.numel() for p in transformer_layers(model).parameters())
            self.history.append({"stage": stage, "frozen": selection.frozen, "layer_fraction_frozen": 1 - trainable / total})
            rank_zero_info(f"HFT stage {stage} ({self.mode}): half chosen {selection.describe()}")

    def _end_stage(self, pl_module: L.LightningModule) -> None:
        if self.mode != "reset" or not self._snapshot:
            return
        with torch.no_grad():
            for name, parameter in find_transformer(pl_module).named_parameters():
                if name in self._snapshot:
                    parameter.copy_(self._snapshot[name].to(parameter.device))
        self._snapshot = {}

    def _swap_optimizers(self, trainer: L.Trainer) -> None:
        new_optimizers, offset = [], 0
        for old in trainer.optimizers:
            groups = self._all_params[offset : offset + len(old.param_groups)]
            offset += len(old.param_groups)
            new = rebuild_optimizer(old, groups)
            for config in trainer.lr_scheduler_configs:
                if config.scheduler.optimizer is old:
                    config.scheduler.optimizer = new
            new_optimizers.append(new)
        trainer.strategy.optimizers = new_optimizers

    # -- hooks ----------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        # DDP's reducer expects a gradient for every weight that required one when it wrapped the
        # model; freezing half afterwards makes it wait forever unless it looks for unused ones.
        if self.mode == "freeze" and isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
            raise ValueError(
                "HalfFineTuning freezes weights after DDP wrapped the model, which plain DDP cannot follow; "
                "use trainer.strategy: ddp_find_unused_parameters_true (or HalfFineTuning mode: reset)."
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the optimizer exists and before a resumed run loads its state: rebuilding
        # here makes the saved (subset) optimizer state fit, and keeps the restored stage's half.
        resumed = self.stage is not None
        self._start_stage(trainer, pl_module, self.stage if resumed else self._stage_of(trainer), fresh=not resumed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stage = self._stage_of(trainer)
        if stage != self.stage:
            self._end_stage(pl_module)
            self._start_stage(trainer, pl_module, stage, fresh=True)
        pl_module.log("hft/stage", float(self.stage), on_step=False, on_epoch=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_stage(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "history": self.history, "snapshot": self._snapshot}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stage, self.history = state_dict["stage"], state_dict["history"]
        self._snapshot = state_dict.get("snapshot", {})
