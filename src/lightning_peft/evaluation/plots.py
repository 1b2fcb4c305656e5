"""PNG plots of forgetting curves and base-vs-tuned comparisons (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict[str, float]], path: str | Path, title: str = "Forgetting probes") -> Path:
    """One panel per metric family (perplexity ratio, KL from base, accuracy drops) against the training step."""
    plt = _pyplot()
    keys = sorted({k for row in history for k in row if k != "step"})
    families = [("perplexity_ratio", "perplexity ratio"), ("kl_from_base", "KL from base (nats/token)"),
                ("acc_drop/", "accuracy drop (base - current)")]
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.2))
    for axis, (prefix, label) in zip(axes, families):
        for key in (k for k in keys if k.startswith(prefix)):
            points = [(row["step"], row[key]) for row in history if key in row]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key.removeprefix(prefix) or None)
        axis.set_xlabel("step"), axis.set_title(label, fontsize=9)
        if prefix.endswith("/") and axis.lines:
            axis.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_comparison(rows: dict[str, tuple[float, float]], path: str | Path, title: str = "Base vs fine-tuned") -> Path:
    """Paired bars: metric -> (base, tuned)."""
    plt = _pyplot()
    names = list(rows)
    fig, axis = plt.subplots(figsize=(max(4.0, 1.1 * len(names)), 3.2))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], [rows[n][0] for n in names], width=0.4, label="base")
    axis.bar([p + 0.2 for p in positions], [rows[n][1] for n in names], width=0.4, label="fine-tuned")
    axis.set_xticks(list(positions), names, rotation=30, ha="right", fontsize=7)
    axis.legend(fontsize=7), axis.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
