"""`DualLRSchedule`: a learning-rate schedule per named optimizer param group, for any LightningModule.

Motivated by Shi & Lipani 2024, "DePT: Decomposed Prompt Tuning for Parameter-Efficient
Fine-tuning", ICLR 2024, arXiv:2309.05173: the soft prompt trains with lr 0.3 and the low-rank
embedding update with lr 1e-4, both with linear warmup then linear decay. One optimizer with two
named groups and this callback reproduce that; any number of groups works.

The schedule of a group is a function of the optimizer step `s` (warmup W, run length T, peak lr):

* warmup, `s < W`: `lr = peak · s / W` (so step 0 has lr 0, as in `transformers`'
  `get_linear_schedule_with_warmup`, which the DePT code uses);
* then, with `p = min(1, (s - W) / max(1, T - W))` and `f` = `final_lr_fraction`:
  linear `lr = peak · (f + (1 - f)(1 - p))`; cosine `lr = peak · (f + (1 - f) · ½(1 + cos πp))`;
  constant `lr = peak`.

`lr_factor` computes these with `transformers.optimization`'s schedule functions (the lr lambdas
behind its public schedulers, so the curve is theirs, step for step): the warmup ramp and the
constant schedule are `get_constant_schedule_with_warmup`'s, the decay is `get_wsd_schedule`'s
decay phase with no stable phase (linear or cosine down to `min_lr_ratio = f`, held there from
step T on). With `f = 0` that equals `get_linear_schedule_with_warmup` and
`get_cosine_schedule_with_warmup`, and for cosine with any `f`,
`get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=f)`, up to step T. Ours is only the
splice of the two, because no single `transformers` schedule is this one: `get_wsd_schedule` warms
up from `f · peak` rather than from 0, `get_linear_schedule_with_warmup` has no final floor, and
the cosine ones rise again after step T (a `total_steps` shorter than the run) where this one
holds the final lr.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import lightning as L
import torch
from transformers.optimization import (_get_constant_schedule_with_warmup_lr_lambda,
                                       _get_wsd_scheduler_lambda)

DECAYS = ("linear", "cosine", "constant")


class ScheduleConfigError(ValueError):
    """A `DualLRSchedule` setting does not fit the module's optimizer or the run (one sentence)."""


@dataclass(frozen=True)
class GroupSchedule:
    """How one named param group's learning rate moves over the run."""

    lr: float | None = None
    """Peak learning rate; None: the lr the optimizer was built with for this group."""
    warmup_steps: int | None = None
    """Optimizer steps of linear warmup from 0 to the peak (give this or `warmup_fraction`, or neither: no warmup)."""
    warmup_fraction: float | None = None
    """Warmup as a fraction of the run's optimizer steps (e.g. 0.06)."""
    decay: Literal["linear", "cosine", "constant"] = "linear"
    """Shape after warmup: down to `final_lr_fraction · lr` at the last step, or constant at the peak."""
    final_lr_fraction: float = 0.0
    """Learning rate at the end of the run as a fraction of the peak (linear and cosine decay)."""

    def check(self, group: str) -> None:
        """Raise `ScheduleConfigError` naming `group` when a field is out of range."""
        where = f"DualLRSchedule group {group!r}"
        if self.lr is not None and not self.lr > 0:
            raise ScheduleConfigError(f"{where} has lr={self.lr}; give a positive peak learning rate "
                                      "(or none to keep the optimizer's).")
        if self.warmup_steps is not None and self.warmup_fraction is not None:
            raise ScheduleConfigError(f"{where} sets both warmup_steps and warmup_fraction; keep one of them.")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ScheduleConfigError(f"{where} has warmup_steps={self.warmup_steps}; use 0 or more steps.")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ScheduleConfigError(f"{where} has warmup_fraction={self.warmup_fraction}; use a fraction in [0, 1).")
        if self.decay not in DECAYS:
            raise ScheduleConfigError(f"{where} has decay={self.decay!r}; use one of {list(DECAYS)}.")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ScheduleConfigError(f"{where} has final_lr_fraction={self.final_lr_fraction}; "
                                      "use a fraction in [0, 1].")

    def warmup(self, total_steps: int) -> int:
        if self.warmup_fraction is not None:
            return round(self.warmup_fraction * total_steps)
        return self.warmup_steps or 0


