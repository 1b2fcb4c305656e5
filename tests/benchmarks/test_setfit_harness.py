"""benchmarks/setfit.py: the `setfit` library gets exactly our shots, and runs from separate processes add up."""

from __future__ import annotations

import json

import pytest

from lightning_peft import zoo
from tests.benchmarks.harness import load_script


@pytest.fixture
def harness(monkeypatch):
    return load_script("setfit.py", monkeypatch)


def test_the_library_arm_gets_the_texts_of_our_shots_and_test_split(harness):
    given = harness.shot_and_test_texts("sms_spam", seed=0, shots=8, max_length=256)
    data = harness.setfit_data("sms_spam", seed=0, shots=8, max_length=256)
    data.setup()
    tokenizer = zoo.load_tokenizer("minilm-l6")
    for name, split in (("shots", "train"), ("test", "test")):
        examples = data.datasets[split]
        assert given[name]["labels"] == [examples[i]["label"] for i in range(len(examples))]
        sample = range(0, len(examples), max(1, len(examples) // 16))  # every shot; 16 of the test messages
        ids = tokenizer([given[name]["texts"][i] for i in sample], truncation=True, max_length=256)["input_ids"]
        assert ids == [examples[i]["input_ids"] for i in sample]
    assert sorted(given["shots"]["labels"]) == [0] * 8 + [1] * 8 and len(given["test"]["texts"]) == 1000


def test_runs_recorded_by_separate_processes_are_all_kept(harness, tmp_path):
    path = tmp_path / "setfit_sms_spam.json"
    harness.record(path, "ours", 0, {"acc": 0.9, "f1": 0.8, "train_seconds": 10.0})
    harness.record(path, "setfit", 0, {"acc": 0.8, "f1": 0.7, "train_seconds": 20.0})
    results = harness.record(path, "ours", 1, {"acc": 0.7, "f1": 0.6, "train_seconds": 30.0})
    assert results == json.loads(path.read_text()) and set(results) == {"ours", "setfit"}
    assert results["ours"]["summary"] == {"acc": "80.0 ± 14.1", "f1": "70.0 ± 14.1", "train_seconds": "20.0 ± 14.1"}
