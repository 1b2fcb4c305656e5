"""Self-calibrated and transductive fine-tuning against plain prompt-based fine-tuning, TREC-6, 16 shots per
class, SmolLM2-135M-Instruct.

    python benchmarks/bag_of_tricks.py                                  # seeds 0 1 2
    python benchmarks/bag_of_tricks.py --seeds 0 -- --trainer.max_steps 20   # after --: passed to every run

The claim (Zhong et al. 2023, "Bag of Tricks for Effective Language Model Pretraining and Downstream
Adaptation: A Case Study on GLUE"): both techniques improve fine-tuning. Four arms, each a LoRA pattern
model of the cloze family run through the real CLI, one fresh process per run, all with the same shots,
template, verbalizer, optimizer, 60 steps and 300 test questions:

- prompt-based fine-tuning: `configs/cloze/self_calibrated_trec6.yaml` with `self_calibration: null`
  (PET's objective, α = 0.9999);
- self-calibrated: that recipe as shipped (pool questions predicted with probability >= 0.9 join the CE);
- LM on the training pool: `configs/cloze/transductive_trec6.yaml` with `pool_from: train` (α = 0.9, the
  language-model term on 300 unlabelled training questions): the control for the next arm;
- transductive: that recipe as shipped (α = 0.9, the language-model term on the 300 test questions).

Seed s draws the shots (`shot_seed`) and seeds training. Results go to benchmarks/results/bag_of_tricks.json;
the table shows test accuracy and macro-F1, mean ± std over seeds, and each technique's gain over its
control, paired by seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from arm_table import Scores, arm_rows
from cli_runs import ROOT, add_overrides, add_seeded_options, fit_once, overrides_of

sys.path.insert(0, str(ROOT / "src"))

from lightning_peft.cli.tables import print_table  # noqa: E402

SELF_CALIBRATED = "configs/cloze/self_calibrated_trec6.yaml"
TRANSDUCTIVE = "configs/cloze/transductive_trec6.yaml"
ARMS = {  # arm -> the recipe and what it changes there
    "prompt-based fine-tuning": (SELF_CALIBRATED, ["--model.init_args.self_calibration", "null"]),
    "self-calibrated": (SELF_CALIBRATED, []),
    "LM on the training pool": (TRANSDUCTIVE, ["--data.init_args.pool_from", "train",
                                               "--data.init_args.max_unlabelled", "300"]),
    "transductive": (TRANSDUCTIVE, []),
}
GAINS = (("self-calibrated", "prompt-based fine-tuning"), ("transductive", "LM on the training pool"),
         ("transductive", "prompt-based fine-tuning"))
METRICS = ("acc", "f1")


def seed_scores(out: Path, seed: int, extra: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """Test accuracy and macro-F1 of every arm at `seed`."""
    scores = {}
    for arm, (recipe, switch) in ARMS.items():
        written = fit_once(out / arm.replace(" ", "_") / f"seed-{seed}",
                           ["--config", recipe, "--seed_everything", str(seed), "--data.init_args.shot_seed", str(seed),
                            *switch, *extra])
        scores[arm] = {m: written["test"][f"test/{m}"] for m in METRICS}
    return scores


def table(by_seed: Scores) -> list[tuple[str, ...]]:
    """Rows: each arm (mean ± std over seeds), then each gain of GAINS paired by seed."""
    return arm_rows(by_seed, tuple(ARMS), GAINS, METRICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeded_options(parser, "bag_of_tricks")
    add_overrides(parser)
    args = parser.parse_args()
    extra = overrides_of(args)
    by_seed = {seed: seed_scores(args.output, seed, extra) for seed in args.seeds}
    print_table(table(by_seed), ("arm", "seeds", "test acc", "test macro-F1"))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"seeds": args.seeds, "overrides": list(extra), "scores": by_seed},
                                       indent=2, sort_keys=True))
    print(f"written to {args.results}")


if __name__ == "__main__":
    main()
