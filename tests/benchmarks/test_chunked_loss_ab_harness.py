"""benchmarks/chunked_loss_ab.py on tiny-llama, in this process: both losses timed on the same batches, and they agree."""

from __future__ import annotations

import json
import sys

import pytest

from tests.benchmarks.harness import load_script


@pytest.mark.timeout(300)
def test_both_losses_are_timed_on_the_same_batches_and_agree(tmp_path, monkeypatch, capsys):
    output = tmp_path / "ab.json"
    script = load_script("chunked_loss_ab.py", monkeypatch)
    monkeypatch.setattr(sys, "argv", ["chunked_loss_ab.py", "--backbone", "tiny-llama", "--datasets", "trec6", "--precisions",
                                      "fp32", "--batch-size", "4", "--steps", "2", "--rounds", "1", "--output", str(output)])
    script.main()
    (row,) = json.loads(output.read_text())["rows"]
    assert (row["workload"], row["precision"]) == ("trec6", "fp32")
    assert 0 < row["labelled_fraction_of_positions"] < 0.5  # question prompts: few positions carry a label
    for loss in ("own loss (chunked_loss: false)", "auto (default)"):
        assert row[loss]["wall_s"] > 0 and row[loss]["cpu_s"] > 0
    assert row["speedup_wall"] == pytest.approx(row["own loss (chunked_loss: false)"]["wall_s"] / row["auto (default)"]["wall_s"])
    assert row["max_loss_difference"] < 1e-4  # the same loss, batch by batch
    assert "speedup (wall)" in capsys.readouterr().out
