"""The run's whole resolved config: `config.yaml` in the run's own folder, and the loggers' hyperparameters.

Lightning's `SaveConfigCallback` writes `config.yaml` to `trainer.log_dir`, which for W&B (and
any logger without version folders) is the logger's `save_dir`, shared by every run under it, and
logs nothing to the loggers. `RunConfig` writes it into the run's own folder (where its
checkpoints and `metrics.json` go) and gives every logger the full config (model, data, trainer,
seed), with each `{class_path, init_args}` folded to `{class_path, <args>}` so a W&B config reads
`data.batch_size` and `trainer.max_steps`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from ..callbacks.run_summary import run_dir


def fold_class_args(value: Any) -> Any:
    """`{"class_path": C, "init_args": {...}}` -> `{"class_path": C, ...}`, recursively."""
    if isinstance(value, dict):
        folded = {k: fold_class_args(v) for k, v in value.items() if k != "init_args"}
        if isinstance(value.get("init_args"), dict):
            folded.update(fold_class_args(value["init_args"]))
        return folded
    if isinstance(value, list):
        return [fold_class_args(v) for v in value]
    return value


class RunConfig(SaveConfigCallback):
    """Write the resolved config to `<run folder>/config.yaml` and log it to every logger (rank 0)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False  # written by `setup` into the run's own folder instead
        super().__init__(*args, **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        folder = run_dir(trainer)  # on every rank: it broadcasts
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(folder / self.config_filename), skip_none=False, overwrite=True,
                             multifile=self.multifile)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = fold_class_args(yaml.safe_load(self.parser.dump(self.config, skip_none=False)))
        config.pop("config", None)  # the --config file paths: the content is what matters
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
