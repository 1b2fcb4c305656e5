"""The table `lightning-peft pet` prints at the end: test metrics per stage, mean ± std over seeds and draws of shots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..callbacks.run_summary import write_json_atomic
from ..pet import mean_std
from .tables import print_table

METRICS = ("test/acc", "test/f1")


def stage_of(key: str) -> str:
    """"g0/p1-s2" -> "g0 pattern 1" (seeds pooled); "ensemble" and "classifier" stay as they are."""
    if "/" not in key:
        return key
    generation, model = key.split("/")
    return f"{generation} pattern {model.split('-')[0][1:]}"


def _order(stage: str) -> tuple:
    """Generations first (each pattern, then all patterns), then the ensemble, then the classifier."""
    if stage in ("ensemble", "classifier"):
        return (1, stage == "classifier")
    generation, _, rest = stage.partition(" ")
    return (0, int(generation[1:]), rest == "all patterns", rest)


def summarize(runs: dict[Any, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per stage: how many runs, and mean / std of each test metric over them (all seeds and draws of shots)."""
    pooled: dict[str, list[dict[str, Any]]] = {}
    for per_draw in runs.values():
        for key, result in per_draw.items():
            pooled.setdefault(stage_of(key), []).append(result)
            if "/" in key:
                pooled.setdefault(f"{key.split('/')[0]} all patterns", []).append(result)
    summary = {}
    for stage, results in sorted(pooled.items(), key=lambda item: _order(item[0])):
        entry: dict[str, Any] = {"runs": len(results)}
        for metric in METRICS:
            mean, std = mean_std([float(r[metric]) for r in results if metric in r])
            entry[metric] = {"mean": mean, "std": std, "values": [r.get(metric) for r in results]}
        summary[stage] = entry
    return summary


def report(runs: dict[Any, dict[str, dict[str, Any]]], output_dir: Path) -> dict[str, dict[str, Any]]:
    """Print the table and write it, with every value, to `<output_dir>/summary.json`."""
    summary = summarize(runs)
    rows = [(stage, str(entry["runs"]),
             *(f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in METRICS)) for stage, entry in summary.items()]
    print_table(rows, ("stage", "runs", *METRICS))
    write_json_atomic(output_dir / "summary.json", {"stages": summary, "runs": {str(k): v for k, v in runs.items()}})
    return summary
