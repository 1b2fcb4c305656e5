"""ContrastiveModule + SetFitData on a tiny random BERT: the two phases, checkpoints, CLI metrics, refusals."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lightning_peft.cli import main
from lightning_peft.cli.rebuild import module_from_checkpoint
from lightning_peft.inference.loading import load_folder
from lightning_peft.data import ClassificationData, DataConfigError, SetFitData
from lightning_peft.methods import FullFineTuning
from lightning_peft.modules import ContrastiveModule
from lightning_peft.tasks import TaskConfigError
from lightning_peft.tasks.setfit import EncoderWithHead
from tests.helpers import LABELS, write_jsonl

BACKBONE = "tiny-bert"


@pytest.fixture
def data_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "two_classes.jsonl")


def _data(path: Path, **kwargs) -> SetFitData:
    """4 shots per class (8 shots: 40 oversampled pairs, 5 pair batches of 8), head batches of 4."""
    settings = dict(tokenizer=BACKBONE, shots_per_class=4, val_size=8, test_size=8, max_length=16, batch_size=8,
                    head_batch_size=4, head_epochs=1)
    return SetFitData(str(path), **{**settings, **kwargs})


def _module(method=None) -> ContrastiveModule:
    return ContrastiveModule(backbone=BACKBONE, method=method or FullFineTuning(), label_names=LABELS,
                             optimizer=partial(torch.optim.AdamW, lr=1e-2))


def _fit(module, data, max_steps: int) -> dict[str, torch.Tensor]:
    """Train `max_steps` steps and return every weight as it was before training."""
    module.configure_model()
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(module, datamodule=data)
    return before


def _changed(module, before) -> set[str]:
    return {name for name, p in module.model.named_parameters() if not torch.equal(p, before[name])}


def test_training_batches_are_pair_batches_then_shot_batches(data_file):
    data = _data(data_file)
    data.setup()
    batches = list(data.train_dataloader())
    assert len(data.pairs) == 40 and data.body_steps == 5 and len(batches) == 5 + 2
    body, head = batches[:5], batches[5:]
    assert all(b["phase"] == "body" and b["input_ids"].shape[0] == 2 * b["similarity"].shape[0] for b in body)
    assert sum(int(b["similarity"].sum()) for b in body) == 20  # as many positive pairs as negative ones
    assert all(b["phase"] == "head" for b in head) and sorted(torch.cat([b["labels"] for b in head]).tolist()) == [0] * 4 + [1] * 4
    data.load_state_dict({"epoch": 0, "batches_processed": 3})  # a run resumed after 3 steps skips them
    resumed = list(data.train_dataloader())
    assert len(resumed) == 4 and torch.equal(resumed[0]["input_ids"], batches[3]["input_ids"])


def test_a_body_step_changes_the_body_not_the_head(data_file):
    module = _module()
    before = _fit(module, _data(data_file), max_steps=1)
    changed = _changed(module, before)
    assert any(name.startswith("encoder.layer.") for name in changed)
    assert not {name for name in changed if name.startswith("setfit_head.")}
    assert set(module.groups) == {"model", "head"} and set(module.groups["head"]) == {"setfit_head.weight", "setfit_head.bias"}


def test_the_head_phase_trains_the_head_only_to_the_logistic_regression_optimum(data_file):
    """Default head: scikit-learn's LogisticRegression objective (C=1), fitted with L-BFGS on all shots at once."""
    module, data = _module(), _data(data_file, body_epochs=0, head_batch_size=None)
    before = _fit(module, data, max_steps=1)
    assert _changed(module, before) == {"setfit_head.weight", "setfit_head.bias"}
    (batch,) = list(data.train_dataloader())
    module.eval()
    embeddings = module.task.embed(module.model, batch["input_ids"], batch["attention_mask"]).detach()
    head = module.model.setfit_head
    objective = torch.nn.functional.cross_entropy(head(embeddings), batch["labels"], reduction="sum") + (head.weight ** 2).sum()  # two classes
    gradients = torch.autograd.grad(objective, [head.weight, head.bias])
    assert max(float(g.abs().max()) for g in gradients) < 1e-3  # stationary: the optimum of a convex objective


