"""Gradient clipping with a fused optimizer: exact under bf16-mixed, refused at setup under 16-mixed."""

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_peft.methods import MethodConfigError
from tests.helpers import classification_data, lora_module, trainer, write_jsonl


class GradientNorms(L.Callback):
    """The adapter's gradients as (norm, largest entry): before clipping, and after the step (clipped, not yet zeroed)."""

    def __init__(self) -> None:
        self.before: list[tuple[float, float]] = []
        self.after: list[tuple[float, float]] = []

    @staticmethod
    def _measure(pl_module) -> tuple[float, float]:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        return (float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))),
                max(float(g.abs().max()) for g in grads))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append(self._measure(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(self._measure(pl_module))


def _fused_module():
    module = lora_module()
    module.optimizer_factory = partial(torch.optim.AdamW, lr=1e-2, fused=True)
    return module


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_fused_adamw_under_bf16_mixed_is_clipped(tmp_path, algorithm):
    clip = 1e-3 if algorithm == "norm" else 1e-5
    norms = GradientNorms()
    fit = trainer(tmp_path, max_steps=2, callbacks=[norms], precision="bf16-mixed", gradient_clip_val=clip,
                  gradient_clip_algorithm=algorithm, num_sanity_val_steps=0, limit_val_batches=0)
    fit.fit(_fused_module(), datamodule=classification_data(write_jsonl(tmp_path / "train.jsonl")))

    measured = 0 if algorithm == "norm" else 1  # the norm, or the largest entry
    assert len(norms.after) == 2 and all(before[measured] > 10 * clip for before in norms.before)  # work to do
    for after in norms.after:
        if algorithm == "norm":
            assert after[0] == pytest.approx(clip, rel=1e-3)
        else:
            assert after[1] <= clip


def test_fused_adamw_with_clipping_under_16_mixed_is_refused_before_the_first_step(tmp_path):
    # Lightning swaps precision="16-mixed" for bf16-mixed on a CPU; the plugin given directly keeps fp16's scaler.
    fit = trainer(tmp_path, max_steps=2, plugins=[MixedPrecision("16-mixed", "cpu")], gradient_clip_val=1.0,
                  num_sanity_val_steps=0)
    module = _fused_module()
    with pytest.raises(MethodConfigError, match=r"cannot clip AdamW under precision='16-mixed'.*set the optimizer's fused: false"):
        fit.fit(module, datamodule=classification_data(write_jsonl(tmp_path / "train.jsonl")))
    assert fit.global_step == 0
