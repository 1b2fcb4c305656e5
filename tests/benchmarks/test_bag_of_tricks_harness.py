"""benchmarks/bag_of_tricks.py: each technique's gain is paired by seed against its own control."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_peft.cli import main
from tests.benchmarks.harness import load_script

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("arm, calibration, pool", [("prompt-based fine-tuning", None, "train"),
                                                     ("self-calibrated", 0.9, "train"),
                                                     ("LM on the training pool", None, "train"),
                                                     ("transductive", None, "test")])
def test_each_arm_resolves_to_its_technique_through_the_cli(monkeypatch, capsys, arm, calibration, pool):
    """The arm's command line, as the benchmark passes it, switches self-calibration and the pool's split as
    the arm's name says (the plain arm and the control differ from their technique by that alone)."""
    harness = load_script("bag_of_tricks.py", monkeypatch)
    recipe, switch = harness.ARMS[arm]
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / recipe), *switch, "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["init_args"]["self_calibration"] == calibration
    assert resolved["data"]["init_args"]["pool_from"] == pool
