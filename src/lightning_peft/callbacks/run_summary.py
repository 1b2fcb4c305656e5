"""Write each run's final metrics to `metrics.json` in its run directory, and say where the adapter is.

Loggers keep curves; a user who wants the final numbers of a run should not have to parse them.
Works in any Lightning project: it reads only `trainer.callback_metrics` (and, for a checkpoint
given as `ckpt_path`, that checkpoint's `global_step` and `epoch`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..atomic import write_file_atomically
from ..card import scalar_metrics


def run_dir(trainer: L.Trainer) -> Path:
    """The folder of this run alone: `<save_dir>/<name>/<version>` of its first logger, else the trainer's root dir.

    The same folder Lightning's `ModelCheckpoint` puts `checkpoints/` in. `trainer.log_dir` is that
    folder for TensorBoard and CSV loggers, but for W&B it is the `save_dir` every run shares.
    Call it on every rank: the folder is broadcast from rank 0 (other ranks have no W&B run id).
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    folder = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version
    return Path(trainer.strategy.broadcast(str(folder)))


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    write_file_atomically(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True)))


def checkpoint_progress(path: str | Path) -> tuple[int, int] | None:
    """(global_step, epoch) saved in a Lightning checkpoint file; None when `path` is not a local file.

    The file is memory-mapped, so its tensors are not read: only the two counters are.
    """
    if not Path(path).is_file():
        return None  # a remote URL: the section names it, its step and epoch stay unknown (null)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a foreign or legacy file: its step stays unknown rather than losing metrics.json
        return None
    return int(saved["global_step"]), int(saved["epoch"])


class RunSummary(L.Callback):
    """Record the final metrics of fit, validate and test in `<run dir>/metrics.json`.

    A section per stage ("fit", "validate", "test"); an evaluation before any optimizer step
    (e.g. a zero-shot baseline) is recorded as "<stage>_before_training". A validate or test of a
    checkpoint (`ckpt_path`) is labelled with that checkpoint's step and epoch and names it:
    the trainer's own counters are 0 then. At the end of fit it prints where the checkpoint
    (adapter-only) was saved.

    The file holds the sections this run wrote (fit, then its tests, accumulate), never those of
    an earlier run that wrote to the same folder (no logger: every run writes to the root dir).

    Example::

        trainer = Trainer(callbacks=[RunSummary()])
    """

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename
        self._sections: dict[Path, dict[str, dict[str, Any]]] = {}  # per file: what this process wrote

    def _record(self, trainer: L.Trainer, stage: str) -> None:
        # On every rank: `trainer.log_dir` is a broadcast, so calling it on rank 0 alone deadlocks DDP.
        self._write(trainer, stage, run_dir(trainer) / self.filename)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, stage: str, path: Path) -> None:
        metrics = scalar_metrics(trainer.callback_metrics)
        step, epoch, source = trainer.global_step, trainer.current_epoch, {}
        if stage != "fit" and trainer.ckpt_path:
            source = {"ckpt_path": str(trainer.ckpt_path)}
            step, epoch = checkpoint_progress(trainer.ckpt_path) or (None, None)
        section = f"{stage}_before_training" if stage != "fit" and step == 0 and not source else stage
        summary = self._sections.setdefault(path, {})
        summary[section] = {**metrics, "global_step": step, "epoch": epoch, **source}
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
