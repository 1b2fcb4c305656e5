"""benchmarks/sciprompt.py and cli_runs.py: seeds paired per dataset and shots, zero-shot rows, and resuming."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.harness import load_script


@pytest.fixture
def harness(monkeypatch):
    return load_script("sciprompt.py", monkeypatch)


def _row(arm, shots, seed, acc, f1=None, dataset="trec6"):
    return {"dataset": dataset, "arm": arm, "shots": shots, "seed": seed, "acc": acc, "f1": acc if f1 is None else f1}


def test_the_gain_is_paired_by_seed_and_only_over_seeds_both_arms_ran(harness):
    rows = [_row("single", 5, 0, 0.50), _row("weighted", 5, 0, 0.60),
            _row("single", 5, 1, 0.70), _row("weighted", 5, 1, 0.70),
            _row("single", 5, 2, 0.90),                              # its weighted twin is missing: left out
            _row("single", 0, 0, 0.30), _row("weighted", 0, 0, 0.20)]
    table = {(e["dataset"], e["shots"]): e for e in harness.summary(rows)}
    five = table[("trec6", 5)]
    assert five["seeds"] == [0, 1]
    assert five["single_acc"][0] == pytest.approx(0.60) and five["weighted_acc"][0] == pytest.approx(0.65)
    assert five["gain_acc"][0] == pytest.approx(0.05) and five["gain_acc"][1] == pytest.approx(0.0707, abs=1e-4)
    assert table[("trec6", 0)]["gain_acc"] == (pytest.approx(-0.10), 0.0)


def test_a_finished_run_is_read_back_and_an_unfinished_one_is_run_again(harness, tmp_path, monkeypatch):
    cli_runs = __import__("cli_runs")
    calls, run_dir = [], tmp_path / "trec6" / "single" / "k5-s0"

    def fake_run(command):
        calls.append(command)
        folder = run_dir / "version_1"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"fit": {}, "test_before_training": {"test/acc": 0.2, "test/f1": 0.1},
                                                         "test": {"test/acc": 0.6, "test/f1": 0.5}}))

    monkeypatch.setattr(cli_runs, "run", fake_run)
    stale = run_dir / "version_0"
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text(json.dumps({"fit": {}}))  # interrupted before its test
    scores = harness.arm_scores(tmp_path, "trec6", "single", 5, 0, zero_shot=True)
    assert scores == {5: {"test/acc": 0.6, "test/f1": 0.5}, 0: {"test/acc": 0.2, "test/f1": 0.1}}
    assert len(calls) == 1 and "--test_before_fit" in calls[0] and "configs/cloze/single_word_trec6.yaml" in calls[0]
    harness.arm_scores(tmp_path, "trec6", "single", 5, 0, zero_shot=True)
    assert len(calls) == 1  # finished: not run again
