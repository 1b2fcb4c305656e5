"""ForgettingProbe on LightningModules that are not ours: a plain LM, a peft-wrapped LM, and one holding no LM."""

import copy

import lightning as L
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch.utils.data import DataLoader, TensorDataset

from lightning_peft.callbacks import ForgettingProbe
from lightning_peft.callbacks.probe_contract import ProbeContractError
from lightning_peft.evaluation import ProbeTask
from tests.conftest import tiny_causal_lm

SPAM = ProbeTask("sms_spam", "Message: {text}\nSpam? Answer:", {"ham": "no", "spam": "yes"}, num_examples=6)


class ForeignLM(L.LightningModule):
    """What a user might write: no lightning_peft base class, no tokenizer attribute."""

    def __init__(self, lm=None, lr=1e-2):
        super().__init__()
        # transformers 5 loads in eval mode and Lightning keeps modes: train() so the probe's restore is visible
        self.lm, self.lr = (lm if lm is not None else tiny_causal_lm()).train(), lr
        self.modes_seen = []

    def training_step(self, batch, batch_idx):
        self.modes_seen.append(self.lm.training)
        (ids,) = batch
        return self.lm(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.lr)


def _loader():
    return DataLoader(TensorDataset(torch.randint(0, 500, (16, 12), generator=torch.Generator().manual_seed(0))), batch_size=4)


def _probe(**kw):
    return ForgettingProbe(tokenizer="tiny-llama", num_chunks=2, chunk_tokens=32, top_k=8, probe_tasks=[SPAM], **kw)


def _fit(tmp_path, module, probe, steps=4):
    L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[probe]).fit(module, _loader())


def test_before_training_nothing_is_forgotten_and_training_moves_the_probes(tmp_path):
    module, probe = ForeignLM(), _probe(every_n_steps=2)
    _fit(tmp_path, module, probe)
    assert [row["step"] for row in probe.history] == [0, 2, 4]
    first, last = probe.history[0], probe.history[-1]
    assert first["perplexity_ratio"] == pytest.approx(1.0) and first["kl_from_base"] == pytest.approx(0.0, abs=1e-6)
    assert last["kl_from_base"] > 1e-5 and last["perplexity_ratio"] != pytest.approx(1.0)
    assert "acc_drop/sms_spam" in last and probe.base_source == "model at fit start"
    assert all(module.modes_seen), "the LM must be back in training mode after each measurement"
    assert (tmp_path / "forgetting.png").stat().st_size > 1000


def test_adapter_base_is_the_same_model_with_adapters_disabled(tmp_path, monkeypatch):
    lm = get_peft_model(tiny_causal_lm(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    module, probe = ForeignLM(lm, lr=5e-2), _probe(every_n_steps=0)
    storage = {p.untyped_storage().data_ptr() for p in module.parameters()}
    calls = []
    original = PeftModel.disable_adapter
    monkeypatch.setattr(PeftModel, "disable_adapter", lambda self: calls.append(1) or original(self))
    deepcopy = copy.deepcopy

    def no_model_copies(obj, *args, **kwargs):
        if isinstance(obj, (torch.nn.Module, torch.nn.Parameter)):
            pytest.fail(f"the probe deep-copied a {type(obj).__name__}")
        return deepcopy(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", no_model_copies)
    _fit(tmp_path, module, probe)
    assert calls and probe.base_source == "adaptation disabled"
    assert {p.untyped_storage().data_ptr() for p in module.parameters()} == storage  # no new parameter tensors
    stored = sum(t.numel() for t in (probe.base_text.topk_logprobs, probe.base_text.topk_indices))
    assert stored < sum(p.numel() for p in module.parameters()) / 10  # compact: top-k records, not a model copy
    # init_lora_weights=False: the adapter changes the model from step 0, yet the base has it off.
    assert probe.history[0]["kl_from_base"] > 1e-6
    base_again = dict(probe.base)
    probe.measure_base(module)
    assert probe.base == pytest.approx(base_again)  # still the true base after training the adapter


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    module, probe = ForeignLM(), _probe(every_n_steps=2)
    _fit(tmp_path, module, probe, steps=2)
    torch.save(probe.state_dict(), tmp_path / "state.pt")
    resumed = _probe(every_n_steps=2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.history == probe.history and resumed.base == probe.base
    assert torch.equal(resumed.base_text.topk_indices, probe.base_text.topk_indices)
    with pytest.raises(ValueError, match="settings differ"):
        ForgettingProbe(tokenizer="tiny-llama", num_chunks=3).load_state_dict(probe.state_dict())


class NoLM(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)


def test_a_module_without_a_causal_lm_gets_one_clear_sentence():
    with pytest.raises(ProbeContractError) as error:
        _probe().on_fit_start(L.Trainer(logger=False), NoLM())
    message = str(error.value)
    assert "NoLM holds none" in message and "probe_model()" in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")


def test_missing_tokenizer_is_reported():
    with pytest.raises(ProbeContractError, match="pass `tokenizer=<model name>`"):
        ForgettingProbe(num_chunks=2, chunk_tokens=32).on_fit_start(L.Trainer(logger=False), ForeignLM())


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_chunks"):
        ForgettingProbe(num_chunks=0)


def test_fast_dev_run_measures_one_chunk_and_two_examples_per_task_and_says_so(tmp_path, caplog):
    # Configured for a real measurement (8 chunks, 48 examples); fast_dev_run is a smoke test of the wiring.
    big = ProbeTask("sms_spam", "Message: {text}\nSpam? Answer:", {"ham": "no", "spam": "yes"}, num_examples=48)
    module = ForeignLM()
    probe = ForgettingProbe(tokenizer="tiny-llama", num_chunks=8, chunk_tokens=32, top_k=8, probe_tasks=[big])
    rows = []  # sequences the LM reads in eval mode: the probes' (training runs in train mode)
    module.lm.register_forward_hook(lambda lm, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0])
                                    if not lm.training else None, with_kwargs=True)
    with caplog.at_level("INFO"):
        L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=tmp_path, callbacks=[probe]).fit(module, _loader())
    measurements = 1 + len(probe.history)  # the base, then each logged row
    assert sum(rows) == measurements * (1 + 2)  # 1 text chunk + 2 spam examples each
    assert [r.message for r in caplog.records if r.message.startswith("ForgettingProbe: fast_dev_run")] == [
        "ForgettingProbe: fast_dev_run, so 1 text chunk and 2 examples per probe task are measured "
        "(a smoke test: the numbers mean nothing)."]
