"""A run resumed from a mid-epoch checkpoint trains on exactly the batches the uninterrupted run would have."""

from __future__ import annotations

import json

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_peft.data import ClassificationData


class RecordBatches(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int, list]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, batch["input_ids"].tolist()))
        return (self.weight * batch["labels"].float().mean() - 1).pow(2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def make_data(path, tokenizer):
    return ClassificationData(path, tokenizer=tokenizer, val_size=0, test_size=6, batch_size=4, split_seed=7)


def trainer(tmp_path, **kwargs):
    return L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


def test_resume_mid_epoch_continues_with_the_same_batches(data_cache, tokenizer, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": "word " * (1 + i % 9) + str(i), "label": "ab"[i % 2]}) + "\n"
                            for i in range(60)))
    full = RecordBatches()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=19, save_top_k=-1)
    trainer(tmp_path, callbacks=[checkpoint]).fit(full, datamodule=make_data(str(path), tokenizer))
    assert len(full.seen) == 2 * 14 and full.seen[0][2] != full.seen[14][2]  # 54 examples / 4 per batch

    saved = torch.load(tmp_path / "ckpt" / "epoch=1-step=19.ckpt", weights_only=False)
    assert saved["ClassificationData"] == {"epoch": 1, "batches_processed": 5}

    resumed = RecordBatches()
    trainer(tmp_path).fit(resumed, datamodule=make_data(str(path), tokenizer),
                          ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=19.ckpt"))
    assert resumed.seen == full.seen[19:]
