"""One run of the PEFT league (`peft_league.py`), in a process of its own so that its peak memory is its own.

    python benchmarks/peft_league_run.py JOB.json REPORT.json

JOB names a composed recipe (`peft_league_arms.compose`), the steps, seed, warm-up steps and extra
command-line overrides. The recipe is built by the CLI and trained with `StepClock` timing
(`recipe_run.py`), then scored on its test split. REPORT gets test accuracy and macro-F1, trainable
and total parameters, seconds per step and peak RSS; or, when the library refuses the method on this
model or task (its one-sentence error), `{"refused": <that sentence>}`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from recipe_run import fit_timed, recipe_cli
from throughput_clock import StepClock
from throughput_timing import StepTimes

from lightning_peft.cli.app import user_error
from lightning_peft.methods import MethodConfigError
from lightning_peft.tasks import TaskConfigError

# What says a method cannot work on this model or task; any other error (a data or schedule setting) fails the run.
REFUSALS = (MethodConfigError, TaskConfigError)


class PlannedClock(StepClock):
    """`StepClock` for a run whose length is its data module's plan, not `max_steps` (SetFit: the pair batches,
    then the shots for the head): every planned batch counts as a step, a head batch without an optimizer step too."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times = StepTimes(self.warmup_steps, trainer.num_training_batches)
        self.times.training_started()


def fit_planned(cli: Any, warmup_steps: int) -> dict[str, Any]:
    """Fit a run that `PlannedClock` times; the fields of `fit_timed`'s summary that the league reads."""
    clock = PlannedClock(os.devnull, warmup_steps=warmup_steps)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    summary = clock.times.summary()
    return {**{k: summary[k] for k in ("steps", "timed_steps", "peak_rss_bytes", "timed_user_seconds", "timed_system_seconds")},
            "seconds_per_step": summary["timed_seconds"] / summary["timed_steps"], "final_losses": summary["losses"][-5:]}


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Train and test the job's recipe; the report's fields."""
    try:
        cli = recipe_cli([job["config"]], job["steps"], job["seed"], *job["overrides"])
        planned = cli.trainer.max_steps < 0  # the data module's plan sets the length (SetFit)
        training = fit_planned(cli, job["warmup_steps"]) if planned else fit_timed(cli, job["warmup_steps"])
    except Exception as error:  # noqa: BLE001 - only the library's one-sentence refusals become a report
        refusal = user_error(error)
        if not isinstance(refusal, REFUSALS):
            raise
        return {"refused": str(refusal)}
    (scores,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    parameters = list(cli.model.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return {"test_acc": scores["test/acc"], "test_f1": scores["test/f1"], "trainable_parameters": trainable,
            "total_parameters": total, "trainable_percent": 100 * trainable / total,
            "seconds_per_step": training["seconds_per_step"], "peak_rss_gb": training["peak_rss_bytes"] / 1e9,
            # CPU time (all threads) per timed step: what a loaded machine does not inflate, for sizing a run
            "cpu_seconds_per_step": (training["timed_user_seconds"] + training["timed_system_seconds"]) / training["timed_steps"],
            "steps": training["steps"], "timed_steps": training["timed_steps"], "final_losses": training["final_losses"]}


def main(argv: list[str]) -> None:
    job_path, report_path = argv
    report = run(json.loads(Path(job_path).read_text()))
    Path(report_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
