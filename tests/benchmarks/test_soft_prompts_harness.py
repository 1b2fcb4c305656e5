"""benchmarks/soft_prompts.py: a 3-step run of prompt tuning and DePT (and the zero-shot row) on tiny-llama through the real CLI."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.harness import BENCHMARKS, load_script, run_script

SCRIPT = BENCHMARKS / "soft_prompts.py"


@pytest.fixture
def harness(monkeypatch):
    return load_script("soft_prompts.py", monkeypatch)


@pytest.mark.timeout(600)
def test_two_arms_report_accuracy_speed_memory_ratios_and_a_zero_shot_row(tmp_path):
    output, runs = tmp_path / "result.json", tmp_path / "runs"
    stdout = run_script("soft_prompts.py", [
        "--backbone", "tiny-llama", "--steps", "3", "--arms", "prompt_tuning", "dept", "--test_examples", "16",
        "--batch_size", "4", "--validate", "--split_seeds", "3", "--output", str(output), "--workdir", str(runs)],
        OMP_NUM_THREADS="1")
    result = json.loads(output.read_text())

    assert [split["split_seed"] for split in result["splits"]] == [3]
    assert "--steps 3" in result["command"] and result["settings"]["backbone"] == "tiny-llama"
    split = result["splits"][0]
    assert [row["arm"] for row in split["rows"]] == ["zero_shot", "prompt_tuning", "dept"]
    zero = split["rows"][0]
    assert zero["steps"] == 0 and 0.0 <= zero["test_acc"] <= 1.0 and zero["seconds_per_step"] is None
    assert all(0.0 <= row["val_acc"] <= 1.0 for row in split["rows"][1:])  # --validate: scored after the last step
    for arm in ("zero_shot", "prompt_tuning", "dept"):  # the real CLI read the split seed in every run
        assert "split_seed: 3" in (runs / "split3" / arm / "config.yaml").read_text()
    summary = result["summary"]
    assert set(summary) == {"zero_shot", "prompt_tuning", "dept"} and "ratios" not in summary["zero_shot"]
    assert summary["dept"]["test_acc"]["mean"] == split["rows"][2]["test_acc"] and summary["dept"]["test_acc"]["std"] is None
    assert "over split seeds 3" in stdout

    pt, dept = result["splits"][0]["rows"][1:]
    for row in (pt, dept):
        assert row["steps"] == 3 and row["measured_steps"] == 1  # 2 warm-up steps are not timed
        assert row["seconds_per_step"] > 0 and row["tokens_per_sec"] > 0
        assert 0.0 <= row["test_acc"] <= 1.0
        assert row["peak_memory_gb"] > 0 and row["memory_kind"] == "process_rss"
        assert row["train_increase_gb"] >= 0  # training-time peak over the RSS when training started
    assert pt["trainable_parameters"] == 100 * 64  # 100 prompt vectors at d=64
    assert dept["trainable_parameters"] == 60 * 64 + 64 * 36 + 36 * 64  # m*d + s*r + r*d
    # Same data and seed: the same inputs; the first layer sees them behind 100 vs 60 prompt positions.
    assert pt["input_tokens"] == dept["input_tokens"]
    assert pt["layer_seq_len"] - dept["layer_seq_len"] == pytest.approx(40)

    assert result["baseline"] == "prompt_tuning" and set(result["splits"][0]["ratios"]) == {"dept"}
    ratios = result["splits"][0]["ratios"]["dept"]
    assert ratios["seconds_per_step"] == pytest.approx(dept["seconds_per_step"] / pt["seconds_per_step"])
    assert ratios["peak_memory_gb"] == pytest.approx(dept["peak_memory_gb"] / pt["peak_memory_gb"])
    assert ratios["layer_seq_len"] < 1
    assert "ratios vs prompt_tuning" in stdout and "dept" in stdout


def test_summary_over_splits_gives_means_sample_stds_gains_over_zero_shot_and_ratio_means(harness):
    def split(seed, zero, pt, dept, pt_time, dept_time):
        rows = [{"arm": "zero_shot", **dict.fromkeys(harness.RATIO_FIELDS), "test_acc": zero},
                {"arm": "prompt_tuning", **dict.fromkeys(harness.RATIO_FIELDS, 1.0), "test_acc": pt, "seconds_per_step": pt_time},
                {"arm": "dept", **dict.fromkeys(harness.RATIO_FIELDS, 1.0), "test_acc": dept, "seconds_per_step": dept_time}]
        return {"split_seed": seed, "rows": rows, "ratios": harness.ratios(rows, "prompt_tuning")}

    summary = harness.summarize([split(42, 0.3, 0.6, 0.5, 6.0, 3.0), split(1, 0.4, 0.2, 0.6, 5.0, 4.0)])
    assert summary["dept"]["test_acc_by_split"] == {42: 0.5, 1: 0.6}
    assert summary["dept"]["test_acc"]["mean"] == pytest.approx(0.55)
    assert summary["dept"]["test_acc"]["std"] == pytest.approx(0.0707107, rel=1e-5)  # sample std of 0.5, 0.6
    assert summary["dept"]["over_zero_shot"]["mean"] == pytest.approx(0.2)  # (0.5 - 0.3 + 0.6 - 0.4) / 2
    assert summary["dept"]["ratios"]["seconds_per_step"]["mean"] == pytest.approx((0.5 + 0.8) / 2)
    assert summary["prompt_tuning"]["test_acc"]["mean"] == pytest.approx(0.4) and "ratios" not in summary["prompt_tuning"]
    assert summary["zero_shot"]["seconds_per_step"] == {"mean": None, "std": None, "n": 0}


def test_ratios_divide_by_the_baseline_and_skip_missing_values(harness):
    rows = [{"arm": "zero_shot", **dict.fromkeys(harness.RATIO_FIELDS, 0.5)},
            {"arm": "prompt_tuning", **dict.fromkeys(harness.RATIO_FIELDS, 2.0), "train_increase_gb": None},
            {"arm": "dept", **dict.fromkeys(harness.RATIO_FIELDS, 1.0)}]
    ratios = harness.ratios(rows, "prompt_tuning")
    assert set(ratios) == {"dept"}
    assert ratios["dept"]["seconds_per_step"] == 0.5 and ratios["dept"]["train_increase_gb"] is None


@pytest.mark.parametrize("argv, message", [
    (["--steps", "2"], "leaves nothing to time"),
    (["--arms", "dept", "dept"], "names an arm twice"),
    (["--test_examples", "0"], "must be a positive integer"),
    (["--rates", "prompt"], "write each as GROUP=LR"),
    (["--rates", "prompt=-0.1"], "must be positive"),
    (["--split_seeds", "1", "1"], "names a split twice"),
    (["--split_seeds", "-1"], "must be non-negative"),
])
def test_bad_options_are_refused_in_one_line(argv, message, capsys, harness):
    with pytest.raises(SystemExit):
        harness.parse_args(argv)
    assert message in capsys.readouterr().err


def test_rates_set_the_named_groups_and_leave_the_others(harness, tmp_path):
    import yaml

    recipe = yaml.safe_load(harness.adjusted_recipe("dept", 1.0, {"lowrank": 1e-5}, tmp_path).read_text())
    groups = recipe["trainer"]["callbacks"][0]["init_args"]["groups"]
    shipped = yaml.safe_load((harness.RECIPES / "dept_trec6.yaml").read_text())["trainer"]["callbacks"][0]["init_args"]
    assert groups["lowrank"]["lr"] == 1e-5 and groups["prompt"]["lr"] == shipped["groups"]["prompt"]["lr"]
    scaled = yaml.safe_load(harness.adjusted_recipe("dept", 0.1, {"prompt": 0.2}, tmp_path).read_text())
    scaled_groups = scaled["trainer"]["callbacks"][0]["init_args"]["groups"]
    assert scaled_groups["prompt"]["lr"] == 0.2  # named: set after the scale
    assert scaled_groups["lowrank"]["lr"] == pytest.approx(0.1 * shipped["groups"]["lowrank"]["lr"])
    assert harness.adjusted_recipe("dept", 1.0, {}, tmp_path) == harness.RECIPES / "dept_trec6.yaml"


def test_rates_for_a_group_the_recipe_lacks_are_refused(harness, tmp_path):
    with pytest.raises(SystemExit, match="has no DualLRSchedule group"):
        harness.adjusted_recipe("prompt_tuning", 1.0, {"lowrank": 1e-5}, tmp_path)


def test_split_seeds_default_to_three_and_the_old_single_flag_still_works(harness, tmp_path):
    assert harness.parse_args([]).split_seeds == [42, 1, 2]  # 42: the recipes' own split
    assert harness.parse_args(["--split_seed", "2"]).split_seeds == [2]
    command = harness.arm_command("dept", harness.parse_args([]), 7, tmp_path, tmp_path / "report.json")
    flags = [i for i, part in enumerate(command) if part == "--data.init_args.split_seed"]
    assert [command[i + 1] for i in flags] == ["7"]
