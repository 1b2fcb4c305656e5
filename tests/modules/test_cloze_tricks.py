"""The GLUE bag of tricks on the cloze family: self-calibrated fine-tuning (ClozeModule.self_calibration) and
transductive fine-tuning (FewShotClassificationData.pool_from="test"); both off by default, PET's objective then."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import pytest
import torch

from lightning_peft.data import DataConfigError, FewShotClassificationData
from lightning_peft.methods import Lora, MethodConfigError
from lightning_peft.modules import ClozeModule
from lightning_peft.modules.cloze import class_scores, confident_pseudo_labels
from lightning_peft.tasks import ClozeClassification
from tests.tasks.test_cloze_training import LABELS


@pytest.fixture(scope="module")
def topics_file(tmp_path_factory):
    """12 short texts per class, with one cache (the tiny model, tokenized data) for the whole test module."""
    folder = tmp_path_factory.mktemp("topics")
    records = [{"text": f"{label} story {i} " + "word " * (i % 5), "label": label} for label in LABELS for i in range(12)]
    (folder / "topics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIGHTNING_PEFT_CACHE", str(folder / "cache"))
        yield str(folder / "topics.jsonl")


def _module(**options) -> ClozeModule:
    settings = {"alpha": 0.5, "unlabelled_batch_size": 4, **options}
    return ClozeModule(backbone="tiny-llama", task=ClozeClassification({"sport": "football"}), label_names=LABELS,
                       method=Lora(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"]),
                       optimizer=partial(torch.optim.AdamW, lr=1e-2), **settings)


def _data(path: str, **options) -> FewShotClassificationData:
    settings = {"template": "{text}\nTopic:", "shots_per_class": 2, "label_names": LABELS, "val_size": 0, "test_size": 0,
                "batch_size": 3, "max_length": 32, **options}
    return FewShotClassificationData(path, tokenizer="tiny-llama", **settings)


class Logged(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}


def _fit(root, module: ClozeModule, data: FewShotClassificationData) -> dict[str, float]:
    logged = Logged()
    L.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_steps=1, logger=False,
              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              num_sanity_val_steps=0, limit_val_batches=0, callbacks=[logged]).fit(module, datamodule=data)
    return logged.values


def _adapter(module: ClozeModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for group in module.groups.values() for name, p in group.items()}


def test_confident_pseudo_labels_keep_exactly_the_examples_at_or_above_the_threshold():
    probabilities = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    keep, labels = confident_pseudo_labels(probabilities.log(), threshold=0.8)
    assert keep.tolist() == [True, False, True, False]
    assert labels.tolist() == [0, 0, 1, 1]


def test_options_off_is_pets_objective_and_an_unmet_threshold_trains_the_same_weights(tmp_path, topics_file):
    L.seed_everything(0)
    plain = _module()
    values = _fit(tmp_path / "plain", plain, _data(topics_file))
    assert values["train/loss"] == pytest.approx(0.5 * values["train/ce"] + 0.5 * values["train/lm_loss"], rel=1e-6)
    assert "train/pseudo_labelled" not in values

    L.seed_everything(0)
    calibrated = _module(self_calibration=0.999)  # a random 3-class model is never this sure
    values = _fit(tmp_path / "calibrated", calibrated, _data(topics_file))
    assert values["train/pseudo_labelled"] == 0
    trained, reference = _adapter(calibrated), _adapter(plain)
    assert trained.keys() == reference.keys()
    assert all(torch.equal(trained[name], reference[name]) for name in reference)


def test_self_calibration_adds_only_the_pool_examples_the_model_is_sure_of(tmp_path, topics_file):
    data = _data(topics_file)
    data.setup("fit")
    probe = _module(alpha=1.0)
    probe.configure_model()  # a fresh LoRA adapter adds nothing: the model of the first step
    scores, _ = class_scores(probe.task, probe.model, data.ordered_dataloader("unlabelled"))
    confidence = scores.softmax(-1).max(-1).values.sort().values
    gaps = confidence.diff()
    widest = int(gaps.argmax())
    assert gaps[widest] > 1e-4  # far from float noise between two batchings of the same texts
    threshold = float(confidence[widest] + confidence[widest + 1]) / 2
    expected = int((confidence >= threshold).sum())

    module = _module(alpha=1.0, self_calibration=threshold, self_calibration_weight=0.5,
                     unlabelled_batch_size=data.pool_size())  # the first pool batch is the whole pool
    values = _fit(tmp_path, module, data)
    assert 0 < values["train/pseudo_labelled"] == expected < data.pool_size()
    assert values["train/loss"] == pytest.approx(values["train/ce"] + 0.5 * values["train/pseudo_ce"], rel=1e-6)
    assert "train/lm_loss" not in values  # alpha = 1: no language-model term, the pool feeds self-calibration only


def test_a_pool_from_the_test_split_holds_its_inputs_and_no_labels(tmp_path, topics_file):
    data = _data(topics_file, test_size=6, pool_from="test")
    data.setup("fit")
    pool, test = data.datasets["unlabelled"], data.datasets["test"]
    assert "label" not in pool.store  # nothing downstream can read a test label through the pool
    assert pool.indices == test.indices and len(data.datasets["train"]) == 2 * len(LABELS)
    assert [pool[i]["input_ids"] for i in range(len(pool))] == [test[i]["input_ids"] for i in range(len(test))]
    batch = next(iter(data.unlabelled_dataloader(batch_size=6)))
    assert set(batch) == {"input_ids", "attention_mask"}
    values = _fit(tmp_path, _module(), data)  # transductive: the LM term reads the test inputs
    assert values["train/lm_loss"] > 1.0


def test_a_test_pool_without_a_test_split_is_one_sentence_at_setup(topics_file):
    with pytest.raises(DataConfigError, match="pool_from='test' takes .* the test split is empty; give"):
        _data(topics_file, pool_from="test").setup("fit")
    with pytest.raises(DataConfigError, match="pool_from must be 'train'"):
        _data(topics_file, pool_from="validation")


def test_self_calibration_without_a_pool_is_one_sentence_before_weights_load(tmp_path, topics_file):
    module = _module(alpha=1.0, self_calibration=0.9)
    with pytest.raises(MethodConfigError, match=r"^self-calibration \(self_calibration=0.9\) reads the data's unlabelled pool, "
                                                r"but .* no unlabelled examples; .* set self_calibration: null\.$"):
        _fit(tmp_path, module, _data(topics_file, shots_per_class=12))
    assert module.model is None
    both = _module(alpha=0.5, self_calibration=0.9)  # one sentence names every setting that needs the pool
    with pytest.raises(MethodConfigError, match=r"^the language-model term \(alpha=0.5 gives it weight 0.5\) and "
                                                r"self-calibration \(self_calibration=0.9\) read .* or set alpha: 1 and "
                                                r"self_calibration: null\.$"):
        _fit(tmp_path, both, _data(topics_file, shots_per_class=12))


@pytest.mark.parametrize("options, match", [
    ({"self_calibration": 0}, "self_calibration must be a confidence threshold in \\(0, 1\\)"),
    ({"self_calibration": 1.0}, "self_calibration must be a confidence threshold in \\(0, 1\\)"),
    ({"self_calibration": True}, "self_calibration must be a confidence threshold in \\(0, 1\\)"),
    ({"self_calibration": 0.9, "self_calibration_weight": 0}, "self_calibration_weight must be a positive number"),
])
def test_bad_self_calibration_settings_are_refused(options, match):
    with pytest.raises(MethodConfigError, match=match):
        _module(**options)
