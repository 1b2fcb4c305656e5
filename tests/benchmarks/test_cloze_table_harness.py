"""benchmarks/cloze.py: the family's table reads each claim's results file; --collect runs nothing."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.harness import load_script


def test_pet_row_reports_its_share_of_the_supervised_f1(monkeypatch):
    harness = load_script("cloze.py", monkeypatch)
    stage = {"test/f1": {"mean": 0.9, "std": 0.01}}
    rows = harness.pet_rows({"pet": {"ensemble": stage, "classifier": stage},
                             "supervised": [{"test/f1": 0.95}, {"test/f1": 0.85}]})
    assert [row[3] for row in rows] == ["100.0% of supervised (claim: >= 90%)"] * 2
    assert rows[1][1] == "PET classifier 0.900 ± 0.010" and rows[1][2] == "supervised 0.900 ± 0.071"


def test_collect_builds_the_table_from_results_without_running_a_claim(monkeypatch, tmp_path, capsys):
    harness = load_script("cloze.py", monkeypatch)
    results = tmp_path / "pcp.json"
    results.write_text(json.dumps({"metrics": {"test/acc": {"with_mean": 0.77, "with_std": 0.02, "without_mean": 0.68,
                                                            "without_std": 0.02, "gain_mean": 0.09, "gain_std": 0.03}}}))

    def must_not_run(out):
        raise AssertionError("--collect ran a benchmark")

    monkeypatch.setitem(harness.CLAIMS, "pcp", harness.Claim("PCP helps", must_not_run, results, harness.pcp_rows))
    monkeypatch.setattr("sys.argv", ["cloze.py", "--collect", "--claims", "pcp"])
    harness.main()
    printed = capsys.readouterr().out
    assert "PCP + prompt-based 0.770 ± 0.020" in printed and "+9.0 ± 3.0 points" in printed


def test_collect_names_the_command_for_a_claim_without_results(monkeypatch, tmp_path):
    harness = load_script("cloze.py", monkeypatch)
    missing = harness.Claim("PCP helps", lambda out: None, tmp_path / "absent.json", harness.pcp_rows)
    monkeypatch.setitem(harness.CLAIMS, "pcp", missing)
    monkeypatch.setattr("sys.argv", ["cloze.py", "--collect", "--claims", "pcp"])
    with pytest.raises(SystemExit, match="absent.json does not exist: run `python benchmarks/cloze.py --claims pcp`"):
        harness.main()
