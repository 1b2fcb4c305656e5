"""benchmarks/diversity.py: the summary over seeds (mean ± std per arm, possibility minus SFT paired by seed)."""

from __future__ import annotations

import pytest

from tests.benchmarks.harness import load_script


def test_arms_are_summarised_over_seeds_and_paired_by_seed(monkeypatch):
    harness = load_script("diversity.py", monkeypatch)

    def result(distinct_2: float) -> dict:
        return {metric: (distinct_2 if metric == "distinct_2" else 1.0) for metric in harness.METRICS}

    runs = {42: {"sft": result(0.90), "possibility": result(0.95)}, 1: {"sft": result(0.92), "possibility": result(0.91)}}
    summary = harness.summarise(runs)
    assert summary["sft"]["distinct_2"] == pytest.approx((0.91, 0.01414), abs=1e-4)
    assert summary["possibility_minus_sft"]["distinct_2"] == pytest.approx((0.02, 0.04243), abs=1e-4)  # +0.05, -0.01
    assert summary["possibility_minus_sft"]["val_perplexity"] == (0.0, 0.0)
    assert "possibility_minus_sft" not in harness.summarise({42: {"base": result(0.5)}})


def test_the_plot_draws_every_seed_across_the_arms(monkeypatch, tmp_path):
    import json

    from PIL import Image

    harness = load_script("diversity.py", monkeypatch)
    runs = {str(seed): {arm: {metric: 0.5 + 0.01 * seed for metric in harness.METRICS} for arm in ("sft", "possibility")}
            for seed in (42, 1)}
    results = tmp_path / "diversity.json"
    results.write_text(json.dumps({"runs": runs}))
    harness.plot(results, tmp_path / "seeds.png")
    assert Image.open(tmp_path / "seeds.png").size[0] > 1000  # four panels side by side
