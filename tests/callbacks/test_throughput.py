"""Throughput on LightningModules that are not ours; the FLOPs formula against a hand count for a tiny Llama."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_peft.callbacks.flops import (count_parameters, device_peak_flops, matmul_precision,
                                            training_flops_per_token)
from lightning_peft.callbacks.throughput import Throughput, ThroughputConfigError, attention_context
from lightning_peft.data.packing import PackingCollator
from tests.conftest import tiny_causal_lm

WIDTH = 8


class PaddedTokens(Dataset):
    """Rows of WIDTH token ids; row i has 2 + i % 6 real tokens, the rest padding (mask 0)."""

    def __init__(self, count=32):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        length = 2 + i % 6
        ids = torch.full((WIDTH,), 0)
        ids[:length] = torch.arange(1, length + 1) + i % 50
        return {"input_ids": ids, "attention_mask": (torch.arange(WIDTH) < length).long()}


def _real_tokens(indices):
    return sum(2 + i % 6 for i in indices)


class BagLM(L.LightningModule):
    """No `.model`, no config: an embedding table (a lookup) and a 16->100 output layer (1,700 parameters)."""

    def __init__(self):
        super().__init__()
        self.embed, self.out = torch.nn.Embedding(100, 16), torch.nn.Linear(16, 100)

    def training_step(self, batch, batch_idx):
        logits = self.out(self.embed(batch["input_ids"][:, :-1]))
        targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 100), targets.reshape(-1), ignore_index=-100)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


BAG_N = 16 * 100 + 100  # the output layer; the embedding table does no matmul


def _loader(batch_size=4, dataset=None):
    return DataLoader(dataset or PaddedTokens(), batch_size=batch_size)


def _trainer(tmp_path, max_steps, callbacks, **kw):
    defaults = dict(logger=False, enable_checkpointing=False)
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks, **{**defaults, **kw})


def _logged(logger):
    with open(f"{logger.log_dir}/metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("throughput/step_time")]


def test_tokens_exclude_padding_and_sum_micro_batches(tmp_path):
    plain, accumulated = Throughput(warmup_steps=0), Throughput(warmup_steps=0)
    _trainer(tmp_path, 4, [plain]).fit(BagLM(), _loader())
    _trainer(tmp_path, 4, [accumulated], accumulate_grad_batches=2).fit(BagLM(), _loader())
    assert [r["tokens"] for r in plain.records] == [_real_tokens(range(4 * s, 4 * s + 4)) for s in range(4)]
    assert [r["tokens"] for r in accumulated.records] == [_real_tokens(range(8 * s, 8 * s + 8)) for s in range(4)]
    assert all(r["tokens"] < 4 * WIDTH for r in plain.records)  # not input_ids.numel()


def test_warmup_steps_are_left_out(tmp_path):
    callback = Throughput(warmup_steps=2)
    _trainer(tmp_path, 5, [callback]).fit(BagLM(), _loader())
    assert [r["tokens"] for r in callback.records] == [_real_tokens(range(4 * s, 4 * s + 4)) for s in (2, 3, 4)]


def test_logged_numbers_are_positive_and_consistent(tmp_path):
    logger = CSVLogger(tmp_path, name="run")
    callback = Throughput(window=3, warmup_steps=1)
    _trainer(tmp_path, 7, [callback], logger=logger, log_every_n_steps=1).fit(BagLM(), _loader())
    rows, records = _logged(logger), callback.records
    assert len(rows) == len(records) == 6
    for i, row in enumerate(rows):
        recent = records[max(0, i - 2): i + 1]
        tokens_per_step = sum(r["tokens"] for r in recent) / len(recent)
        step_time, rate = float(row["throughput/step_time"]), float(row["throughput/tokens_per_sec"])
        assert step_time > 0 and rate > 0 and float(row["throughput/peak_memory_gb"]) > 0
        assert step_time == pytest.approx(sum(r["seconds"] for r in recent) / len(recent), rel=1e-5)
        assert rate == pytest.approx(tokens_per_step / step_time, rel=1e-5)
    summary = callback.summary()
    assert summary["steps"] == 6 and summary["peak_memory_kind"] == "process_peak_rss"
    per_step = sorted(r["tokens"] / r["seconds"] for r in records)
    assert summary["tokens_per_sec"] == pytest.approx((per_step[2] + per_step[3]) / 2)
    assert "throughput/mfu" not in rows[0] and summary["mfu"] is None  # CPU without peak_flops


def test_mfu_is_logged_when_peak_flops_is_known(tmp_path):
    logger = CSVLogger(tmp_path, name="run")
    callback = Throughput(window=2, warmup_steps=0, peak_flops=1e12)
    _trainer(tmp_path, 4, [callback], logger=logger, log_every_n_steps=1).fit(BagLM(), _loader())
    rows = _logged(logger)
    assert callback.summary()["n_params"] == BAG_N  # found without a `.model`: the module itself
    for row in rows:
        expected = float(row["throughput/tokens_per_sec"]) * 6 * BAG_N / 1e12  # all trainable, no attention
        assert float(row["throughput/mfu"]) == pytest.approx(expected, rel=1e-5) and expected > 0
    assert callback.summary()["mfu"] > 0


def test_tokens_fn_overrides_counting_and_is_required_for_tuple_batches(tmp_path):
    class TupleModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = TensorDataset(torch.randn(16, 4))
    with pytest.raises(ThroughputConfigError, match="tokens_fn"):
        _trainer(tmp_path, 2, [Throughput()]).fit(TupleModule(), _loader(dataset=data))
    callback = Throughput(tokens_fn=lambda batch: 3 * len(batch[0]), warmup_steps=0)
    _trainer(tmp_path, 2, [callback]).fit(TupleModule(), _loader(dataset=data))
    assert [r["tokens"] for r in callback.records] == [12, 12]


def test_summary_is_checkpointed_and_resumed(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}")
    first = Throughput(warmup_steps=0)
    _trainer(tmp_path, 3, [first, ckpt], enable_checkpointing=True).fit(BagLM(), _loader())
    saved = torch.load(tmp_path / "ckpt" / "step=3.ckpt", weights_only=False)["callbacks"]
    (state,) = [v for k, v in saved.items() if k.startswith("Throughput")]
    assert state["summary"]["steps"] == 3 and state["summary"]["tokens_per_sec"] > 0
    resumed = Throughput(warmup_steps=0)
    _trainer(tmp_path, 5, [resumed]).fit(BagLM(), _loader(), ckpt_path=str(tmp_path / "ckpt" / "step=3.ckpt"))
    assert resumed.records[:3] == first.records and len(resumed.records) == 5


# -- the FLOPs formula --------------------------------------------------------------------------

V, D, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 49152, 64, 128, 2, 4, 2, 16  # zoo "tiny-llama"
PER_LAYER = D * HEADS * HEAD_DIM * 2 + D * KV_HEADS * HEAD_DIM * 2 + 3 * D * FFN + 2 * D  # q,o + k,v + MLP + norms
TINY_LLAMA_N = LAYERS * PER_LAYER + D + V * D  # + final norm + LM head (tied to the embedding, a matmul per token)
Q_PROJ = D * HEADS * HEAD_DIM


def _freeze_all_but_one_q_proj(model):
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name == "model.layers.0.self_attn.q_proj.weight")


def test_parameter_count_matches_a_hand_count_for_tiny_llama():
    model = tiny_causal_lm()
    assert (model.config.vocab_size, model.config.hidden_size, model.config.num_key_value_heads) == (V, D, KV_HEADS)
    assert count_parameters(model) == (TINY_LLAMA_N, TINY_LLAMA_N)
    _freeze_all_but_one_q_proj(model)
    assert count_parameters(model) == (TINY_LLAMA_N, Q_PROJ)


def test_embedding_tables_are_excluded_unless_asked():
    gpt2 = tiny_causal_lm("tiny-gpt2")  # learned position embeddings: a lookup table of 512 x 64
    without, _ = count_parameters(gpt2)
    with_tables, _ = count_parameters(gpt2, include_embeddings=True)
    assert with_tables - without == 512 * 64


def test_flops_per_token_full_and_frozen_by_hand():
    seq = 16
    attention = 12 * LAYERS * seq * HEADS * HEAD_DIM  # PaLM's 12·L·H·Q·T
    full = training_flops_per_token(TINY_LLAMA_N, TINY_LLAMA_N, LAYERS, HEADS * HEAD_DIM, seq)
    frozen = training_flops_per_token(TINY_LLAMA_N, Q_PROJ, LAYERS, HEADS * HEAD_DIM, seq)
    assert full == 6 * TINY_LLAMA_N + attention
    assert frozen == 4 * TINY_LLAMA_N + 2 * Q_PROJ + attention


class ForeignLM(L.LightningModule):
    """The causal LM sits in `.lm` (not `.model`); all but one projection frozen."""

    def __init__(self):
        super().__init__()
        self.lm = tiny_causal_lm()
        _freeze_all_but_one_q_proj(self.lm)

    def training_step(self, batch, batch_idx):
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return self.lm(**batch, labels=labels).loss

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_step_flops_of_a_frozen_llama_use_its_config_and_batch_width(tmp_path):
    callback = Throughput(warmup_steps=0, peak_flops=1e12)
    _trainer(tmp_path, 2, [callback]).fit(ForeignLM(), _loader())
    per_token = 4 * TINY_LLAMA_N + 2 * Q_PROJ + 12 * LAYERS * WIDTH * HEADS * HEAD_DIM
    assert [r["flops"] for r in callback.records] == [r["tokens"] * per_token for r in callback.records]
    assert callback.summary()["n_trainable"] == Q_PROJ


class UnfreezeAtStep(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            for param in pl_module.parameters():
                param.requires_grad_(True)


def test_flops_follow_a_callback_that_unfreezes_mid_run(tmp_path):
    callback = Throughput(warmup_steps=0, peak_flops=1e12)
    # listed first, so the parameters are unfrozen before Throughput counts the step
    _trainer(tmp_path, 4, [UnfreezeAtStep(2), callback]).fit(ForeignLM(), _loader())
    attention = 12 * LAYERS * WIDTH * HEADS * HEAD_DIM
    frozen, full = 4 * TINY_LLAMA_N + 2 * Q_PROJ + attention, 6 * TINY_LLAMA_N + attention
    assert [r["flops"] / r["tokens"] for r in callback.records] == [frozen, frozen, full, full]
    assert callback.summary()["n_trainable"] == TINY_LLAMA_N


class PackedLM(ForeignLM):
    def training_step(self, batch, batch_idx):
        return self.lm(**batch).loss


def _packed_loader(lengths_per_batch):
    collate = PackingCollator()
    batches = [collate([{"input_ids": list(range(1, n + 1)), "prompt_length": 1} for n in lengths])
               for lengths in lengths_per_batch]
    return DataLoader(batches, batch_size=None)


def test_packed_batches_count_attention_within_each_example(tmp_path):
    lengths = [[3, 5, 8], [4, 4, 4, 4], [16]]
    assert [attention_context(b) for b in _packed_loader(lengths)] == [(9 + 25 + 64) / 16, 4.0, 16.0]
    callback = Throughput(warmup_steps=0, peak_flops=1e12)
    _trainer(tmp_path, 3, [callback]).fit(PackedLM(), _packed_loader(lengths))
    linear = 4 * TINY_LLAMA_N + 2 * Q_PROJ
    expected = [16 * linear + 12 * LAYERS * HEADS * HEAD_DIM * sum(n * n for n in row) for row in lengths]
    assert [r["tokens"] for r in callback.records] == [16, 16, 16]  # every position of a packed row is real
    assert [r["flops"] for r in callback.records] == pytest.approx(expected)
    # the same rows padded to one width would be counted at that width, as they are computed
    assert attention_context({"input_ids": torch.zeros(3, 8), "attention_mask": torch.ones(3, 8)}) == 8


def _on_a_visible_gpu(monkeypatch, name):
    """Look up `name` as if a CUDA device of that name were present (Lightning reads the name from the device)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_peak_flops_from_lightning_and_from_our_table(monkeypatch):
    # No such device here: only our table answers (Lightning's is read through a visible device).
    assert device_peak_flops("NVIDIA H200", "bf16") == pytest.approx(989.4e12)
    assert device_peak_flops("NVIDIA L40S", "bf16") == pytest.approx(362e12)
    assert device_peak_flops("NVIDIA H100 80GB HBM3", "bf16") is None
    lightning = {("NVIDIA H100 80GB HBM3", "bf16"): 989.4e12, ("NVIDIA H100 PCIe", "bf16"): 756e12,
                 ("NVIDIA A100-SXM4-80GB", "bf16"): 312e12, ("NVIDIA A100-SXM4-80GB", "tf32"): 156e12,
                 ("NVIDIA L4", "bf16"): 121e12, ("Tesla V100-PCIE-16GB", "fp16"): 112e12}
    for (name, precision), expected in lightning.items():
        _on_a_visible_gpu(monkeypatch, name)
        assert device_peak_flops(name, precision) == pytest.approx(expected), name
    for name in ("NVIDIA A10G", "NVIDIA L40", "NVIDIA H100 NVL"):  # Lightning's figure is not this card's dense one
        _on_a_visible_gpu(monkeypatch, name)
        assert device_peak_flops(name, "bf16") is None, name
    # Why our table answers first (when Lightning changes these, PEAK_FLOPS can shrink):
    from lightning.fabric.utilities.throughput import get_available_flops

    lightning_says = {"NVIDIA H200": None, "NVIDIA L40S": 121e12, "NVIDIA A10": None, "NVIDIA A10G": 125e12}
    for name, figure in lightning_says.items():
        _on_a_visible_gpu(monkeypatch, name)
        assert get_available_flops(torch.device("cuda", 0), torch.bfloat16) == figure, name
        assert device_peak_flops(name, "bf16") != figure, name
    _on_a_visible_gpu(monkeypatch, "Tesla T4")
    assert device_peak_flops("Tesla T4", "bf16") is None  # no bf16 tensor cores
    assert device_peak_flops("Tesla T4", "fp8") is None  # a precision neither table has


def test_matmul_precision():
    assert [matmul_precision(p) for p in ("bf16-mixed", "16-mixed", "bf16-true")] == ["bf16", "fp16", "bf16"]
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert matmul_precision("32-true") == "fp32"
        torch.set_float32_matmul_precision("high")
        assert matmul_precision("32-true") == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("kwargs, words", [({"window": 0}, "window"), ({"warmup_steps": -1}, "warmup_steps"),
                                           ({"peak_flops": 0.0}, "peak_flops")])
def test_bad_settings_fail_at_construction(kwargs, words):
    with pytest.raises(ThroughputConfigError, match=words):
        Throughput(**kwargs)
