"""DualLRSchedule on a LightningModule that is not ours: a two-layer MLP with named "body" and "head" groups."""

import csv
import math

import lightning as L
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_peft.callbacks.dual_lr import DualLRSchedule, GroupSchedule, ScheduleConfigError, lr_factor


class RecordingSGD(torch.optim.SGD):
    """Records each group's lr at the moment the update reads it (after the closure ran the backward)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.used: list[dict[str, float]] = []

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.used.append({g["name"]: g["lr"] for g in self.param_groups})
        super().step()
        return loss


class TwoGroupMLP(L.LightningModule):
    def __init__(self, body_lr=0.1, head_lr=0.05, named=True, scheduler=False):
        super().__init__()
        self.body, self.head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 1)
        self.body_lr, self.head_lr, self.named, self.scheduler = body_lr, head_lr, named, scheduler

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(torch.relu(self.body(x))), y)

    def configure_optimizers(self):
        groups = [{"params": self.body.parameters(), "lr": self.body_lr},
                  {"params": self.head.parameters(), "lr": self.head_lr}]
        if self.named:
            groups[0]["name"], groups[1]["name"] = "body", "head"
        self.optimizer = RecordingSGD(groups, lr=0.01)
        if self.scheduler:
            return {"optimizer": self.optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(self.optimizer, 1)}
        return self.optimizer


def _loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)), batch_size=4)


def _trainer(tmp_path, max_steps, callbacks, **kw):
    defaults = dict(logger=False, enable_checkpointing=False)
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks, **{**defaults, **kw})


DEPT_LIKE = {"body": {"lr": 0.3, "warmup_steps": 3, "decay": "linear"},
             "head": {"lr": 1e-4, "warmup_fraction": 0.25, "decay": "cosine", "final_lr_fraction": 0.1}}


def _expected(step, total=12):
    """The closed form written out by hand for DEPT_LIKE over a 12-step run (warmup 3 for both groups)."""
    body = 0.3 * (step / 3 if step < 3 else (total - step) / (total - 3))
    head = 1e-4 * (step / 3 if step < 3 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 3) / (total - 3))))
    return {"body": body, "head": head}


def test_each_group_follows_its_closed_form_at_every_optimizer_step(tmp_path):
    module = TwoGroupMLP()
    _trainer(tmp_path, 12, [DualLRSchedule(groups=DEPT_LIKE)]).fit(module, _loader())
    assert len(module.optimizer.used) == 12
    for step, used in enumerate(module.optimizer.used):
        assert used == pytest.approx(_expected(step), rel=1e-12, abs=1e-15), step
    assert module.optimizer.used[3]["body"] == pytest.approx(0.3)  # the peak right after warmup


def test_gradient_accumulation_moves_the_schedule_once_per_optimizer_step(tmp_path):
    module = TwoGroupMLP()
    _trainer(tmp_path, 12, [DualLRSchedule(groups=DEPT_LIKE)], accumulate_grad_batches=2).fit(module, _loader())
    assert len(module.optimizer.used) == 12  # 24 batches, 12 updates
    for step, used in enumerate(module.optimizer.used):
        assert used == pytest.approx(_expected(step), rel=1e-12, abs=1e-15), step


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_lr_factor_matches_transformers_schedules(decay):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    reference = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}[decay]
    scheduler = reference(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 7, 40)
    for step in range(41):
        assert lr_factor(step, 7, 40, decay) == pytest.approx(scheduler.lr_lambdas[0](step), abs=1e-12), step
    assert lr_factor(45, 7, 40, decay) == 0.0  # past the end: the final lr (transformers' cosine rises again)


def test_lr_factor_with_a_final_floor_matches_transformers_schedules():
    from transformers import (get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup,
                              get_wsd_schedule)

    def factors(make):
        return make(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)).lr_lambdas[0]

    cosine = factors(lambda opt: get_cosine_with_min_lr_schedule_with_warmup(opt, 7, 40, min_lr_rate=0.2))
    constant = factors(lambda opt: get_constant_schedule_with_warmup(opt, 7))
    for step in range(41):
        assert lr_factor(step, 7, 40, "cosine", 0.2) == pytest.approx(cosine(step), abs=1e-12), step
        assert lr_factor(step, 7, 40, "constant", 0.2) == constant(step), step
    for decay in ("linear", "cosine"):  # after warmup: WSD's decay phase (WSD warms up from the floor, not from 0)
        wsd = factors(lambda opt: get_wsd_schedule(opt, 7, 33, num_stable_steps=0, decay_type=decay, min_lr_ratio=0.2))
        for step in range(7, 50):
            assert lr_factor(step, 7, 40, decay, 0.2) == pytest.approx(wsd(step), abs=1e-12), (decay, step)
        assert lr_factor(3, 7, 40, decay, 0.2) == pytest.approx(3 / 7)  # warmup from 0
        assert lr_factor(45, 7, 40, decay, 0.2) == pytest.approx(0.2)  # held at the floor past the end


def test_lr_is_logged_per_group_to_the_logger(tmp_path):
    logger = CSVLogger(tmp_path, name="run")
    module = TwoGroupMLP()
    trainer = _trainer(tmp_path, 12, [DualLRSchedule(groups=DEPT_LIKE)], logger=logger, log_every_n_steps=1)
    trainer.fit(module, _loader())
    with open(f"{logger.log_dir}/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name in ("body", "head"):
        logged = [float(row[f"lr/{name}"]) for row in rows if row.get(f"lr/{name}")]
        assert logged == pytest.approx([_expected(s)[name] for s in range(12)], rel=1e-6, abs=1e-12)


def test_resume_mid_run_gives_the_same_lr_sequence(tmp_path):
    # head keeps the optimizer's lr (0.05) as its peak: on resume the restored optimizer holds a
    # scheduled (warmup) lr, and the peak must still be 0.05.
    groups = {"body": {"lr": 0.3, "warmup_steps": 4}, "head": {"warmup_steps": 8, "decay": "cosine"}}
    full = TwoGroupMLP()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    _trainer(tmp_path, 12, [DualLRSchedule(groups=groups), ckpt], enable_checkpointing=True).fit(full, _loader())
    resumed = TwoGroupMLP()
    trainer = _trainer(tmp_path, 12, [DualLRSchedule(groups=groups)])
    trainer.fit(resumed, _loader(), ckpt_path=str(tmp_path / "ckpt" / "step=6.ckpt"))
    assert len(resumed.optimizer.used) == 6
    assert resumed.optimizer.used == full.optimizer.used[6:]
    assert max(u["head"] for u in full.optimizer.used) == pytest.approx(0.05)


@pytest.mark.parametrize("body_lr, max_steps, change", [(0.5, 8, "body.peak_lr 0.3 -> 0.5"),
                                                         (0.3, 10, "body.total_steps 8 -> 10")])
def test_resuming_with_a_changed_schedule_is_refused(tmp_path, body_lr, max_steps, change):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    first = _trainer(tmp_path, 8, [DualLRSchedule(groups=DEPT_LIKE), ckpt], enable_checkpointing=True)
    first.fit(TwoGroupMLP(), _loader())
    changed = {**DEPT_LIKE, "body": {**DEPT_LIKE["body"], "lr": body_lr}}
    module = TwoGroupMLP()
    with pytest.raises(ScheduleConfigError, match="differs from the checkpoint's") as info:
        _trainer(tmp_path, max_steps, [DualLRSchedule(groups=changed)]).fit(
            module, _loader(), ckpt_path=str(tmp_path / "ckpt" / "step=4.ckpt"))
    assert change in str(info.value) and module.optimizer.used == []


def test_default_schedules_unlisted_groups_and_none_keeps_the_optimizer_lr(tmp_path):
    module = TwoGroupMLP()
    callback = DualLRSchedule(groups={"body": {"lr": 0.3}}, default=GroupSchedule(decay="constant"))
    _trainer(tmp_path, 5, [callback]).fit(module, _loader())
    assert [u["head"] for u in module.optimizer.used] == [0.05] * 5
    assert [u["body"] for u in module.optimizer.used] == pytest.approx([0.3 * (5 - s) / 5 for s in range(5)])


def test_default_alone_schedules_every_group_from_its_optimizer_lr(tmp_path):
    module = TwoGroupMLP()
    _trainer(tmp_path, 4, [DualLRSchedule(default={"warmup_steps": 2})]).fit(module, _loader())
    assert module.optimizer.used == [{"body": 0.1 * f, "head": 0.05 * f} for f in (0.0, 0.5, 1.0, 0.5)]


def test_no_groups_and_no_default_is_an_error():
    with pytest.raises(ScheduleConfigError, match="no groups"):
        DualLRSchedule()


def _fit_error(tmp_path, module, callback, **kw):
    with pytest.raises(ScheduleConfigError) as info:
        _trainer(tmp_path, kw.pop("max_steps", 12), [callback], **kw).fit(module, _loader())
    assert module.optimizer.used == []  # refused before any update
    return str(info.value)


def test_a_group_the_optimizer_lacks_names_the_available_groups(tmp_path):
    message = _fit_error(tmp_path, TwoGroupMLP(), DualLRSchedule(groups={"prompt": {"lr": 0.3}, "head": {"lr": 0.1}}))
    assert "['prompt']" in message and "['body', 'head']" in message


def test_an_optimizer_without_named_groups_says_to_add_names(tmp_path):
    message = _fit_error(tmp_path, TwoGroupMLP(named=False), DualLRSchedule(groups=DEPT_LIKE))
    assert '"name"' in message and "configure_optimizers" in message


def test_an_unlisted_group_without_default_is_an_error(tmp_path):
    message = _fit_error(tmp_path, TwoGroupMLP(), DualLRSchedule(groups={"body": {"lr": 0.3}}))
    assert "['head']" in message and "default" in message


def test_a_module_scheduler_on_the_same_optimizer_is_refused(tmp_path):
    message = _fit_error(tmp_path, TwoGroupMLP(scheduler=True), DualLRSchedule(groups=DEPT_LIKE))
    assert "StepLR" in message


def test_warmup_longer_than_the_run_is_an_error(tmp_path):
    message = _fit_error(tmp_path, TwoGroupMLP(), DualLRSchedule(groups=DEPT_LIKE), max_steps=3)
    assert "'body'" in message and "only 3" in message


def test_an_endless_run_needs_a_length(tmp_path):
    message = _fit_error(tmp_path, TwoGroupMLP(), DualLRSchedule(groups=DEPT_LIKE), max_steps=-1, max_epochs=-1)
    assert "max_steps" in message and "total_steps" in message


@pytest.mark.parametrize("spec, words", [
    ({"lr": -1.0}, "positive"),
    ({"warmup_steps": 5, "warmup_fraction": 0.1}, "both"),
    ({"warmup_fraction": 1.5}, "warmup_fraction"),
    ({"decay": "exponential"}, "decay"),
    ({"final_lr_fraction": 2.0}, "final_lr_fraction"),
    ({"peak": 0.3}, "unknown keys ['peak']"),
])
def test_bad_group_settings_fail_at_construction(spec, words):
    with pytest.raises(ScheduleConfigError, match="group 'prompt'") as info:
        DualLRSchedule(groups={"prompt": spec})
    assert words in str(info.value)


def test_yaml_recipe_shape_parses_into_the_callback():
    parser = ArgumentParser()
    parser.add_class_arguments(DualLRSchedule, "schedule")
    recipe = yaml.safe_dump({"schedule": {
        "groups": {"prompt": {"lr": 0.3, "warmup_steps": 500, "decay": "linear"},
                   "lowrank": {"lr": 1e-4, "warmup_steps": 500, "decay": "linear"}},
        "default": {"decay": "constant"}}})
    callback = parser.instantiate(parser.parse_string(recipe)).schedule
    assert callback.groups["prompt"] == GroupSchedule(lr=0.3, warmup_steps=500)
    assert callback.groups["lowrank"].lr == 1e-4 and callback.default == GroupSchedule(decay="constant")
