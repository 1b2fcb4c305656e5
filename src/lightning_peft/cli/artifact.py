"""After fit: the trained adapter as a W&B model artifact, in the format people load (not a Lightning `.ckpt`).

The adapter is exported into `<run folder>/adapter` (peft's format where peft has the method, with
`lightning_peft.json` and a model card holding label names, input format and the final metrics)
and that folder is logged to each `WandbLogger` of the run. Offline runs stage it for `wandb sync`.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from ..callbacks.run_summary import run_dir
from ..card import scalar_metrics
from ..modules import FineTuneModule


def log_adapter_artifact(trainer: L.Trainer, module: FineTuneModule) -> None:
    """Export the adapter and log it to every W&B logger of `trainer` (rank 0; call on every rank)."""
    loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    if not loggers:
        return
    folder = run_dir(trainer) / "adapter"  # on every rank: it broadcasts
    if not trainer.is_global_zero:
        return
    if not module.method.capabilities.export:
        rank_zero_info(f"{type(module.method).__name__} has no separate adapter, so no W&B artifact was logged; "
                       "`lightning-peft merge` saves the whole model.")
        return
    import wandb

    card = module.card("adapter", scalar_metrics(trainer.callback_metrics))
    folder = module.export(folder, metrics=card.metrics)
    for logger in loggers:
        artifact = wandb.Artifact(name=f"adapter-{logger.version}", type="model",
                                  description=f"{type(module.method).__name__} adapter on {module.backbone}",
                                  metadata={"backbone": card.backbone, "label_names": card.label_names,
                                            "dataset": card.dataset, "metrics": card.metrics})
        artifact.add_dir(str(folder))
        logger.experiment.log_artifact(artifact)
    rank_zero_info(f"Adapter exported to {folder} and logged to W&B as adapter-{loggers[0].version}")