def lr_factor(step: int, warmup: int, total: int, decay: str, final_lr_fraction: float = 0.0) -> float:
    """The learning rate at optimizer step `step` as a fraction of the peak (see the module docstring).

    Warmup and constant: `transformers`' `get_constant_schedule_with_warmup`; decay from step
    `warmup` on: `get_wsd_schedule`'s decay phase over `total - warmup` steps (at least 1) down to
    `final_lr_fraction`, which it keeps past `total`. These are the private lr lambdas the public
    schedulers wrap (no optimizer needed); tests/callbacks/test_dual_lr.py compares this function
    with the public schedulers, so a change on their side shows there.
    """
    if step < warmup or decay == "constant":
        return _get_constant_schedule_with_warmup_lr_lambda(step, num_warmup_steps=warmup)
    return _get_wsd_scheduler_lambda(step, num_warmup_steps=warmup, num_stable_steps=0,
                                     num_decay_steps=max(1, total - warmup), warmup_type="linear", decay_type=decay,
                                     min_lr_ratio=final_lr_fraction, num_cycles=0.5)


def _as_schedule(group: str, spec: GroupSchedule | dict[str, Any]) -> GroupSchedule:
    if isinstance(spec, GroupSchedule):
        schedule = spec
    else:
        unknown = sorted(set(spec) - {f.name for f in fields(GroupSchedule)})
        if unknown:
            raise ScheduleConfigError(f"DualLRSchedule group {group!r} has unknown keys {unknown}; use "
                                      f"{[f.name for f in fields(GroupSchedule)]}.")
        schedule = GroupSchedule(**spec)
    schedule.check(group)
    return schedule


def named_groups(trainer: L.Trainer) -> dict[str, dict[str, Any]]:
    """Every param group of the trainer's optimizers by its `name`; a clear error when one has no unique name."""
    found: dict[str, dict[str, Any]] = {}
    for optimizer in trainer.optimizers:
        for index, group in enumerate(optimizer.param_groups):
            name = group.get("name")
            if name is None:
                raise ScheduleConfigError(
                    f"DualLRSchedule matches optimizer param groups by their \"name\" key, but "
                    f"{type(optimizer).__name__} group {index} has none; give every param group a name in "
                    "configure_optimizers, e.g. {\"params\": [...], \"name\": \"prompt\", \"lr\": 0.3}.")
            if name in found:
                raise ScheduleConfigError(f"DualLRSchedule found two optimizer param groups named {name!r}; "
                                          "give each group a unique \"name\" in configure_optimizers.")
            found[name] = group
    return found


