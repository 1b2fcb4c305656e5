"""Shared builders for the checkpoint, resume and export tests: tiny data, tiny LoRA module, CLI configs.

Everything runs on `tiny-llama` (2 layers, d=64) with a 40-example JSONL file, so a fit of a
dozen steps takes a few seconds on a CPU.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_peft.data import ClassificationData
from lightning_peft.methods import Lora
from lightning_peft.modules import LoraModule
from lightning_peft.tasks import VerbalizerClassification

BACKBONE = "tiny-llama"
LABELS = ["alpha", "beta"]
TARGETS = ["q_proj", "v_proj"]
DROPOUT = 0.3  # > 0 so a resumed run matches only if the RNG state is restored


def write_jsonl(path: Path, count: int = 40) -> Path:
    """A small two-class file with varied lengths (so length bucketing has something to sort)."""
    rows = ({"text": "word " * (1 + i % 7) + str(i), "label": LABELS[i % 2]} for i in range(count))
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def lora_module(backbone: str = BACKBONE, targets: list[str] = TARGETS) -> LoraModule:
    """LoRA with dropout and a step-decay schedule, so optimizer, scheduler and RNG state all matter on resume."""
    return LoraModule(
        backbone=backbone, task=VerbalizerClassification(), method=Lora(r=4, dropout=DROPOUT, target_modules=targets),
        label_names=LABELS, optimizer=partial(torch.optim.AdamW, lr=1e-2),
        lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.5),
    )


def classification_data(path: Path) -> ClassificationData:
    """36 training examples in 9 batches of 4 per epoch; 4 validation examples."""
    return ClassificationData(str(path), tokenizer=BACKBONE, label_names=LABELS, val_size=4, test_size=0,
                              batch_size=4, max_length=16)


def trainer(root: Path, max_steps: int, callbacks: list[L.Callback] = (), **kwargs: Any) -> L.Trainer:
    """A quiet CPU trainer that validates every 3 steps (so validation falls between saved steps)."""
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=1, val_check_interval=3, limit_val_batches=1,
                    enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))
    return L.Trainer(default_root_dir=root, max_steps=max_steps, callbacks=list(callbacks), **{**defaults, **kwargs})


class LossRecorder(L.Callback):
    """Collect the training loss of every step; with `path`, also append each as a JSON line (for CLI runs)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = float(outputs["loss"])
        self.losses.append(loss)
        if self.path:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(loss) + "\n")


def read_losses(path: Path) -> list[float]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli_config(tmp_path: Path, data_path: Path, losses_path: Path | None = None, every_n_steps: int = 3) -> Path:
    """A `lightning-peft fit` YAML: the same module and data as `lora_module`/`classification_data`."""
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(tmp_path / "ckpt"), "every_n_train_steps": every_n_steps,
                                "save_top_k": -1, "filename": "{step}"}}]
    if losses_path is not None:
        callbacks.append({"class_path": "tests.helpers.LossRecorder", "init_args": {"path": str(losses_path)}})
    config = {
        "seed_everything": 7,
        "test_after_fit": False,
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0, "val_check_interval": 3,
                    "limit_val_batches": 1, "default_root_dir": str(tmp_path / "run"), "callbacks": callbacks},
        "model": {"class_path": "lightning_peft.modules.LoraModule", "init_args": {
            "backbone": BACKBONE,
            "task": {"class_path": "lightning_peft.tasks.VerbalizerClassification"},
            "method": {"class_path": "lightning_peft.methods.Lora",
                       "init_args": {"r": 4, "dropout": DROPOUT, "target_modules": TARGETS}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
            "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 2, "gamma": 0.5}},
        }},
        "data": {"class_path": "lightning_peft.data.ClassificationData", "init_args": {
            "dataset": str(data_path), "label_names": LABELS, "val_size": 4, "test_size": 0, "batch_size": 4,
            "max_length": 16,
        }},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sample_input_ids(count: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(5, 1000, (count, length), generator=torch.Generator().manual_seed(0))
