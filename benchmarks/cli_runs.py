"""Run the real `lightning-peft` CLI for a benchmark arm, one fresh process per run, and read back what it
wrote. A run whose `metrics.json` already holds the sections asked for is not run again, so a benchmark
that was interrupted continues where it stopped.

Shared by the cloze family's benchmarks (`pet_supervised.py`, `sciprompt.py`, `list_selftraining.py`,
`bag_of_tricks.py` and the table that runs them all, `cloze.py`); run them as `python benchmarks/<name>.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lightning_peft.cli"]


def run(command: list[str]) -> None:
    """Run `command` in the repository root, echoing it; a failure stops the benchmark (CalledProcessError)."""
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def fit_once(folder: Path, args: list[str], sections: tuple[str, ...] = ("test",)) -> dict[str, dict[str, float]]:
    """`lightning-peft fit <args>` into `folder` unless its metrics.json has `sections` already; those sections."""
    written = _written(folder)
    if not all(s in written for s in sections):
        run([*CLI, "fit", *args, "--trainer.default_root_dir", str(folder), "--trainer.enable_progress_bar", "false"])
        written = _written(folder)
    missing = [s for s in sections if s not in written]
    if missing:
        raise SystemExit(f"{folder}: the run finished without writing {missing} to metrics.json.")
    return {s: written[s] for s in sections}


def _written(folder: Path) -> dict:
    """The newest metrics.json under `folder` (a rerun after an interruption writes a new version), or {}."""
    found = sorted(folder.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else {}


def add_seeded_options(parser: argparse.ArgumentParser, name: str) -> None:
    """A seeded benchmark's --seeds, --output (runs/bench_<name>) and --results
    (benchmarks/results/<name>.json)."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Shot draw and training seed, per run.")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / f"bench_{name}",
                        help="Run folder (a rerun skips the runs that finished).")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / f"{name}.json",
                        help="JSON file to write the figures to.")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """A benchmark's trailing `-- ARGS...`: CLI arguments appended to every run it starts."""
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="After `--`: CLI arguments appended to every run (they change what is measured; "
                             "use another --output and --results).")


def overrides_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The CLI overrides given after the benchmark's own options, without the `--` that separates them."""
    return tuple(args.overrides[1:] if args.overrides[:1] == ["--"] else args.overrides)
