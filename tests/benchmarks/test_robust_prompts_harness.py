"""benchmarks/robust_prompts.py: one seed, both arms and the base, 2 steps on tiny-llama through the real CLI."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.harness import run_script


@pytest.mark.timeout(600)
def test_both_arms_and_the_base_are_scored_on_seen_and_unseen_phrasings(tmp_path):
    output = tmp_path / "result.json"
    stdout = run_script("robust_prompts.py", [
        "--backbone", "tiny-llama", "--seeds", "0", "--steps", "2", "--test_examples", "8", "--batch_size", "4",
        "--output", str(output), "--workdir", str(tmp_path / "runs")], OMP_NUM_THREADS="1")
    result = json.loads(output.read_text())
    assert set(result["table"]) == {"base (zero-shot)", "consistency", "augmented"}
    for row in result["table"].values():
        for group in ("seen", "unseen"):
            assert 0.0 <= row[f"{group}_mean"]["mean"] <= 1.0 and len(row[f"{group}_mean"]["per_seed"]) == 1
    runs = {(run["arm"], run["seed"]) for run in result["runs"]}
    assert {("consistency", 0), ("augmented", 0)} <= runs
    templates = result["settings"]["seen_templates"] + result["settings"]["unseen_templates"]
    scored = next(run for run in result["runs"] if run["arm"] == "consistency")["accuracy"]
    assert set(scored) == set(templates)  # every phrasing scored for every run
    assert "consistency" in stdout and "augmented" in stdout
