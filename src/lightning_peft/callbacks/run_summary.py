"""Write each run's final metrics to `metrics.json` in its run directory, and say where the adapter is.

Loggers keep curves; a user who wants the final numbers of a run should not have to parse them.
Works in any Lightning project: it reads only `trainer.callback_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..atomic import write_file_atomically


def run_dir(trainer: L.Trainer) -> Path:
    """The folder this run writes into: the logger's version folder, else the trainer's root dir."""
    folder = trainer.log_dir if trainer.logger is not None and trainer.log_dir else trainer.default_root_dir
    return Path(folder)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    write_file_atomically(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True)))


class RunSummary(L.Callback):
    """Record the final metrics of fit, validate and test in `<run dir>/metrics.json`.

    A section per stage ("fit", "validate", "test"); an evaluation before any optimizer step
    (e.g. a zero-shot baseline) is recorded as "<stage>_before_training". At the end of fit it
    prints where the checkpoint (adapter-only) was saved.

    Example::

        trainer = Trainer(callbacks=[RunSummary()])
    """

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename

    def _record(self, trainer: L.Trainer, stage: str) -> None:
        # On every rank: `trainer.log_dir` is a broadcast, so calling it on rank 0 alone deadlocks DDP.
        self._write(trainer, stage, run_dir(trainer) / self.filename)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, stage: str, path: Path) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        section = f"{stage}_before_training" if stage != "fit" and trainer.global_step == 0 else stage
        summary = json.loads(path.read_text()) if path.exists() else {}
        summary[section] = {**metrics, "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        write_json_atomic(path, summary)
        rank_zero_info(f"Metrics ({section}) written to {path}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "fit")
        ckpt = trainer.checkpoint_callback
        saved = ckpt and (ckpt.last_model_path or ckpt.best_model_path)
        if saved:
            rank_zero_info(f"Adapter-only checkpoint saved to {saved}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self._record(trainer, "validate")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "test")
