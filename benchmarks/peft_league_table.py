"""The PEFT league's summaries: mean ± std over seeds per arm, ratios to full fine-tuning, and the printed table.

Imports no torch or Lightning: the driver (`peft_league.py`) stays light, its runs do the heavy work.
"""

from __future__ import annotations

import statistics
from typing import Any

BASELINE = "full"
MEASURES = ("test_acc", "test_f1", "seconds_per_step", "peak_rss_gb")  # averaged over seeds
RATIOS = ("seconds_per_step", "peak_rss_gb")  # divided by full fine-tuning's mean
HEADER = ("arm", "trainable", "% of model", "accuracy %", "macro-F1 %", "s/step", "x full", "peak RSS GB", "x full",
          "steps", "seeds", "note")


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm with runs: mean ± std of each measure, trainable parameters, seeds, and ratios to full fine-tuning's means."""
    summary = {}
    for name, entry in arms.items():
        runs = list(entry.get("runs", {}).values())
        if not runs:
            continue
        summary[name] = {"seeds": sorted(entry["runs"], key=int), "trainable_parameters": runs[0]["trainable_parameters"],
                         "trainable_percent": runs[0]["trainable_percent"], "steps": runs[0]["steps"],
                         **{measure: mean_std([run[measure] for run in runs]) for measure in MEASURES}}
    base = summary.get(BASELINE)
    for row in summary.values():
        row["vs_full"] = {m: row[m]["mean"] / base[m]["mean"] if base and base[m]["mean"] else None for m in RATIOS}
    return summary


def _percent(value: dict[str, float]) -> str:
    return f"{100 * value['mean']:.1f} ± {100 * value['std']:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_rows(arms: dict[str, dict[str, Any]], summary: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per arm, in the order run: measured arms with their figures, refused ones as n/a with the library's reason."""
    rows = []
    for name, entry in arms.items():
        if "refused" in entry:
            rows.append((name, *["-"] * (len(HEADER) - 2), f"n/a (refused: {entry['refused']})"))
            continue
        if name not in summary:
            continue
        row = summary[name]
        rows.append((name, f"{row['trainable_parameters']:,}", f"{row['trainable_percent']:.3g}", _percent(row["test_acc"]),
                     _percent(row["test_f1"]), f"{row['seconds_per_step']['mean']:.3g}",
                     _ratio(row["vs_full"]["seconds_per_step"]), f"{row['peak_rss_gb']['mean']:.2f}",
                     _ratio(row["vs_full"]["peak_rss_gb"]), str(row["steps"]), str(len(row["seeds"])), entry.get("note", "")))
    return rows


def print_setting(name: str, entry: dict[str, Any]) -> None:
    from lightning_peft.cli.tables import print_table

    options = entry["options"]
    print(f"\n{name}: {options['backbone']}, {options['steps']} steps (mean ± std over seeds; x full: ratio to full "
          f"fine-tuning's mean; peak RSS: the run's process during training)")
    print_table(table_rows(entry["arms"], entry.get("summary", {})), HEADER)
    runs = [run for arm in entry["arms"].values() for run in arm.get("runs", {}).values()]
    if runs:
        print(f"{len(runs)} runs: {sum(r['wall_seconds'] for r in runs) / 60:.1f} min wall, "
              f"{sum(r['cpu_seconds'] for r in runs) / 60:.1f} min CPU")
