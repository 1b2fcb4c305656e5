"""benchmarks/hft_replication.py: how a setting is chosen on validation, and how seeds are summarised."""

from __future__ import annotations

import pytest

from tests.benchmarks.harness import load_script


@pytest.fixture
def harness(monkeypatch):
    return load_script("hft_replication.py", monkeypatch)


def _row(method, lr, val, dialog, seed=0, steps=30, embeddings="freeze", **extra):
    return {"method": method, "lr": lr, "steps": steps, "embeddings": embeddings, "seed": seed,
            "trec_val_accuracy": val, "dialog_perplexity": dialog, **extra}


def test_the_choice_is_the_best_validation_accuracy_among_settings_that_keep_the_first_task(harness):
    rows = [_row("base", 0.0, 0.30, dialog=110.0, steps=0),
            _row("full", 2e-5, 0.60, dialog=40.0),
            _row("full", 1e-4, 0.80, dialog=55.0),
            _row("full", 3e-4, 0.90, dialog=5000.0),        # learned TREC-6 by unlearning dialog: not eligible
            _row("hft", 1e-4, 0.70, dialog=45.0),
            _row("hft", 1e-4, 0.95, dialog=45.0, seed=1),    # other seeds do not take part in the choice
            _row("hft", 1e-4, 0.99, dialog=45.0, embeddings="train"),  # a diagnostic, not a sweep setting
            _row("hft", 3e-4, 0.75, dialog=60.0, steps=60)]
    chosen = harness.best_settings(rows)
    assert chosen == {"full": {"method": "full", "lr": 1e-4, "steps": 30, "embeddings": "freeze"},
                      "hft": {"method": "hft", "lr": 3e-4, "steps": 60, "embeddings": "freeze"}}


def test_seeds_of_one_setting_are_summarised_as_mean_and_sample_std(harness):
    rows = [_row("hft", 1e-4, 0.7, 45.0, seed=s, trec_test_accuracy=acc, kl_from_base=0.1)
            for s, acc in ((0, 0.60), (1, 0.70), (2, 0.80))]
    rows.append(_row("base", 0.0, 0.3, 110.0, steps=0, trec_test_accuracy=0.27, kl_from_base=0.0))
    table = {entry["method"]: entry for entry in harness.summarise(rows)}
    hft = table["hft"]
    assert hft["seeds"] == [0, 1, 2] and hft["trec_val_accuracy_seed0"] == 0.7
    assert hft["trec_test_accuracy"] == pytest.approx((0.70, 0.10))
    assert hft["kl_from_base"] == pytest.approx((0.1, 0.0))
    assert "seconds_per_step" not in hft  # not in the rows: left out, not invented
    assert table["base"]["trec_test_accuracy"] == (0.27, 0.0)


def test_seed_s_uses_its_own_data_split_and_rows_off_the_protocol_are_kept_apart(harness):
    assert [harness.protocol_seed(s) for s in (0, 1, 2)] == [42, 43, 44]  # seed 0 is the sweep's split
    protocol = _row("full", 1e-4, 0.8, 50.0, seed=1, split_seed=43)
    draw_only = _row("hft", 1e-4, 0.8, 50.0, seed=1, split_seed=42)
    legacy_seed0 = _row("hft", 1e-4, 0.8, 50.0)  # written before rows carried their split: the sweep's 42
    assert harness.in_protocol(protocol) and harness.in_protocol(legacy_seed0) and not harness.in_protocol(draw_only)
    assert harness._key(draw_only) != harness._key({**draw_only, "split_seed": 43})
