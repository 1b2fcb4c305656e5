"""metrics.json as a user reads it after `lightning-peft fit` / `test --ckpt_path`: labelled by the weights' step, one run's sections only."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_peft.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def _fit(root: Path, steps: int, *extra: str) -> None:
    main(["fit", "--config", QUICKSTART, "--model.init_args.backbone", "tiny-llama",
          "--data.init_args.max_train_examples", "16", "--data.init_args.max_eval_examples", "8",
          "--data.init_args.batch_size", "4", "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "1",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
          "--test_before_fit", "false", "--trainer.default_root_dir", str(root), *extra])


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def test_test_of_a_checkpoint_is_labelled_with_the_checkpoints_step(tmp_path):
    _fit(tmp_path, 3, "--test_after_fit", "false")
    ckpt = sorted((tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))[0]  # each: step 3
    main(["test", "--config", str(tmp_path / "lightning_logs" / "version_0" / "config.yaml"), "--ckpt_path", str(ckpt),
          "--trainer.default_root_dir", str(tmp_path)])
    metrics = _metrics(tmp_path / "lightning_logs" / "version_1" / "metrics.json")
    assert list(metrics) == ["test"]  # not "test_before_training": these weights were trained for 3 steps
    assert metrics["test"]["global_step"] == 3 and metrics["test"]["ckpt_path"] == str(ckpt)
    assert "test/acc" in metrics["test"]


def test_runs_sharing_a_folder_do_not_inherit_each_others_sections(tmp_path):
    # No logger: both runs write <root>/metrics.json.
    _fit(tmp_path, 2, "--trainer.logger", "false", "--test_after_fit", "true")
    first = _metrics(tmp_path / "metrics.json")
    assert sorted(first) == ["fit", "test"] and first["test"]["global_step"] == 2  # one run's stages accumulate
    _fit(tmp_path, 1, "--trainer.logger", "false", "--test_after_fit", "false")
    second = _metrics(tmp_path / "metrics.json")
    assert list(second) == ["fit"] and second["fit"]["global_step"] == 1  # the first run's test is gone
