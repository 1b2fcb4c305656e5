"""The table of a seeded benchmark whose runs are arms: each arm's scores as mean ± std over seeds, then each
(method, control) gain paired by seed. Shared by `bag_of_tricks.py` and `list_selftraining.py`.
"""

from __future__ import annotations

import sys

from cli_runs import ROOT

sys.path.insert(0, str(ROOT / "src"))

from lightning_peft.pet import mean_std, paired_gain  # noqa: E402

Scores = dict[int, dict[str, dict[str, float]]]  # seed -> arm -> metric -> score


def arm_rows(by_seed: Scores, arms: tuple[str, ...], gains: tuple[tuple[str, str], ...],
             metrics: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Rows (name, number of seeds, one cell per metric): each of `arms`, then each (method, control) of
    `gains` as `method - control (paired)`; an arm or gain whose runs are missing from `by_seed` is left out."""
    runs = list(by_seed.values())
    present = set.intersection(*(set(run) for run in runs))
    rows = []
    for arm in (arm for arm in arms if arm in present):
        cells = [mean_std([run[arm][m] for run in runs]) for m in metrics]
        rows.append((arm, str(len(runs)), *(f"{mean:.3f} ± {std:.3f}" for mean, std in cells)))
    for method, control in ((m, c) for m, c in gains if {m, c} <= present):
        paired = [paired_gain([run[control][m] for run in runs], [run[method][m] for run in runs]) for m in metrics]
        rows.append((f"{method} - {control} (paired)", str(len(runs)),
                     *(f"{g['gain_mean']:+.3f} ± {g['gain_std']:.3f}" for g in paired)))
    return rows
