"""PET with 10 examples per class against supervised training on the full training set, bbc_news, SmolLM2-135M.

    python benchmarks/pet_supervised.py                       # shot seeds / training seeds 0 1 2 (see --help)
    python benchmarks/pet_supervised.py --seeds 0             # one seed
    python benchmarks/pet_supervised.py --seeds 0 --small     # a miniature that fits a shared 2-core CPU (see SMALL_*)

The claim (MasakhaNEWS, Adelani et al. 2023, with PET of Schick & Schuetze 2021, arXiv:2001.07676):
PET with 10 labelled examples per class reaches over 90% of the macro-F1 of supervised training on
the full training set. Both arms run the library's recipes through the real CLI, one fresh process each:

- PET: `lightning-peft pet --config configs/cloze/pet_bbc_news.yaml` with `--pet.shot_seeds` = the seeds
  (each seed draws other 10 articles per topic and is a whole PET run: pattern models, ensemble,
  distilled classifier).
- supervised: `lightning-peft fit --config configs/cloze/supervised_bbc_news.yaml --seed_everything <seed>`
  (LoRA + head on the whole training split).

Both are scored on the same 200 test articles (same split_seed, test_size and max_eval_examples).
Results go to benchmarks/results/pet_supervised.json; the table shows test macro-F1 and accuracy, mean ± std
over seeds, and PET's F1 as a share of the supervised F1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli_runs import CLI, ROOT, fit_once, run

sys.path.insert(0, str(ROOT / "src"))

from lightning_peft.cli.tables import print_table  # noqa: E402
from lightning_peft.pet import mean_std  # noqa: E402

# --small: inputs cut to 64 tokens (the title and the first sentence), 100 pool and 100 test articles, two
# patterns, 15 PET steps of 4 (one unlabelled text per step for the LM term), a 30-step classifier, and a
# supervised arm of 30 steps of 8 (240 articles of the full training split: far less than an epoch).
SMALL_SHARED = ["--data.init_args.max_length", "64", "--data.init_args.max_eval_examples", "100"]
SMALL_PET = [*SMALL_SHARED, "--data.init_args.max_unlabelled", "100", "--trainer.max_steps", "15",
             "--model.init_args.unlabelled_batch_size", "1", "--pet.classifier_max_steps", "30",
             "--pet.patterns", json.dumps(["{text}\nTopic: {mask}", "News article: {text}\nThis article is about {mask}"])]
SMALL_SUPERVISED = [*SMALL_SHARED, "--trainer.max_steps", "30"]


def pet(seeds: list[int], out: Path, extra: list[str]) -> dict:
    run([*CLI, "pet", "--config", "configs/cloze/pet_bbc_news.yaml", "--pet.shot_seeds", json.dumps(seeds),
         "--pet.output_dir", str(out / "pet"), "--trainer.enable_progress_bar", "false", *extra])
    return json.loads((out / "pet" / "summary.json").read_text())["stages"]


def supervised(seed: int, out: Path, extra: list[str]) -> dict:
    written = fit_once(out / "supervised" / f"seed-{seed}",
                       ["--config", "configs/cloze/supervised_bbc_news.yaml", "--seed_everything", str(seed), *extra])
    return {k: v for k, v in written["test"].items() if k.startswith("test/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench_pet_supervised",
                        help="Run folder (a rerun skips what is finished).")
    parser.add_argument("--small", action="store_true", help="The miniature settings SMALL_* (for a crowded CPU).")
    parser.add_argument("--arm", choices=["both", "pet", "supervised"], default="both",
                        help="Run one arm only (e.g. the two in parallel processes); the table needs both.")
    args = parser.parse_args()
    if args.arm != "both":
        (pet(args.seeds, args.output, SMALL_PET if args.small else []) if args.arm == "pet" else
         [supervised(seed, args.output, SMALL_SUPERVISED if args.small else []) for seed in args.seeds])
        return
    stages = pet(args.seeds, args.output, SMALL_PET if args.small else [])
    baseline = [supervised(seed, args.output, SMALL_SUPERVISED if args.small else []) for seed in args.seeds]
    rows, results = [], {"seeds": args.seeds, "small": args.small, "pet": stages, "supervised": baseline}
    base_f1 = mean_std([b["test/f1"] for b in baseline])
    for name in ("g0 all patterns", "ensemble", "classifier"):
        f1, acc = stages[name]["test/f1"], stages[name]["test/acc"]
        rows.append((f"PET {name}", str(stages[name]["runs"]), f"{f1['mean']:.4f} ± {f1['std']:.4f}",
                     f"{acc['mean']:.4f} ± {acc['std']:.4f}", f"{f1['mean'] / base_f1[0]:.1%}"))
    acc = mean_std([b["test/acc"] for b in baseline])
    rows.append(("supervised (full training split)", str(len(baseline)), f"{base_f1[0]:.4f} ± {base_f1[1]:.4f}",
                 f"{acc[0]:.4f} ± {acc[1]:.4f}", "100.0%"))
    print_table(rows, ("arm", "runs", "test macro-F1", "test acc", "F1 / supervised"))
    target = ROOT / "benchmarks" / "results" / ("pet_supervised_small.json" if args.small else "pet_supervised.json")
    target.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(f"written to {target}")


if __name__ == "__main__":
    main()
