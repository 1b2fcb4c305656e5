"""The README's quickstart recipe, shortened, on the real SmolLM2-135M and real TREC-6 data."""

import json
import logging
from pathlib import Path

import pytest
import torch

from lightning_peft.cli import main

pytestmark = pytest.mark.slow
RECIPE = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


def test_quickstart_runs_and_reports_before_and_after(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    main(["fit", "--config", str(RECIPE), "--trainer.max_steps=3", "--trainer.val_check_interval=3",
          "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path}",
          "--data.init_args.max_eval_examples=32", "--data.init_args.eval_batch_size=32"])
    (metrics_file,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert {"test_before_training", "fit", "test"} <= set(metrics)
    assert metrics["fit"]["global_step"] == 3
    for section in ("test_before_training", "test"):
        assert 0.0 <= metrics[section]["test/acc"] <= 1.0
    (ckpt_path,) = tmp_path.rglob("last.ckpt")
    assert f"Adapter-only checkpoint saved to {ckpt_path}" in caplog.text
    ckpt = torch.load(ckpt_path, weights_only=True)
    # r=8 LoRA on q/v of 30 layers: 30 * 2 * (8*576 + out*8); the 134.5M-parameter base is not in it
    n_saved = sum(t.numel() for t in ckpt["state_dict"].values())
    assert n_saved == sum(8 * 576 + out * 8 for out in (576, 192)) * 30
    assert ckpt_path.stat().st_size < 20e6
