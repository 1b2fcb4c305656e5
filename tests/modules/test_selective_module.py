"""SelectiveModule with the HalfFineTuning callback: what a stage trained survives a checkpoint."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_peft.callbacks import HalfFineTuning
from lightning_peft.data import SFTData
from lightning_peft.methods import FullFineTuning
from lightning_peft.modules import SelectiveModule
from lightning_peft.tasks import CausalLMSFT


def test_weights_trained_in_an_earlier_stage_are_checkpointed_and_restored(tmp_path):
    data = SFTData("movie_dialog", tokenizer="tiny-llama", max_length=32, max_train_examples=16,
                   max_eval_examples=8, batch_size=8, val_size=8, test_size=8)
    module = SelectiveModule(backbone="tiny-llama", task=CausalLMSFT(), method=FullFineTuning(),
                             optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(max_epochs=2, callbacks=[HalfFineTuning(every_n_epochs=1, seed=0), ckpt], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    base = torch.load(next(tmp_path.glob("last*.ckpt")), weights_only=True)["state_dict"]
    params = dict(module.named_parameters())
    frozen_now = {n for n, p in params.items() if not p.requires_grad and ".layers." in n}
    assert frozen_now and frozen_now <= set(base)  # frozen in stage 1, yet saved
    restored = SelectiveModule(backbone="tiny-llama", task=CausalLMSFT(), method=FullFineTuning())
    restored.configure_model()
    restored.load_state_dict(base, strict=False)
    changed = [n for n in frozen_now if not torch.equal(dict(restored.named_parameters())[n], params[n])]
    assert not changed
    fresh = SelectiveModule(backbone="tiny-llama", task=CausalLMSFT(), method=FullFineTuning())
    fresh.configure_model()
    assert any(not torch.equal(dict(fresh.named_parameters())[n], params[n]) for n in frozen_now)


def test_hft_with_adamw8bit_and_gradient_checkpointing(tmp_path):
    """The memory options of full FT / HFT: bitsandbytes AdamW8bit rebuilt per stage, activations recomputed."""
    bnb = pytest.importorskip("bitsandbytes")
    data = SFTData("movie_dialog", tokenizer="tiny-llama", max_length=32, max_train_examples=16,
                   max_eval_examples=8, batch_size=8, val_size=8, test_size=8)
    module = SelectiveModule(backbone="tiny-llama", task=CausalLMSFT(), method=FullFineTuning(),
                             gradient_checkpointing=True,
                             optimizer=lambda p: bnb.optim.AdamW8bit(p, lr=1e-3, min_8bit_size=256))
    trainer = L.Trainer(max_epochs=2, callbacks=[HalfFineTuning(every_n_epochs=1)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    assert module.model.is_gradient_checkpointing
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, bnb.optim.AdamW8bit)
    states = [s for s in optimizer.state.values() if "state1" in s]
    assert states and any(s["state1"].dtype == torch.uint8 for s in states)  # 8-bit moments
    assert {id(p) for p in optimizer.state} <= {id(p) for p in module.parameters() if p.requires_grad}
