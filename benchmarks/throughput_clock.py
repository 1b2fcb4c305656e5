"""`StepClock`: the Lightning side of `benchmarks/throughput.py`'s timing (see `throughput_timing.py`).

Passed to `lightning-peft fit` as a trainer callback (`benchmarks/` on PYTHONPATH); writes the run's
tokens/s, per-step tokens and losses, peak memory and, when the `Throughput` callback also ran,
its summary (MFU on a GPU) to a JSON file at the end of training.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from throughput_timing import StepTimes, write_result

from lightning_peft.callbacks.flops import count_parameters


class StepClock(L.Callback):
    """Record every optimizer step's tokens, loss and end time; write the summary to `output` when fit ends.

    Args:
        output: JSON file to write.
        warmup_steps: Steps left out of the timed window.
        profile_steps: Timed steps to profile (0: none; see `throughput_profile.py`).
    """

    def __init__(self, output: str, warmup_steps: int = 2, profile_steps: int = 0) -> None:
        self.output, self.warmup_steps, self.profile_steps = output, warmup_steps, profile_steps
        self.times: StepTimes | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times = StepTimes(self.warmup_steps, trainer.max_steps, self.profile_steps)
        self.times.training_started()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.times.step_started(batch)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # A step without an optimizer update (SetFit's head batches) returns None, which Lightning passes on as {}.
        self.times.step_ended(outputs.get("loss") if isinstance(outputs, dict) else outputs)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = self.times.summary()
        for callback in trainer.callbacks:
            if type(callback).__name__ == "Throughput" and hasattr(callback, "summary"):
                result["throughput_callback"] = callback.summary()
        result["trainable_parameters"] = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        result["n_params"], result["n_trainable"] = count_parameters(pl_module)  # for the FLOPs per token
        write_result(self.output, result)
