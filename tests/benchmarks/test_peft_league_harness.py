"""benchmarks/peft_league.py: a 2-step league on tiny-bert through the CLI (a measured arm and a refused one),
resuming without running again, and the fairness of the composed configs (same data, recipe learning rates)."""

from __future__ import annotations

import importlib
import json

import pytest

from tests.benchmarks.harness import load_script

SMOKE = ["--settings", "minilm_sms_spam", "--arms", "full,prefix_tuning", "--seeds", "0", "--steps", "2",
         "--warmup_steps", "1", "--backbone", "tiny-bert", "--test_examples", "16"]


@pytest.fixture
def league(monkeypatch):
    """The driver, its runs made in this process (`peft_league_run.main` on the job and report files it writes):
    a run process would import Lightning and transformers again, about 20 s of CPU on a 2-core machine."""
    league = load_script("peft_league.py", monkeypatch)
    runner = load_script("peft_league_run.py", monkeypatch)
    ran = []

    def in_this_process(command, log, report, what):
        ran.append(what)
        runner.main(command[-2:])  # [.., job, report]: what the run process would get
        return 1.0

    monkeypatch.setattr(league, "run_arm_process", in_this_process)
    monkeypatch.setattr(league.signal, "signal", lambda *args: None)  # leave pytest's SIGTERM handler alone
    league.ran = ran
    return league


@pytest.mark.timeout(300)
def test_a_run_reports_what_a_user_reads_lists_a_refusal_and_resumes(league, tmp_path, capsys):
    output = tmp_path / "league.json"
    args = [*SMOKE, "--output", str(output), "--workdir", str(tmp_path / "runs")]
    league.main(args)
    stdout = capsys.readouterr().out
    setting = json.loads(output.read_text())["settings"]["minilm_sms_spam"]

    assert league.ran == ["minilm_sms_spam full seed 0", "minilm_sms_spam prefix_tuning seed 0"]
    assert setting["options"] == {"backbone": "tiny-bert", "steps": 2, "warmup_steps": 1, "test_examples": 16}
    full = setting["arms"]["full"]
    assert full["source"] == "configs/evaluation/forgetting_full_trec6.yaml"
    run = full["runs"]["0"]
    assert 0.0 <= run["test_acc"] <= 1.0 and 0.0 <= run["test_f1"] <= 1.0
    assert run["trainable_parameters"] == run["total_parameters"] > 0 and run["trainable_percent"] == 100
    assert run["steps"] == 2 and run["timed_steps"] == 1 and len(run["final_losses"]) == 2
    assert run["seconds_per_step"] > 0 and run["cpu_seconds_per_step"] > 0 and run["peak_rss_gb"] > 0
    # prefix tuning on a BERT classifier: the library's own sentence, once for all seeds
    assert "runs" not in setting["arms"]["prefix_tuning"]
    assert "past_key_values" in setting["arms"]["prefix_tuning"]["refused"]
    summary = setting["summary"]["full"]
    assert summary["test_acc"] == {"mean": run["test_acc"], "std": 0.0} and summary["seeds"] == ["0"]
    assert summary["vs_full"] == {"seconds_per_step": 1.0, "peak_rss_gb": 1.0}
    assert "accuracy %" in stdout and "peak RSS GB" in stdout
    assert "n/a (refused: peft's prefix tuning" in stdout

    league.main(args)  # everything is in the file already: nothing runs again
    assert len(league.ran) == 2 and "n/a (refused" in capsys.readouterr().out
    assert json.loads(output.read_text())["settings"]["minilm_sms_spam"]["arms"]["full"]["runs"]["0"] == run


