"""Lightning's rich progress bar without the negative epoch total it shows for unbounded epochs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class EpochRichProgressBar(RichProgressBar):
    """`RichProgressBar` that shows "Epoch 3" rather than "Epoch 3/-2" when epochs are unbounded.

    A run limited by `max_steps` gets `max_epochs=-1`, and Lightning up to 2.6 prints its epoch
    total as `max_epochs - 1` (Lightning-AI/pytorch-lightning#21925, fixed upstream after 2.6.6).
    Everything else is Lightning's bar. The `lightning-peft` CLI uses it in place of Lightning's
    default; in your own Trainer, pass it as a callback.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        # Padded to the validation bar's description, as Lightning pads it, so the bars do not flicker.
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