def test_lora_body_checkpoints_adapter_and_head_and_cli_fit_test_writes_metrics(tmp_path, data_file):
    """fit + test from a YAML; the checkpoint is adapter + head; its export scores as the checkpoint does."""
    config = {
        "seed_everything": 0, "test_after_fit": True,
        "trainer": {"max_epochs": 1, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "lightning_peft.modules.ContrastiveModule", "init_args": {
            "backbone": BACKBONE, "head_fit": "gradient", "head_lr": 0.05,
            "method": {"class_path": "lightning_peft.methods.Lora",
                       "init_args": {"r": 4, "target_modules": ["query", "key", "value"]}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}}}},
        "data": {"class_path": "lightning_peft.data.SetFitData", "init_args": {
            "dataset": str(data_file), "shots_per_class": 4, "val_size": 8, "test_size": 8, "max_length": 16,
            "batch_size": 8, "head_batch_size": 4, "head_epochs": 2}},
    }
    path = tmp_path / "setfit.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["fit"]["global_step"] == 5 + 4
    assert {"test/acc", "test/f1"} <= set(metrics["test"]) and 0.0 <= metrics["test"]["test/acc"] <= 1.0
    (ckpt,) = tmp_path.rglob("last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k or "setfit_head.modules_to_save" in k for k in state), sorted(state)
    assert any("setfit_head" in k for k in state)
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "adapter")])
    module, exported = module_from_checkpoint(str(ckpt)), load_folder(tmp_path / "adapter", device="cpu", dtype="float32")
    module.eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])  # "[CLS] this is a test [SEP]", "[CLS] hello [SEP]"
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = module.task.scores(module.model, ids, mask)
        assert torch.allclose(exported.task.scores(exported.model, ids, mask), expected, atol=1e-6)


def test_a_decoder_only_backbone_is_refused_before_loading():
    with pytest.raises(TaskConfigError, match="not one .*decoder-only"):
        ContrastiveModule(backbone="smollm2-135m", label_names=LABELS)


@pytest.mark.parametrize("kwargs, words", [
    ({"shots_per_class": 30}, "shots_per_class=30 is more than"),  # the few-shot data's own check
    ({"sampling_strategy": "balanced"}, "sampling_strategy='balanced'"),
    ({"head_epochs": 0}, "head_epochs must be an integer >= 1"),
])
def test_bad_setfit_data_is_one_sentence(data_file, kwargs, words):
    with pytest.raises(DataConfigError, match=words):
        _data(data_file, **kwargs).setup()


def test_a_single_class_is_refused(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": "alpha"}) + "\n" for i in range(20)))
    with pytest.raises(DataConfigError, match="only one class"):
        _data(path, val_size=0, test_size=0).label_names


def test_a_merged_folder_loads_back_with_its_trained_head(tmp_path):
    """`lightning-peft merge` writes the head beside the encoder; AutoModel alone would drop it for a random one."""
    module = _module()
    module.configure_model()
    with torch.no_grad():
        module.model.setfit_head.weight.fill_(0.25)
    module.export_merged(tmp_path / "merged")
    loaded = EncoderWithHead.from_pretrained(str(tmp_path / "merged"), num_labels=len(LABELS))
    assert torch.equal(loaded.setfit_head.weight, torch.full_like(loaded.setfit_head.weight, 0.25))
    assert "pooler" not in dict(loaded.named_children()) or loaded.pooler is None  # unused, and random in a masked-LM folder


def test_data_without_setfit_batches_is_refused_at_setup(data_file):
    data = ClassificationData(str(data_file), tokenizer=BACKBONE, label_names=LABELS, val_size=8, test_size=8, max_length=16)
    with pytest.raises(TaskConfigError, match="use lightning_peft.data.SetFitData"):
        _fit(_module(), data, max_steps=1)


def test_the_cli_refuses_a_decoder_only_backbone_with_exit_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = Path(__file__).resolve().parents[2] / "configs" / "encoders" / "setfit_sms_spam.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--model.init_args.backbone", "smollm2-135m"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1 and "not one" in errors[0] and "minilm-l6" in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))
