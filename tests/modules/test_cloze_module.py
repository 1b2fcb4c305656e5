"""ClozeModule: PET's pattern model, alpha * CE + (1 - alpha) * LM loss on unlabelled batches drawn alongside."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from lightning_peft.data import FewShotClassificationData
from lightning_peft.methods import Lora, MethodConfigError
from lightning_peft.modules import ClozeModule
from lightning_peft.tasks import ClozeClassification
from tests.tasks.test_cloze_training import topics_file  # noqa: F401 - the fixture: 12 short texts per class

LABELS = ["sport", "politics", "tech"]


def _module(alpha: float) -> ClozeModule:
    return ClozeModule(backbone="tiny-llama", task=ClozeClassification({"sport": "football"}), alpha=alpha,
                       method=Lora(r=4, target_modules=["q_proj", "v_proj"]), label_names=LABELS,
                       optimizer=partial(torch.optim.AdamW, lr=1e-2), unlabelled_batch_size=2)


def _trainer(root, callbacks=()) -> L.Trainer:
    return L.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_steps=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks))


class Logged(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}


def test_loss_mixes_cross_entropy_and_the_lm_loss_on_a_pool_batch(tmp_path, topics_file):
    data = FewShotClassificationData(topics_file, tokenizer="tiny-llama", template="{text}\nTopic:", shots_per_class=2,
                                     label_names=LABELS, val_size=0, test_size=0, batch_size=3, max_length=32)
    logged = Logged()
    _trainer(tmp_path, [logged]).fit(_module(alpha=0.25), datamodule=data)
    values = logged.values
    assert values["train/lm_loss"] > 1.0  # an untrained LM's next-token loss on text, not the 3-way CE
    assert values["train/loss"] == pytest.approx(0.25 * values["train/ce"] + 0.75 * values["train/lm_loss"], rel=1e-5)


def test_an_empty_pool_is_one_sentence_at_setup_before_weights_load(tmp_path, topics_file):
    data = FewShotClassificationData(topics_file, tokenizer="tiny-llama", template="{text}\nTopic:", shots_per_class=12,
                                     label_names=LABELS, val_size=0, test_size=0, batch_size=3, max_length=32)
    module = _module(alpha=0.9999)
    with pytest.raises(MethodConfigError, match=r"no unlabelled examples; use .*max_unlabelled > 0 .* or set alpha: 1\.$"):
        _trainer(tmp_path).fit(module, datamodule=data)
    assert module.model is None
    _trainer(tmp_path).fit(_module(alpha=1.0), datamodule=data)  # without the LM term no pool is needed


@pytest.mark.parametrize("alpha", [0, 1.5, True])
def test_alpha_outside_zero_one_is_refused(alpha):
    with pytest.raises(MethodConfigError, match="alpha must be in"):
        _module(alpha)
