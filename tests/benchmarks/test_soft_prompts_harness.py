"""benchmarks/soft_prompts.py: a 3-step run of prompt tuning and DePT on tiny-llama through the real CLI."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.harness import BENCHMARKS, load_script, run_script

SCRIPT = BENCHMARKS / "soft_prompts.py"


@pytest.fixture
def harness(monkeypatch):
    return load_script("soft_prompts.py", monkeypatch)


@pytest.mark.timeout(600)
def test_two_arms_report_accuracy_speed_memory_and_ratios(tmp_path):
    output = tmp_path / "result.json"
    stdout = run_script("soft_prompts.py", [
        "--backbone", "tiny-llama", "--steps", "3", "--arms", "prompt_tuning", "dept", "--test_examples", "16",
        "--batch_size", "4", "--validate", "--split_seed", "3", "--output", str(output), "--workdir", str(tmp_path / "runs")],
        OMP_NUM_THREADS="1")
    result = json.loads(output.read_text())

    assert [row["arm"] for row in result["rows"]] == ["prompt_tuning", "dept"]
    assert all(0.0 <= row["val_acc"] <= 1.0 for row in result["rows"])  # --validate: scored after the last step
    assert "--steps 3" in result["command"] and result["settings"]["backbone"] == "tiny-llama"
    assert result["settings"]["split_seed"] == 3  # the real CLI accepted the data's split seed
    pt, dept = result["rows"]
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

    assert result["baseline"] == "prompt_tuning" and set(result["ratios"]) == {"dept"}
    ratios = result["ratios"]["dept"]
    assert ratios["seconds_per_step"] == pytest.approx(dept["seconds_per_step"] / pt["seconds_per_step"])
    assert ratios["peak_memory_gb"] == pytest.approx(dept["peak_memory_gb"] / pt["peak_memory_gb"])
    assert ratios["layer_seq_len"] < 1
    assert "ratios vs prompt_tuning" in stdout and "dept" in stdout


def test_ratios_divide_by_the_baseline_and_skip_missing_values(harness):
    rows = [{"arm": "prompt_tuning", **dict.fromkeys(harness.RATIO_FIELDS, 2.0), "train_increase_gb": None},
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


def test_split_seed_reaches_the_data_only_when_given(harness, tmp_path):
    def data_seed(argv):
        command = harness.arm_command("dept", harness.parse_args(argv), tmp_path, tmp_path / "report.json")
        flags = [i for i, part in enumerate(command) if part == "--data.init_args.split_seed"]
        return [command[i + 1] for i in flags]

    assert data_seed([]) == []  # the recipe's own split
    assert data_seed(["--split_seed", "2", "--seed", "1"]) == ["2"]
