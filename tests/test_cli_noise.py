"""What a user sees on stderr: third-party start-up notices are gone, real warnings and LIGHTNING_PEFT_DEBUG stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")

# Printed by bitsandbytes (only on CPUs with AVX512-BF16), Lightning, peft->transformers and Lightning->torch.
HARDWARE_DEPENDENT_NOISE = "Failed to load CPU gemm_4bit_forward"
NOISE = ("`tensorboardX` has been removed", "💡 Tip", "`is_gradient_checkpointing` is deprecated",
         "isinstance(treespec, LeafSpec)")


def _fit_stderr(root: Path, debug: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LIGHTNING_PEFT_DEBUG"}
    if debug:
        env["LIGHTNING_PEFT_DEBUG"] = "1"
    # 16 examples in batches of 4: 4 training batches, fewer than the config's log_every_n_steps=10,
    # so Lightning also warns about the logging interval (a real warning, which must stay).
    args = [sys.executable, "-m", "lightning_peft.cli", "fit", "--config", QUICKSTART,
            "--model.init_args.backbone", "tiny-llama", "--data.init_args.max_train_examples", "16",
            "--data.init_args.max_eval_examples", "4", "--data.init_args.batch_size", "4",
            "--trainer.max_steps", "1", "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--test_before_fit", "false", "--test_after_fit", "false",
            "--trainer.default_root_dir", str(root)]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_fit_prints_no_third_party_notices_but_keeps_real_warnings(tmp_path):
    stderr = _fit_stderr(tmp_path, debug=False)
    for notice in (HARDWARE_DEPENDENT_NOISE, *NOISE):
        assert notice not in stderr, stderr
    assert "is not supported by the model summary" not in stderr  # bf16-mixed (precision auto on a bf16 CPU)
    assert "is smaller than the logging interval" in stderr  # Lightning's warnings about the run still show
    assert "Metrics (fit) written to" in stderr  # and so do our own messages


def test_debug_keeps_every_notice(tmp_path):
    stderr = _fit_stderr(tmp_path, debug=True)
    for notice in NOISE:
        assert notice in stderr, f"{notice!r} missing under LIGHTNING_PEFT_DEBUG=1:\n{stderr}"
