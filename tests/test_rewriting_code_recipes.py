"""The rewriting (edit spans vs full rewrite) and code-personalisation recipes run end to end on tiny-llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_peft.cli import main

ROOT = Path(__file__).resolve().parents[1]
CODE_METHODS = ["full", "embeddings_head", "last_block", "prefix_tuning", "lora"]


def _fit(root: Path, configs: list[str], *extra: str) -> dict:
    main(["fit", *[a for c in configs for a in ("--config", str(ROOT / c))], "--model.init_args.backbone", "tiny-llama",
          "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false", "--test_before_fit", "false",
          "--trainer.default_root_dir", str(root), *extra])
    return json.loads(next(root.rglob("metrics.json")).read_text())


@pytest.mark.parametrize("method", CODE_METHODS)
def test_code_recipe_trains_and_tests_on_completions(tmp_path, method):
    metrics = _fit(tmp_path, ["configs/code/data.yaml", f"configs/code/{method}.yaml"],
                   "--data.init_args.max_train_examples", "8", "--data.init_args.max_eval_examples", "8")
    assert metrics["fit"]["global_step"] == 1
    assert any("perplexity" in key for key in json.dumps(metrics["test"]).split('"'))


@pytest.mark.parametrize("recipe", [["configs/rewriting/full_rewrite_dialog.yaml"],
                                    ["configs/rewriting/full_rewrite_dialog.yaml",
                                     "configs/rewriting/edit_spans_dialog.yaml"]])
def test_rewriting_recipes_train(tmp_path, recipe):
    metrics = _fit(tmp_path, recipe, "--data.init_args.max_train_examples", "16", "--data.init_args.max_eval_examples", "8")
    assert metrics["fit"]["global_step"] == 1
