"""benchmarks/generate.py on tiny-llama: both arms decode the same prompts to the same texts and count the same tokens.

Mechanics only (2 prompts, 4 new tokens); no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from lightning_peft import zoo
from tests.benchmarks.harness import BENCHMARKS, load_script, run_script

SCRIPT = BENCHMARKS / "generate.py"


@pytest.fixture
def harness(monkeypatch):
    return load_script("generate.py", monkeypatch)


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_both_arms_write_the_same_prompts_and_decode_the_same_texts(harness):
    torch.set_num_threads(1)
    questions = harness.pick_questions(2, seed=0)
    assert len(set(questions)) == 2 and questions == harness.pick_questions(2, seed=0)
    folder = str(zoo.resolve("tiny-llama"))
    for batch_size in (1, 2):
        ours = harness.run_ours(folder, questions, max_new_tokens=4, batch_size=batch_size)
        plain = harness.run_plain(folder, questions, max_new_tokens=4, batch_size=batch_size)
        assert ours["prompts"] == plain["prompts"] and "<|im_start|>user" in ours["prompts"][0]  # the chat template
        assert ours["texts"] == plain["texts"] and len(ours["texts"]) == 2
        assert ours["tokens_per_prompt"] == plain["tokens_per_prompt"]
        for result in (ours, plain):
            assert all(1 <= n <= 4 for n in result["tokens_per_prompt"]) and result["tokens"] > 0
            assert result["seconds"] > 0 and result["tokens_per_sec"] > 0
            assert result["dtype"] == "torch.float32" and result["threads"] == 1


def test_tokens_are_counted_up_to_and_including_the_first_eos(harness):
    new = torch.tensor([[5, 6, 2, 2], [7, 8, 9, 10], [2, 2, 2, 2]])
    assert harness.count_new_tokens(new, {2}) == [3, 4, 1]
    assert harness.count_new_tokens(new, {2, 9}) == [3, 3, 1]


def test_a_merged_lora_folder_runs_both_arms_alike(harness, tmp_path):
    torch.set_num_threads(1)
    folder = harness.merged_folder("tiny-llama", root=tmp_path)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert harness.merged_folder("tiny-llama", root=tmp_path) == folder  # built once, then reused
    questions = harness.pick_questions(2, seed=1)
    ours = harness.run_ours(str(folder), questions, max_new_tokens=4, batch_size=2)
    plain = harness.run_plain(str(folder), questions, max_new_tokens=4, batch_size=2)
    assert ours["texts"] == plain["texts"] and ours["tokens"] == plain["tokens"] > 0


@pytest.mark.timeout(600)
def test_the_script_interleaves_fresh_processes_and_writes_the_result(tmp_path):
    output = tmp_path / "generate.json"
    stdout = run_script("generate.py", [
        "--model", "tiny-llama", "--prompts", "2", "--max_new_tokens", "4", "--batch_sizes", "1", "2",
        "--repeats", "1", "--threads", "1", "--busy_threshold", "1", "--max_wait", "0", "--output", str(output),
        "--workdir", str(tmp_path / "runs")])
    assert "ratio vs model.generate" in stdout and "texts identical" in stdout

    result = json.loads(output.read_text())
    assert "--prompts 2" in result["command"] and result["settings"]["threads"] == 1
    assert result["texts_match"] is True and result["token_counts_match"] is True
    assert {(r["batch_size"], r["arm"]) for r in result["rows"]} == {
        (b, arm) for b in (1, 2) for arm in ("lightning-peft", "model.generate")}
    for row in result["rows"]:
        assert row["tokens"] > 0 and row["tokens_per_sec_median"] > 0 and len(row["tokens_per_sec_runs"]) == 1
        assert row["tokens_per_sec_min"] <= row["tokens_per_sec_median"] <= row["tokens_per_sec_max"]
        assert row["busy_runs"] == 0 and 0 <= row["others_cpu_max"] <= 1  # --busy_threshold 1: no run is busy
    for batch_size in (1, 2):
        ours, plain = (next(r for r in result["rows"] if r["batch_size"] == batch_size and r["arm"] == arm)
                       for arm in ("lightning-peft", "model.generate"))
        ratio = ours["tokens_per_sec_median"] / plain["tokens_per_sec_median"]
        assert ours["ratio_vs_model_generate"] == pytest.approx(ratio)
        assert plain["ratio_vs_model_generate"] == 1.0 and ours["tokens"] == plain["tokens"]
    # one fresh process per (arm, batch size, repeat); the arms swap who goes first from one batch size to the next
    assert [(r["batch_size"], r["arm"]) for r in result["runs"]] == [
        (1, "lightning-peft"), (1, "model.generate"), (2, "model.generate"), (2, "lightning-peft")]
    assert len(list((tmp_path / "runs").glob("*.log"))) == 4
    assert set(result["answers"]) == {"1", "2"} and len(result["answers"]["1"]) == 2
    assert result["discarded_busy_runs"] == []


def test_the_timed_window_tells_other_processes_cpu_from_its_own(harness):
    spin = "import time\nend = time.perf_counter() + 1.5\nwhile time.perf_counter() < end: pass"
    with harness.TimedWindow() as window:
        subprocess.run([sys.executable, "-c", spin], check=True)  # another process holds a core
    assert window.others_cpu is not None and window.others_cpu >= 0.3 and window.cpu_seconds < 0.5
    with harness.TimedWindow() as window:
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:  # this process's own work is not the others'
            pass
    assert window.cpu_seconds >= 0.5 and window.seconds >= 1.0


@pytest.mark.parametrize("argv, message", [
    (["--batch_sizes", "1", "1"], "distinct positive integers"),
    (["--prompts", "0"], "must be a positive integer"),
    (["--busy_threshold", "1.5"], "--busy_threshold must be in [0, 1]"),
])
def test_bad_options_are_refused_in_one_line(argv, message, capsys, harness):
    with pytest.raises(SystemExit):
        harness.parse_args(argv)
    assert message in capsys.readouterr().err
