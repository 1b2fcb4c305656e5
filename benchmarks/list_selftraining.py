"""LiST's self-training against prompt-based fine-tuning of the same lite adapters on the same 30 shots per
class, TREC-6, SmolLM2-135M-Instruct.

    python benchmarks/list_selftraining.py                                  # seeds 0 1 2
    python benchmarks/list_selftraining.py --seeds 0 -- --trainer.max_steps 100   # after --: passed to every run
    python benchmarks/list_selftraining.py --arms LiST --results R.json -- --model.init_args.reset_student false

The claim (Wang et al. 2022, "LiST: Lite Prompted Self-training Makes Parameter-Efficient Few-shot
Learners", arXiv:2110.06274): self-training with re-weighting beats prompt-based fine-tuning with the same
shots, while training far fewer parameters than full fine-tuning. Both arms run
`configs/cloze/list_trec6.yaml` through the real CLI, one fresh process per run:

- LiST: the recipe as shipped (the teacher trains on the shots, then self-training sessions on the pool);
- prompt-based fine-tuning: the same recipe with `--model lightning_peft.modules.AdapterModule` (the parser
  drops the LiST-only options): the same lite adapters, template, verbalizer, shots, optimizer and number of
  steps, on the shots alone.

Seed s draws the shots (`shot_seed`) and seeds training. The recipe tests before training too; that is the
zero-shot row. Results go to benchmarks/results/list_selftraining.json; the table shows test accuracy and
macro-F1, mean ± std over seeds, and LiST's gain over prompt-based fine-tuning, paired by seed.
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

RECIPE = "configs/cloze/list_trec6.yaml"
ARMS = {"prompt-based fine-tuning": ["--model", "lightning_peft.modules.AdapterModule"], "LiST": []}


def seed_scores(out: Path, seed: int, extra: tuple[str, ...] = (), arms: tuple[str, ...] = tuple(ARMS)
                ) -> dict[str, dict[str, float]]:
    """Test accuracy and macro-F1 of each of `arms` at `seed`, and of the untrained adapters ("zero-shot")."""
    scores = {}
    for arm in arms:
        switch = ARMS[arm]
        written = fit_once(out / arm.replace(" ", "_") / f"seed-{seed}",
                           ["--config", RECIPE, "--seed_everything", str(seed), "--data.init_args.shot_seed", str(seed),
                            "--test_before_fit", "true", *extra, *switch],  # the switch last: it drops LiST-only options
                           ("test_before_training", "test"))
        scores[arm] = {m: written["test"][f"test/{m}"] for m in ("acc", "f1")}
        scores.setdefault("zero-shot", {m: written["test_before_training"][f"test/{m}"] for m in ("acc", "f1")})
    return scores


def table(by_seed: Scores) -> list[tuple[str, ...]]:
    """Rows: zero-shot, each arm (mean ± std), and LiST's paired gain over prompt-based fine-tuning (when both
    arms ran)."""
    return arm_rows(by_seed, ("zero-shot", *ARMS), (("LiST", "prompt-based fine-tuning"),), ("acc", "f1"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeded_options(parser, "list_selftraining")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                        help="The arms to run (default both; one arm alone gets no paired row), e.g. a LiST variant.")
    add_overrides(parser)
    args = parser.parse_args()
    extra = overrides_of(args)
    arms = tuple(arm for arm in ARMS if arm in args.arms)
    by_seed = {seed: seed_scores(args.output, seed, extra, arms) for seed in args.seeds}
    print_table(table(by_seed), ("arm", "seeds", "test acc", "test macro-F1"))
    target = args.results
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"seeds": args.seeds, "arms": list(arms), "overrides": list(extra), "scores": by_seed},
                                 indent=2, sort_keys=True))
    print(f"written to {target}")


if __name__ == "__main__":
    main()