class DualLRSchedule(L.Callback):
    """Warmup-then-decay learning rate per named optimizer param group, set before every optimizer step.

    The module's optimizer must name its param groups (`{"params": [...], "name": "prompt"}`;
    lightning-peft modules do). Groups are matched by name; a group of the optimizer that `groups`
    does not list gets `default`, or, when `default` is None, the run stops at fit start with an
    error naming it (so no group is silently left unscheduled; `default: {decay: constant}` keeps
    unlisted groups at their optimizer lr). The callback refuses an lr scheduler returned by the
    module for the same optimizer, since both would write the learning rates.

    The lr is set in `on_before_optimizer_step` (after the last micro-batch's backward, before the
    update, so gradient accumulation steps once per optimizer step) and again at each
    `on_train_batch_start` so that hooks and loggers during the step see it. `lr/<group>` is
    logged at every optimizer step (written at the trainer's `log_every_n_steps`). The schedule is
    a function of `trainer.global_step`, so a resumed run continues the same curve; the checkpoint
    keeps the resolved schedule and resuming with a different one (groups, peak lrs, warmup, run
    length) is refused.

    Example::

        DualLRSchedule(groups={"prompt": {"lr": 0.3, "warmup_steps": 500},
                               "lowrank": {"lr": 1e-4, "warmup_steps": 500}})

    or in a recipe::

        trainer:
          callbacks:
            - class_path: lightning_peft.callbacks.dual_lr.DualLRSchedule
              init_args:
                groups: {prompt: {lr: 0.3, warmup_steps: 500}, lowrank: {lr: 1.0e-4, warmup_steps: 500}}

    Args:
        groups: Schedule per param-group name (keys of `GroupSchedule`: lr, warmup_steps,
            warmup_fraction, decay, final_lr_fraction); None or {}: every group takes `default`.
        default: Schedule for every optimizer group not in `groups`; None: such a group is an error.
        total_steps: Optimizer steps the decay spans; None: `trainer.estimated_stepping_batches`
            (`max_steps`, or the epochs' steps after gradient accumulation).
    """

    def __init__(
        self,
        groups: dict[str, GroupSchedule] | None = None,
        default: GroupSchedule | None = None,
        total_steps: int | None = None,
    ) -> None:
        if not groups and default is None:
            raise ScheduleConfigError("DualLRSchedule has no groups to schedule; list them in `groups` "
                                      "(e.g. {prompt: {lr: 0.3}}) or set `default`.")
        if total_steps is not None and total_steps < 1:
            raise ScheduleConfigError(f"DualLRSchedule total_steps={total_steps} must be at least 1.")
        self.groups = {name: _as_schedule(name, spec) for name, spec in dict(groups or {}).items()}
        self.default = None if default is None else _as_schedule("default", default)
        self.total_steps = total_steps
        self.resolved: dict[str, dict[str, Any]] | None = None
        self._saved: dict[str, dict[str, Any]] | None = None

    # -- resolving against the optimizer and the run -----------------------------------------

    def _run_length(self, trainer: L.Trainer) -> int:
        total = self.total_steps or trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ScheduleConfigError("DualLRSchedule needs the run's length, but the trainer has neither max_steps "
                                      "nor max_epochs; set trainer.max_steps or the callback's total_steps.")
        return int(total)

    def _resolve(self, trainer: L.Trainer) -> dict[str, dict[str, Any]]:
        available = named_groups(trainer)
        missing = sorted(set(self.groups) - set(available))
        if missing:
            raise ScheduleConfigError(
                f"DualLRSchedule schedules groups {missing}, but the optimizer's param groups are named "
                f"{sorted(available)}; use those names in `groups` (or add \"name\" to the module's param groups).")
        unlisted = sorted(set(available) - set(self.groups))
        if unlisted and self.default is None:
            raise ScheduleConfigError(
                f"DualLRSchedule has no schedule for optimizer groups {unlisted} (it lists {sorted(self.groups)}); "
                "add them to `groups` or set `default` for every unlisted group.")
        total = self._run_length(trainer)
        resolved = {}
        for name, group in available.items():
            schedule = self.groups.get(name, self.default)
            warmup = schedule.warmup(total)
            if warmup >= total and warmup > 0:
                raise ScheduleConfigError(
                    f"DualLRSchedule group {name!r} warms up for {warmup} steps but the run has only {total} optimizer "
                    "steps; lower warmup_steps or use warmup_fraction.")
            resolved[name] = {"peak_lr": float(schedule.lr if schedule.lr is not None else group["lr"]),
                              "warmup_steps": warmup, "total_steps": total, "decay": schedule.decay,
                              "final_lr_fraction": schedule.final_lr_fraction}
        return resolved

    def _refuse_schedulers(self, trainer: L.Trainer) -> None:
        scheduled = {id(opt) for opt in trainer.optimizers}
        for config in trainer.lr_scheduler_configs:
            if id(getattr(config.scheduler, "optimizer", None)) in scheduled:
                raise ScheduleConfigError(
                    f"DualLRSchedule sets the learning rates of {sorted(self.resolved)}, but the module also returns a "
                    f"{type(config.scheduler).__name__} for the same optimizer and the two would overwrite each other; "
                    "remove the module's lr scheduler (e.g. model.init_args.lr_scheduler) or drop the callback.")

    def _check_resume(self) -> None:
        if self._saved is None or self.resolved is None:
            return
        if self._saved != self.resolved:
            changes = []
            for name in sorted(set(self._saved) | set(self.resolved)):
                before, now = self._saved.get(name) or {}, self.resolved.get(name) or {}
                changes += [f"{name}.{key} {before.get(key)} -> {now.get(key)}"
                            for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
            raise ScheduleConfigError(
                f"DualLRSchedule's schedule differs from the checkpoint's ({', '.join(changes)}); resume with the "
                "same groups, learning rates and run length (trainer.max_steps), or start a new run.")

    def lr_at(self, name: str, step: int) -> float:
        """The learning rate of group `name` at optimizer step `step` (after fit start resolved the schedule)."""
        s = self.resolved[name]
        return s["peak_lr"] * lr_factor(step, s["warmup_steps"], s["total_steps"], s["decay"], s["final_lr_fraction"])

    def _apply(self, trainer: L.Trainer) -> dict[str, float]:
        # Looked up by name every time: a callback such as HalfFineTuning may rebuild the optimizer.
        lrs = {}
        for name, group in named_groups(trainer).items():
            group["lr"] = lrs[name] = self.lr_at(name, trainer.global_step)
        return lrs

    # -- hooks ----------------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the optimizer exists and before a resumed run restores its state, so `group["lr"]`
        # is still the configured lr that `lr: None` groups take as their peak.
        self.resolved = self._resolve(trainer)
        self._refuse_schedulers(trainer)
        self._check_resume()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._apply(trainer)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        for name, lr in self._apply(trainer).items():
            pl_module.log(f"lr/{name}", lr, on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"resolved": self.resolved,
                "config": {"groups": {n: asdict(g) for n, g in self.groups.items()},
                           "default": None if self.default is None else asdict(self.default)}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Some strategies restore callbacks after fit start: check whichever comes second.
        self._saved = state_dict.get("resolved")
        self._check_resume()
