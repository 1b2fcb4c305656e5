"""Run a recipe in this process for a benchmark arm: built from its YAML files by the CLI, trained with
`StepClock` timing (`throughput_timing.py`: step time, peak RSS), no logger, checkpoints or validation.

Shared by `edit_spans.py` and `code_personalisation.py`; run them as `python benchmarks/<name>.py`
(this folder on sys.path), one arm per process so each arm's peak memory is its own.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import lightning as L
from throughput_clock import StepClock

from lightning_peft.cli import LightningPeftCLI
from lightning_peft.modules import FineTuneModule

ROOT = Path(__file__).resolve().parents[1]


def recipe_cli(configs: list[str], steps: int, seed: int, *overrides: str) -> LightningPeftCLI:
    """The recipe's module, data and trainer (not run), trained for `steps` without validation."""
    args = [a for c in configs for a in ("--config", str(ROOT / c))]
    args += ["--seed_everything", str(seed), "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
             "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *overrides]
    return LightningPeftCLI(FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                            run=False, args=args)


def fit_timed(cli: LightningPeftCLI, warmup_steps: int = 3) -> dict:
    """Fit the recipe; `StepClock`'s summary (timed_seconds, timed_steps, peak_rss_bytes, trainable_parameters)."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "clock.json"
        cli.trainer.callbacks.append(StepClock(str(output), warmup_steps=warmup_steps))
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if cli.trainer.global_step != cli.trainer.max_steps:  # e.g. SIGTERM from `timeout`: Lightning stops early
            raise SystemExit(f"Training stopped at step {cli.trainer.global_step} of {cli.trainer.max_steps}; "
                             "no figures are saved.")
        summary = json.loads(output.read_text())
    summary["seconds_per_step"] = summary["timed_seconds"] / summary["timed_steps"]
    return {k: v for k, v in summary.items() if k not in ("tokens_per_step", "losses")} | {
        "final_losses": summary["losses"][-5:]}
