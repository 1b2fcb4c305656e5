"""benchmarks/list_selftraining.py: both arms run through the CLI, and LiST's gain is paired by seed."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.harness import load_script, run_script


def test_the_gain_row_pairs_the_arms_seed_by_seed(monkeypatch):
    harness = load_script("list_selftraining.py", monkeypatch)
    by_seed = {0: {"zero-shot": {"acc": 0.3, "f1": 0.2}, "prompt-based fine-tuning": {"acc": 0.60, "f1": 0.5},
                   "LiST": {"acc": 0.70, "f1": 0.6}},
               1: {"zero-shot": {"acc": 0.3, "f1": 0.2}, "prompt-based fine-tuning": {"acc": 0.80, "f1": 0.7},
                   "LiST": {"acc": 0.80, "f1": 0.7}}}
    rows = {row[0]: row[2:] for row in harness.table(by_seed)}
    assert rows["prompt-based fine-tuning"] == ("0.700 ± 0.141", "0.600 ± 0.141")
    assert rows["LiST - prompt-based fine-tuning (paired)"] == ("+0.050 ± 0.071", "+0.050 ± 0.071")  # not 0.75 - 0.70 ± pooled
    assert rows["zero-shot"] == ("0.300 ± 0.000", "0.200 ± 0.000")
    alone = {seed: {arm: scores[arm] for arm in ("zero-shot", "LiST")} for seed, scores in by_seed.items()}
    assert [row[0] for row in harness.table(alone)] == ["zero-shot", "LiST"]  # one arm: no paired row


@pytest.mark.slow
def test_both_arms_run_from_the_recipe_on_a_tiny_model(tmp_path):
    results = tmp_path / "list.json"
    run_script("list_selftraining.py", [
        "--seeds", "0", "--output", str(tmp_path / "runs"), "--results", str(results), "--",
        "--model.init_args.backbone", "tiny-llama", "--trainer.max_steps", "3", "--model.init_args.teacher_steps", "1",
        "--model.init_args.refresh_every", "1", "--trainer.limit_val_batches", "0", "--data.init_args.shots_per_class", "2",
        "--data.init_args.max_unlabelled", "16", "--data.init_args.max_eval_examples", "8"])
    scores = json.loads(results.read_text())["scores"]["0"]
    assert set(scores) == {"zero-shot", "prompt-based fine-tuning", "LiST"}
    configs = {arm: next((tmp_path / "runs" / arm).rglob("config.yaml")).read_text() for arm in ("LiST", "prompt-based_fine-tuning")}
    assert "SelfTrainingModule" in configs["LiST"] and "AdapterModule" in configs["prompt-based_fine-tuning"]
    assert "teacher_steps" not in configs["prompt-based_fine-tuning"]
