"""benchmarks/bag_of_tricks.py: each technique's gain is paired by seed against its own control."""

from __future__ import annotations

from tests.benchmarks.harness import load_script


def _scores(plain: float, calibrated: float, lm_pool: float, transductive: float) -> dict[str, dict[str, float]]:
    return {arm: {"acc": acc, "f1": acc - 0.1} for arm, acc in (
        ("prompt-based fine-tuning", plain), ("self-calibrated", calibrated),
        ("LM on the training pool", lm_pool), ("transductive", transductive))}


def test_gains_are_paired_by_seed_against_each_techniques_control(monkeypatch):
    harness = load_script("bag_of_tricks.py", monkeypatch)
    rows = {row[0]: row[2:] for row in harness.table({0: _scores(0.60, 0.70, 0.65, 0.66),
                                                      1: _scores(0.80, 0.80, 0.85, 0.85)})}
    assert rows["self-calibrated"] == ("0.750 ± 0.071", "0.650 ± 0.071")
    assert rows["self-calibrated - prompt-based fine-tuning (paired)"][0] == "+0.050 ± 0.071"
    # transductive is measured against the same LM term on training text, not against the plain arm
    assert rows["transductive - LM on the training pool (paired)"][0] == "+0.005 ± 0.007"
    assert rows["transductive - prompt-based fine-tuning (paired)"][0] == "+0.055 ± 0.007"


def test_the_plain_arm_switches_self_calibration_off_and_the_control_reads_training_text(monkeypatch):
    harness = load_script("bag_of_tricks.py", monkeypatch)
    recipe, switch = harness.ARMS["prompt-based fine-tuning"]
    assert recipe == harness.ARMS["self-calibrated"][0] and switch == ["--model.init_args.self_calibration", "null"]
    recipe, switch = harness.ARMS["LM on the training pool"]
    assert recipe == harness.ARMS["transductive"][0] and switch[:2] == ["--data.init_args.pool_from", "train"]
