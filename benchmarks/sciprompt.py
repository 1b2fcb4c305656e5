"""SciPrompt's weighted multi-word verbalizer against the single-word verbalizer, zero-shot and at 5 and 10
shots per class, on bbc_news and TREC-6 with SmolLM2-135M-Instruct.

    python benchmarks/sciprompt.py                                  # both datasets, 5 and 10 shots, seeds 0 1 2
    python benchmarks/sciprompt.py --datasets trec6 --seeds 0       # one dataset, one seed
    python benchmarks/sciprompt.py --plot docs/methods/sciprompt_shots.png
    python benchmarks/sciprompt.py --seeds 0 -- --trainer.max_steps 20     # after --: passed to every run's CLI

The claim (You et al. 2024, "SciPrompt", arXiv:2410.01946): expanding each class's label words and
weighting them by their correlation scores classifies better than one label word per class, zero-shot
and in the few-shot settings. Both arms are the library's recipes run through the real CLI, one fresh
process per run:

- weighted: `configs/cloze/sciprompt_<dataset>.yaml` (seed words expanded with all-MiniLM-L6-v2 over the
  training split's words, contextual calibration on 200 pool examples, trainable word weights, LoRA);
- single word: `configs/cloze/single_word_<dataset>.yaml` (the first seed word per class, LoRA).

Everything else is the same: template, shots, 40 steps of 4, learning rate, test examples. Seed s draws
the shots (`shot_seed`) and seeds training. The runs at the smallest shot count also test before
training (`--test_before_fit true`): that is the zero-shot row. The single-word zero-shot score does
not depend on the seed. The weighted one does, because its calibration prior comes from the seed's pool.

Results go to benchmarks/results/sciprompt.json. The table shows test accuracy and macro-F1, mean ± std
over seeds, and the weighted arm's gain over the single word, paired by seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli_runs import ROOT, add_overrides, add_seeded_options, fit_once, overrides_of

sys.path.insert(0, str(ROOT / "src"))

from lightning_peft.cli.tables import print_table  # noqa: E402
from lightning_peft.pet import paired_gain  # noqa: E402

ARMS = {"single": "configs/cloze/single_word_{dataset}.yaml", "weighted": "configs/cloze/sciprompt_{dataset}.yaml"}
METRICS = ("test/acc", "test/f1")


def arm_scores(out: Path, dataset: str, arm: str, shots: int, seed: int, zero_shot: bool,
               extra: tuple[str, ...] = ()) -> dict[int, dict[str, float]]:
    """Test metrics by shot count for one run: {shots: ...}, plus {0: ...} when it tested before training.
    `extra` are CLI arguments appended to the recipe's (e.g. a smaller backbone)."""
    sections = ("test_before_training", "test") if zero_shot else ("test",)
    written = fit_once(out / dataset / arm / f"k{shots}-s{seed}",
                       ["--config", ARMS[arm].format(dataset=dataset), "--seed_everything", str(seed),
                        "--data.init_args.shots_per_class", str(shots), "--data.init_args.shot_seed", str(seed),
                        "--test_before_fit", str(zero_shot).lower(), *extra], sections)
    scores = {shots: {m: written["test"][m] for m in METRICS}}
    if zero_shot:
        scores[0] = {m: written["test_before_training"][m] for m in METRICS}
    return scores


def collect(out: Path, datasets: list[str], shots: list[int], seeds: list[int], extra: tuple[str, ...] = ()) -> list[dict]:
    """One row per (dataset, arm, shots, seed), zero-shot rows (shots 0) included."""
    rows = []
    for dataset in datasets:
        for seed in seeds:
            for arm in ARMS:
                for k in shots:
                    for got, metrics in arm_scores(out, dataset, arm, k, seed, k == min(shots), extra).items():
                        rows.append({"dataset": dataset, "arm": arm, "shots": got, "seed": seed,
                                     "acc": metrics["test/acc"], "f1": metrics["test/f1"]})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per (dataset, shots): each arm's mean ± std and the weighted arm's gain, paired by seed."""
    table = []
    for dataset, k in sorted({(r["dataset"], r["shots"]) for r in rows}):
        by_arm = {arm: {r["seed"]: r for r in rows if (r["dataset"], r["shots"], r["arm"]) == (dataset, k, arm)}
                  for arm in ARMS}
        seeds = sorted(set(by_arm["single"]) & set(by_arm["weighted"]))
        entry = {"dataset": dataset, "shots": k, "seeds": seeds}
        for metric in ("acc", "f1"):
            paired = paired_gain([by_arm["single"][s][metric] for s in seeds], [by_arm["weighted"][s][metric] for s in seeds])
            for key, name in (("single", "without"), ("weighted", "with"), ("gain", "gain")):
                entry[f"{key}_{metric}"] = (paired[f"{name}_mean"], paired[f"{name}_std"])
        table.append(entry)
    return table


def plot(table: list[dict], path: Path) -> None:
    """Test accuracy against shots per class, one panel per dataset, both verbalizers with ± std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({e["dataset"] for e in table})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        entries = [e for e in table if e["dataset"] == dataset]
        for arm, label in (("single", "single word"), ("weighted", "weighted (SciPrompt)")):
            ax.errorbar([e["shots"] for e in entries], [e[f"{arm}_acc"][0] for e in entries],
                        yerr=[e[f"{arm}_acc"][1] for e in entries], marker="o", capsize=3, label=label)
        ax.set(title=f"{dataset} ({len(entries[0]['seeds'])} seeds)", xlabel="shots per class", ylabel="test accuracy",
               xticks=[e["shots"] for e in entries])
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "trec6"],
                        choices=["bbc_news", "trec6", "sentiment_movies"])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10],
                        help="Shots per class; the smallest also gives the zero-shot row (tested before training).")
    add_seeded_options(parser, "sciprompt")
    parser.add_argument("--plot", type=Path, help="Also draw accuracy against shots to this PNG.")
    add_overrides(parser)
    args = parser.parse_args()
    extra = overrides_of(args)
    rows = collect(args.output, args.datasets, sorted(args.shots), args.seeds, extra)
    table = summary(rows)

    def cell(pair: tuple[float, float], signed: bool = False) -> str:
        return f"{pair[0]:+.3f} ± {pair[1]:.3f}" if signed else f"{pair[0]:.3f} ± {pair[1]:.3f}"

    print_table([(e["dataset"], str(e["shots"]), str(len(e["seeds"])), cell(e["single_acc"]), cell(e["weighted_acc"]),
                  cell(e["gain_acc"], True), cell(e["single_f1"]), cell(e["weighted_f1"]), cell(e["gain_f1"], True))
                 for e in table],
                ("dataset", "shots", "seeds", "single acc", "weighted acc", "gain", "single F1", "weighted F1", "gain F1"))
    target = args.results
    target.write_text(json.dumps({"rows": rows, "table": table}, indent=2, sort_keys=True))
    print(f"written to {target}")
    if args.plot:
        plot(table, args.plot)


if __name__ == "__main__":
    main()
