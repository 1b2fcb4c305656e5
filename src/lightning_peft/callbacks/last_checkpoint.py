"""A `last.ckpt` from every fit: at the end of training and when it is interrupted.

Lightning's `ModelCheckpoint(save_last=True)` writes `last.ckpt` only beside a regular save
(after validation or at an epoch's end), so a fit shorter than `val_check_interval`, or one that
stops between two validations, leaves no checkpoint of its final weights. `LastCheckpoint`
keeps everything `ModelCheckpoint` does and also writes `last.ckpt` when training ends at a step
not saved yet, and (with `save_on_exception`, on by default) when a single-process run is
interrupted (Ctrl-C included); only `last.ckpt` is written then. Under several processes an
exception reaches only the rank that raised it, and a save there would wait forever at the
checkpoint's collective calls for ranks stuck elsewhere, so none is attempted. `lightning-peft fit`
adds it unless the config names its own `ModelCheckpoint`. Works in any Lightning project.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


class LastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that always leaves `last.ckpt` for the final step of fit.

    Args:
        **kwargs: As `ModelCheckpoint`; `save_last` and `save_on_exception` default to True.

    Example::

        trainer = Trainer(callbacks=[LastCheckpoint()], max_steps=3)  # .../checkpoints/last.ckpt after fit
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("save_on_exception", True)
        super().__init__(**kwargs)

    def _should_save_on_exception(self, trainer: L.Trainer) -> bool:
        return trainer.world_size == 1 and super()._should_save_on_exception(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning's hook also writes a top-k-named copy; the last one is what a resume needs.
        if self._should_save_on_exception(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            rank_zero_info(f"{type(exception).__name__} during fit: checkpoint saved to {self.last_model_path}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Replaces Lightning's hook, which saves `last` only when nothing was written during the whole
        # run (and even under fast_dev_run): save whenever the final step has not been written yet.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
