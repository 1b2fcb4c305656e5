"""The PCP table `lightning-peft pet` prints with `pet.pcp: true`: prompt-based fine-tuning without and with PCP.

Shi & Lipani 2023, "Don't Stop Pretraining? Make Prompt-based Fine-tuning Powerful Learner" (NeurIPS). The
paper's claim is a paired one (the same shots, pattern and seed, with and without PCP), so the table pairs
each model trained from PCP's adapter with generation 0's model of the same pattern, seed and draw of shots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..callbacks.run_summary import write_json_atomic
from ..pet import paired_gain
from .pet_report import METRICS
from .tables import print_table

PCP_SUMMARY = "pcp_summary.json"


def pairs(runs: dict[Any, dict[str, dict[str, Any]]], pcp_runs: dict[Any, dict[str, dict[str, Any]]]
          ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, result without PCP, result with PCP) for every model PCP trained again, over all draws of shots."""
    return [(f"shots-{shot_seed}/{name}", runs[shot_seed][f"g0/{name}"], result)
            for shot_seed, stages in pcp_runs.items() for name, result in stages.items() if name != "pretraining"]


def pcp_report(runs: dict[Any, dict[str, dict[str, Any]]], pcp_runs: dict[Any, dict[str, dict[str, Any]]],
               output_dir: Path, zero_shot: bool = False) -> dict[str, Any]:
    """Print mean ± std of each test metric without PCP, with PCP, and of the paired gain; write them with every pair."""
    paired = pairs(runs, pcp_runs)
    summary = {metric: paired_gain([float(before[metric]) for _, before, _ in paired],
                                   [float(after[metric]) for _, _, after in paired]) for metric in METRICS}
    baseline = "zero-shot (no PCP)" if zero_shot else "prompt-based FT (no PCP)"
    rows = [(label, str(len(paired)), *(f"{summary[m][f'{key}_mean']:.4f} ± {summary[m][f'{key}_std']:.4f}" for m in METRICS))
            for label, key in ((baseline, "without"), ("PCP + prompt-based FT", "with"), ("gain (paired)", "gain"))]
    print_table(rows, ("PCP", "runs", *METRICS))
    write_json_atomic(output_dir / PCP_SUMMARY, {
        "metrics": summary, "baseline": baseline,
        "pairs": {name: {m: {"without": before.get(m), "with": after.get(m)} for m in METRICS} for name, before, after in paired},
        "pretraining": {str(shot_seed): stages["pretraining"] for shot_seed, stages in pcp_runs.items()}})
    return summary