def test_the_table_gives_mean_std_and_ratios_to_full_fine_tuning(monkeypatch):
    table = load_script("peft_league_table.py", monkeypatch)

    def run(acc, seconds, rss):
        return {"test_acc": acc, "test_f1": acc, "seconds_per_step": seconds, "peak_rss_gb": rss, "steps": 10,
                "trainable_parameters": 1000, "trainable_percent": 0.5}

    arms = {"full": {"runs": {"0": run(0.8, 2.0, 4.0), "1": run(0.9, 2.0, 4.0)}},
            "lora": {"runs": {"0": run(0.7, 1.0, 1.0), "1": run(0.9, 1.0, 3.0)}},
            "bitfit": {"refused": "BitFit trains bias terms, but LlamaForSequenceClassification has none."}}
    summary = table.summarise(arms)
    assert set(summary) == {"full", "lora"}
    assert summary["lora"]["test_acc"]["mean"] == pytest.approx(0.8)
    assert summary["lora"]["test_acc"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["lora"]["vs_full"] == {"seconds_per_step": 0.5, "peak_rss_gb": 0.5}
    rows = {row[0]: row for row in table.table_rows(arms, summary)}
    assert rows["lora"][3] == "80.0 ± 14.1" and rows["lora"][6] == "0.50"
    assert rows["bitfit"][-1] == "n/a (refused: BitFit trains bias terms, but LlamaForSequenceClassification has none.)"


def test_every_arm_gets_the_settings_data_and_its_recipes_learning_rate(league):
    arms = importlib.import_module("peft_league_arms")  # the tables the driver composes with
    for setting in arms.SETTINGS:
        configs = {arm: arms.compose(setting, arm, seed=1) for arm in arms.ARMS}
        texts = {name: {k: c["data"]["init_args"].get(k) for k in arms.SETTING_DATA_KEYS} for name, c in configs.items()}
        assert all(text == texts["full"] for text in texts.values()), setting  # the same texts and test split
        for name, config in configs.items():
            recipe = arms.ARMS[name].recipe
            if recipe:
                lr = arms.read_recipe(recipe)["model"]["init_args"]["optimizer"]["init_args"]["lr"]
                assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == lr, (setting, name)
    sms, trec = arms.compose("minilm_sms_spam", "lora", 0), arms.compose("smollm2_trec6", "lora", 0)
    assert sms["model"]["init_args"]["method"]["init_args"]["target_modules"] == ["query", "value"]  # BERT's names
    assert trec["model"]["init_args"]["method"]["init_args"]["target_modules"] == ["q_proj", "v_proj"]
    assert sms["model"]["init_args"]["group_lr"] == {"head": 0.005} and "group_lr" not in trec["model"]["init_args"]
    assert "group_lr" not in arms.compose("minilm_sms_spam", "full", 0)["model"]["init_args"]  # one group, "model"
    prompt = arms.compose("minilm_bbc_news", "prompt_tuning", 0)
    assert prompt["model"]["init_args"]["method"]["init_args"]["init_text"] == arms.SETTINGS["minilm_bbc_news"].instruction
    schedule = prompt["trainer"]["callbacks"][0]
    assert schedule["class_path"] == arms.SCHEDULE and schedule["init_args"]["groups"]["prompt"]["lr"] == 0.3
    assert schedule["init_args"]["default"] == {"decay": "constant"}  # the new head: constant, as in the other arms
    assert "default" not in arms.compose("smollm2_trec6", "prompt_tuning", 0)["trainer"]["callbacks"][0]["init_args"]
    setfit = arms.compose("minilm_bbc_news", "setfit", 2)
    assert setfit["data"]["class_path"] == "lightning_peft.data.SetFitData" and setfit["data"]["init_args"]["shot_seed"] == 2
    # every seed keeps the split and shuffles its own batch order; seed 0 keeps the recipe's order
    orders = [arms.compose("smollm2_trec6", "full", seed)["data"]["init_args"] for seed in (0, 1, 2)]
    assert [o["order_seed"] for o in orders] == [42, 43, 44] and {o.get("split_seed", 42) for o in orders} == {42}


BAD_OPTIONS = {"--arms full,nope": "unknown: nope", "--arms full,full": "at most once",
               "--seeds 0,x": "comma-separated integers", "--steps 3": "leaves no step to time",
               "--test_examples 0": "must be a positive integer"}


def test_bad_options_are_refused_in_one_line(capsys, league):
    for options, message in BAD_OPTIONS.items():
        with pytest.raises(SystemExit):
            league.parse_args(options.split())
        assert message in capsys.readouterr().err, options


def test_a_results_file_made_with_other_options_is_not_mixed_into(league, tmp_path):
    path = tmp_path / "league.json"
    held = {"backbone": "minilm-l6", "steps": 100, "warmup_steps": 3, "test_examples": None}
    path.write_text(json.dumps({"settings": {"minilm_sms_spam": {"options": held, "arms": {}}}}))
    assert league.load_results(path, league.parse_args(["--settings", "minilm_sms_spam", "--steps", "100"]))
    with pytest.raises(SystemExit, match="holds minilm_sms_spam runs made with"):
        league.load_results(path, league.parse_args(["--settings", "minilm_sms_spam", "--steps", "50"]))


@pytest.mark.timeout(300)
def test_setfit_runs_its_planned_pair_and_head_batches(league, tmp_path):
    """SetFit's head batches make no optimizer step (the training step returns None): the run still reports."""
    output = tmp_path / "league.json"
    league.main([*SMOKE[:2], "--arms", "setfit", *SMOKE[4:], "--output", str(output)])
    run = json.loads(output.read_text())["settings"]["minilm_sms_spam"]["arms"]["setfit"]["runs"]["0"]

    assert league.ran == ["minilm_sms_spam setfit seed 0"]
    assert run["steps"] > run["timed_steps"] > 0 and run["seconds_per_step"] > 0
    assert 0.0 <= run["test_acc"] <= 1.0 and run["trainable_parameters"] > 0
