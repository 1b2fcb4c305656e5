"""HalfFineTuning on a LightningModule that is not ours: a plain module holding a transformers model."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_peft.callbacks import HalfFineTuning
from lightning_peft.methods.selective import transformer_layers
from tests.conftest import tiny_causal_lm


class ForeignLM(L.LightningModule):
    """What a user might write: no lightning_peft base class, optimizer over all parameters."""

    def __init__(self):
        super().__init__()
        self.lm = tiny_causal_lm()

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        return self.lm(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.9)}


def _loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randint(0, 500, (16, 12), generator=g)), batch_size=4)


def _trainer(tmp_path, epochs, callbacks, **kw):
    return L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, callbacks=callbacks, **kw)


def _frozen_names(module):
    return {n for n, p in module.lm.named_parameters() if not p.requires_grad}


def test_freeze_mode_trains_one_half_and_keeps_no_state_for_the_other(tmp_path):
    module, hft = ForeignLM(), HalfFineTuning(every_n_epochs=1, seed=0)
    start = {n: p.detach().clone() for n, p in module.lm.named_parameters()}
    trainer = _trainer(tmp_path, 1, [hft], enable_checkpointing=False)
    trainer.fit(module, _loader())
    frozen = _frozen_names(module)
    layer_params = {n for n, _ in module.lm.named_parameters() if ".layers." in n}
    assert frozen & layer_params and layer_params - frozen
    params = dict(module.lm.named_parameters())
    assert all(torch.equal(params[n], start[n]) for n in frozen)
    assert all(not torch.equal(params[n], start[n]) for n in layer_params - frozen)
    (optimizer,) = trainer.optimizers
    held = {id(p) for p in optimizer.state}
    assert held and not held & {id(params[n]) for n in frozen}
    assert trainer.lr_scheduler_configs[0].scheduler.optimizer is optimizer


def test_each_epoch_stage_draws_a_new_half(tmp_path):
    module, hft = ForeignLM(), HalfFineTuning(every_n_epochs=1, seed=0)
    _trainer(tmp_path, 2, [hft], enable_checkpointing=False).fit(module, _loader())
    assert [h["stage"] for h in hft.history] == [0, 1]
    assert hft.history[0]["frozen"] != hft.history[1]["frozen"]


def test_reset_mode_restores_the_selected_half_bit_for_bit(tmp_path):
    module, hft = ForeignLM(), HalfFineTuning(every_n_epochs=1, mode="reset", seed=0)
    start = {n: p.detach().clone() for n, p in module.lm.named_parameters()}
    _trainer(tmp_path, 1, [hft], enable_checkpointing=False).fit(module, _loader())
    assert not _frozen_names(module)  # reset mode trains everything during the stage
    selected = set()
    for i, names in hft.history[0]["frozen"].items():
        selected |= {n for n, _ in module.lm.named_parameters() if f".layers.{i}." in n and n.split(".")[-2] in names}
    params = dict(module.lm.named_parameters())
    assert selected and all(torch.equal(params[n], start[n]) for n in selected)
    others = {n for n in params if ".layers." in n and n not in selected and "norm" not in n}
    assert all(not torch.equal(params[n], start[n]) for n in others)


def test_resume_mid_stage_keeps_the_selection(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
    first = HalfFineTuning(every_n_epochs=2, seed=4)
    original = ForeignLM()
    _trainer(tmp_path, 1, [first, ckpt]).fit(original, _loader())  # stops inside stage 0
    module, resumed = ForeignLM(), HalfFineTuning(every_n_epochs=2, seed=4)
    trainer = _trainer(tmp_path, 2, [resumed])
    trainer.fit(module, _loader(), ckpt_path=str(next((tmp_path / "ckpt").glob("*.ckpt"))))
    assert resumed.stage == 0 and len(resumed.history) == 1
    assert resumed.history[0]["frozen"] == first.history[0]["frozen"]
    assert _frozen_names(module) == _frozen_names(original)
    assert len(trainer.optimizers[0].state) == sum(p.requires_grad for p in module.parameters())


def test_rejects_a_bad_stage_length():
    with pytest.raises(ValueError, match="every_n_epochs"):
        HalfFineTuning(every_n_epochs=0)


class Block(torch.nn.Module):
    """A user's own transformer-like block with differently named projections."""

    def __init__(self, d=8):
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (torch.nn.Linear(d, d) for _ in range(4))
        self.up, self.gate, self.down = torch.nn.Linear(d, 2 * d), torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d)

    def forward(self, x):
        x = x + self.wo(self.wq(x) * self.wk(x).sigmoid() + self.wv(x))
        return x + self.down(self.up(x) * self.gate(x).sigmoid())


class PlainModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(4))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        for block in self.blocks:
            x = block(x)
        return x.pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def test_plain_module_with_user_category_rules(tmp_path):
    module = PlainModule()
    hft = HalfFineTuning(attention_modules=["wq", "wk", "wv", "wo"], ffn_modules=["up", "gate", "down"], seed=2)
    loader = DataLoader(TensorDataset(torch.randn(8, 8)), batch_size=4)
    trainer = _trainer(tmp_path, 1, [hft], enable_checkpointing=False)
    trainer.fit(module, loader)
    frozen = hft.history[0]["frozen"]
    for i, block in enumerate(module.blocks):
        trainable = {n.split(".")[0] for n, p in block.named_parameters() if p.requires_grad}
        assert trainable == {"wq", "wk", "wv", "wo", "up", "gate", "down"} - set(frozen[i])
    (optimizer,) = trainer.optimizers
    assert {id(p) for p in optimizer.state} == {id(p) for p in module.parameters() if p.requires_grad}


def test_refuses_plain_ddp_in_freeze_mode(tmp_path):
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=1, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[HalfFineTuning()])
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        trainer.fit(ForeignLM(), _loader())


def test_weights_the_module_never_optimizes_stay_frozen(tmp_path):
    class PartlyFrozen(ForeignLM):
        def configure_optimizers(self):
            self.lm.model.layers[0].self_attn.k_proj.weight.requires_grad_(False)  # stage 0 would train it
            return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=1e-2)

    module = PartlyFrozen()
    _trainer(tmp_path, 1, [HalfFineTuning(seed=0)], enable_checkpointing=False).fit(module, _loader())
    assert not module.lm.model.layers[0].self_attn.k_proj.weight.requires_grad
