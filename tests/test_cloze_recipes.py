"""Every recipe under configs/cloze/ runs from its file on a tiny model (issue 17: every method of the family
runs from its recipe). Each runs as a user would run it, with the backbone swapped for tiny-llama, one step
per stage, and a handful of examples; the real runs are in benchmarks/cloze.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_peft.cli import main
from tests.test_configs import _subcommand

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "cloze").glob("*.yaml"))
SMALL_DATA = {  # per data class: the few examples each run reads
    "lightning_peft.data.FewShotClassificationData": ["--data.init_args.shots_per_class", "2",
                                                      "--data.init_args.max_unlabelled", "8",
                                                      "--data.init_args.max_eval_examples", "4"],
    "lightning_peft.data.ClassificationData": ["--data.init_args.max_train_examples", "8",
                                               "--data.init_args.max_eval_examples", "4"],
}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_the_recipe_runs_on_a_tiny_model(recipe, tmp_path):
    config, command = yaml.safe_load(recipe.read_text()), _subcommand(recipe)
    args = [command, "--config", str(recipe), "--model.init_args.backbone", "tiny-llama",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
            *SMALL_DATA[config["data"]["class_path"]]]
    task = config["model"]["init_args"]["task"]  # a class path alone, or class_path + init_args
    expansion = task.get("init_args", {}).get("expansion") if isinstance(task, dict) else None
    if expansion:  # SciPrompt's label-word expansion, with a tiny encoder in place of minilm-l6
        args += ["--model.init_args.task.init_args.expansion", json.dumps({**expansion, "encoder": "tiny-bert"})]
    if command == "pet":  # one seed per pattern; every stage trains, writes and reads back its adapter
        args += ["--trainer.max_steps", "1", "--pet.output_dir", str(tmp_path / "pet"), "--pet.seeds", "[0]",
                 "--pet.classifier_max_steps", "1"]
        args += ["--pet.pcp_max_steps", "1"] if config["pet"].get("pcp") else []
    else:
        args += ["--trainer.fast_dev_run", "true"]
    main(args)

    if command == "pet":
        stages = json.loads((tmp_path / "pet" / "summary.json").read_text())["stages"]
        last_generation = f"g{config['pet'].get('generations', 1) - 1} all patterns"
        expected = {last_generation} if config["pet"].get("distill") is False else {last_generation, "ensemble", "classifier"}
        assert expected <= set(stages), sorted(stages)
        assert all(0.0 <= value <= 1.0 for stage in expected for value in stages[stage]["test/acc"]["values"])
        if config["pet"].get("pcp"):  # PCP's table: the prompt-based model without and with PCP, on the same test set
            acc = json.loads((tmp_path / "pet" / "pcp_summary.json").read_text())["metrics"]["test/acc"]
            assert 0.0 <= acc["without_mean"] <= 1.0 and 0.0 <= acc["with_mean"] <= 1.0
    else:
        (written,) = (tmp_path / "run").rglob("metrics.json")
        metrics = json.loads(written.read_text())
        assert metrics["fit"]["global_step"] == 1
        assert 0.0 <= metrics["test"]["test/acc"] <= 1.0
