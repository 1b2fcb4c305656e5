"""Run one benchmark arm in its own process, the way a user runs the CLI, and clean up after it.

Shared by `soft_prompts.py` and `robust_prompts.py`: each arm is a fresh `lightning_peft.cli fit`
process (so no arm inherits another's memory or compiled state) that writes a report file; the
arm's output goes to a log whose tail is shown when it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Left by an in-process Lightning run (e.g. a DDP test); an arm that inherited them would not launch its rank.
LAUNCH_VARIABLES = ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "RANK", "GROUP_RANK")


def cli_command(subcommand: str, config: Path, backbone: str, seed: int, root: Path) -> list[str]:
    """`lightning_peft.cli <subcommand>` of a recipe for one arm: its backbone, seed and run folder, with no logger,
    progress bar or model summary."""
    return [sys.executable, "-m", "lightning_peft.cli", subcommand, "--config", str(config),
            "--model.init_args.backbone", backbone, "--seed_everything", str(seed), "--trainer.default_root_dir", str(root),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def fit_command(config: Path, backbone: str, seed: int, steps: int, root: Path) -> list[str]:
    """`lightning_peft.cli fit` of a recipe for one arm: `cli_command` plus no checkpoints, validation or test
    before fit (callers add their own callbacks and the test after fit)."""
    return [*cli_command("fit", config, backbone, seed, root), "--trainer.max_steps", str(steps),
            "--trainer.enable_checkpointing", "false", "--trainer.limit_val_batches", "0", "--test_before_fit", "false"]


def run_arm_process(command: list[str], log: Path, report: Path, what: str) -> float:
    """Run `command` from the repository root with this folder importable (the arms' callbacks live here).

    Returns the wall seconds. Raises `SystemExit` naming `what`, with the log's tail, when the
    process fails or writes no `report`. An interrupted benchmark (Ctrl-C, SIGTERM) kills the arm.
    """
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if returncode != 0 or not report.exists():
        raise SystemExit(f"{what} failed (exit {returncode}); last output:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started


def exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM handler: exit normally, so the running arm is killed and the temporary folder removed."""
    raise SystemExit(128 + signum)
