"""Robust soft prompts with and without the consistency loss: accuracy over seen and unseen phrasings.

    python benchmarks/robust_prompts.py                        # the docs table (2 arms x 3 seeds, see --help)
    python benchmarks/robust_prompts.py --seeds 0 --steps 5 --test_examples 50   # a quick look
    python benchmarks/robust_prompts.py --arms consistency consistency_off augmented

Sun, Shaib, Wallace, "Evaluating the Zero-shot Robustness of Instruction-tuned Language Models",
ICLR 2024, arXiv:2306.11270: instruction-tuned models answer worse, and less consistently, under
unseen but equivalent phrasings of an instruction; a soft prompt trained so that the model's
outputs for an instruction and its paraphrases agree is proposed as a remedy. This benchmark
measures that claim on the library's recipe, `configs/soft_prompt/robust_prompt_trec6.yaml`
(SmolLM2-135M-Instruct, TREC-6 by verbalizer, a 20-token prompt initialised from text, three
training phrasings, `tasks.RobustPrompt(weight=1.0, divergence=js)`).

Arms (each a fresh process running the real CLI on the recipe; only the objective differs):

- `consistency`: the recipe. loss = CE(primary phrasing) + 1.0 * JS(class distribution under the
  primary phrasing, class distribution under the example's paraphrase).
- `augmented` (the control, "without" in the docs): the same batches and the same paraphrase of each
  example, the divergence term replaced by the task loss on the paraphrase:
  loss = CE(primary) + 1.0 * CE(paraphrase). This is plain prompt tuning on the mixed phrasings
  (this file's `AugmentedPhrasings`), so it sees exactly the inputs the recipe sees.
- `consistency_off`: the recipe with `weight: 0.0`. In `tasks.RobustPrompt` that is CE(primary)
  alone: the paraphrases are encoded (the second forward pass still runs) but reach no loss, so
  this is prompt tuning on the primary phrasing only. Not in the default set.

Seeds: each seed sets both `seed_everything` and the data's `split_seed`. The prompt's text
initialisation is the same for every seed and SmolLM2 has no dropout (attention_dropout 0), so
`seed_everything` alone has nothing random to act on; `split_seed` draws the train/test split, the batch order and which
paraphrase each training example is paired with. Both arms of a seed share all of these, so the
arm difference within a seed is paired; each seed is tested on its own held-out split.

Scoring (this file's `RobustnessReport` callback, in the training process when training ends):
the first `--test_examples` examples of that run's test split (the data module's own split, so
none was trained on), each rendered under every template, tokenised exactly as the data module
does (`ClassificationData.encode`, max_length 64), and scored by the run's own verbalizer
(`VerbalizerClassification.scores`: the label word's logit after the prompt, the recipe's
label words for every template). SEEN = the three training phrasings; UNSEEN = four phrasings
written here. The base row is the zero-shot backbone (no prompt) on the same examples and
templates. Besides accuracy, `agreement` is the share of examples that get the same predicted class
under every template of the group (the paper's consistency in one number).

Results go to benchmarks/results/robust_prompts.json (per template, per seed) and a table is printed:
mean ± std over seeds of the per-seed mean accuracy, and the spread (std over templates within a
seed, averaged over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from lightning_peft.tasks.robust import PARAPHRASE_KEYS, RobustPrompt

from arm_process import ROOT, exit_on_sigterm, fit_command, run_arm_process

RECIPE = ROOT / "configs" / "soft_prompt" / "robust_prompt_trec6.yaml"
RESULTS = Path(__file__).parent / "results" / "robust_prompts.json"
ARMS = ("consistency", "augmented", "consistency_off")
DEFAULT_ARMS = ("consistency", "augmented")
# The three training phrasings are read from the recipe (SEEN). These are the unseen ones: other
# wordings of the same instruction, each ending where an answer-type word follows naturally.
UNSEEN_TEMPLATES = (
    "Here is a question: {text}\nThe expected answer type is",
    "Classify the question below by the kind of answer it asks for.\n{text}\nCategory:",
    "Which kind of answer does this question need? \"{text}\"\nKind of answer:",
    "Input: {text}\nTask: name the answer category (abbreviation, description, entity, person, location "
    "or number).\nOutput:",
)


class AugmentedPhrasings(RobustPrompt):
    """The control objective: task loss on the primary phrasing plus `weight` x task loss on the paraphrase.

    Same data, same paraphrase pairs and the same two forward passes as `RobustPrompt`, but no
    divergence between them: plain prompt tuning on the mixed phrasings. `divergence` is unused.
    """

    def step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        if not any(key in batch for key in PARAPHRASE_KEYS):
            return self.task.step(model, batch)
        output = self.task.step(model, batch)
        paraphrased = self.task.step(model, {"input_ids": batch["paraphrase_input_ids"],
                                             "attention_mask": batch["paraphrase_attention_mask"],
                                             "labels": batch["labels"]})
        output.loss = output.loss + self.weight * paraphrased.loss
        return output


# -- scoring ------------------------------------------------------------------------------


def test_records(split_seed: int, count: int) -> list[dict]:
    """The first `count` examples of the recipe's test split for `split_seed`, as the data module draws them."""
    from lightning_peft.data import load_records
    from lightning_peft.data.classification import ClassificationData
    from lightning_peft.data.splits import split_indices

    data = _recipe()["data"]["init_args"]
    module = ClassificationData(dataset=data["dataset"], max_length=data["max_length"])
    records = module.prepare_records(load_records(data["dataset"], kind="classification"))
    split = split_indices(len(records), data["val_size"], data["test_size"], split_seed)["test"]
    if count > len(split):
        raise SystemExit(f"--test_examples {count} exceeds the recipe's test split of {len(split)} examples.")
    return [records[i] for i in split[:count]]


def predictions(model: torch.nn.Module, scorer: Any, tokenizer: Any, records: list[dict], templates: list[str],
                batch_size: int) -> dict[str, list[int]]:
    """Predicted class index of every record under every template (eval mode, no gradients)."""
    from lightning_peft.data.classification import ClassificationData
    from lightning_peft.data.collate import pad_right
    from lightning_peft.evaluation.probes import evaluation_mode

    encoder = ClassificationData(dataset="trec6", max_length=_recipe()["data"]["init_args"]["max_length"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out = {}
    with evaluation_mode(model):
        for template in templates:
            ids = encoder.encode(records, tokenizer, template, "template")
            preds = []
            for start in range(0, len(ids), batch_size):
                rows = ids[start:start + batch_size]
                input_ids = pad_right(rows, pad_id).to(device)
                mask = pad_right([[1] * len(r) for r in rows], 0).to(device)
                preds += scorer.scores(model, input_ids, mask).argmax(-1).tolist()
            out[template] = preds
    return out


def summarise(preds: dict[str, list[int]], labels: list[int], seen: list[str], unseen: list[str]) -> dict:
    """Accuracy per template; per group its mean, std over templates (population) and all-template agreement."""
    accuracy = {t: sum(p == y for p, y in zip(preds[t], labels)) / len(labels) for t in preds}

    def group(templates: list[str]) -> dict:
        accs = [accuracy[t] for t in templates]
        agree = sum(len({preds[t][i] for t in templates}) == 1 for i in range(len(labels))) / len(labels)
        return {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs), "agreement": agree}

    return {"accuracy": accuracy, "seen": group(seen), "unseen": group(unseen), "all": group(seen + unseen)}


class RobustnessReport(L.Callback):
    """Benchmark helper added to each run: when training ends, scores the trained prompt on every template
    (see the module docstring) and writes the summary, with training time, to a JSON file.

    Args:
        path: The JSON file to write.
        seen: The training phrasings.
        unseen: Phrasings never trained on.
        test_examples: How many examples of the run's test split to score.
        batch_size: Scoring batch size.
    """

    def __init__(self, path: str, seen: list[str], unseen: list[str], test_examples: int, batch_size: int = 64) -> None:
        self.path, self.seen, self.unseen = Path(path), list(seen), list(unseen)
        self.test_examples, self.batch_size = test_examples, batch_size
        self.started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        train_seconds = time.perf_counter() - self.started
        data = trainer.datamodule
        records = test_records(data.split_seed, self.test_examples)
        test = data.datasets["test"]  # the run's own test split must be the one scored
        expected = [test[i]["input_ids"] for i in range(len(records))]
        if [list(x) for x in expected] != data.encode(records, pl_module.tokenizer, data.templates[0], "template"):
            raise RuntimeError("the scored examples are not the run's test split; the split logic has changed.")
        labels = [data.label_names.index(r["label"]) for r in records]
        scorer = pl_module.task.task  # the recipe's bound VerbalizerClassification
        started = time.perf_counter()
        preds = predictions(pl_module.model, scorer, pl_module.tokenizer, records, self.seen + self.unseen,
                            self.batch_size)
        loss = trainer.callback_metrics.get("train/loss")  # the last logged training loss
        report = {**summarise(preds, labels, self.seen, self.unseen), "train_seconds": train_seconds,
                  "score_seconds": time.perf_counter() - started, "global_step": trainer.global_step,
                  "train_loss": None if loss is None else float(loss)}
        self.path.write_text(json.dumps(report, indent=2))


def base_report(backbone: str, seed: int, args: argparse.Namespace) -> dict:
    """The zero-shot backbone (no prompt) on the same examples and templates, with the recipe's verbalizer."""
    from transformers import AutoModelForCausalLM

    from lightning_peft import zoo
    from lightning_peft.data.catalog import CATALOG
    from lightning_peft.tasks import VerbalizerClassification

    recipe = _recipe()
    tokenizer = zoo.load_tokenizer(backbone)
    model = AutoModelForCausalLM.from_pretrained(zoo.resolve(backbone), dtype=torch.float32)
    label_names = list(CATALOG[recipe["data"]["init_args"]["dataset"]].labels)
    words = recipe["model"]["init_args"]["task"]["init_args"]["task"]["init_args"]["label_words"]
    scorer = VerbalizerClassification(label_words=words)
    scorer.bind(tokenizer, label_names)
    records = test_records(seed, args.test_examples)
    labels = [label_names.index(r["label"]) for r in records]
    seen = seen_templates()
    started = time.perf_counter()
    preds = predictions(model, scorer, tokenizer, records, seen + list(UNSEEN_TEMPLATES), args.eval_batch_size)
    return {**summarise(preds, labels, seen, list(UNSEEN_TEMPLATES)), "score_seconds": time.perf_counter() - started}


# -- parent: one CLI process per (arm, seed) -------------------------------------------------


def _recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def seen_templates() -> list[str]:
    return list(_recipe()["data"]["init_args"]["templates"])


def arm_command(arm: str, seed: int, args: argparse.Namespace, root: Path, report: Path) -> list[str]:
    """The `lightning_peft.cli fit` command line of one arm and seed."""
    command = [
        *fit_command(RECIPE, args.backbone, seed, args.steps, root),
        "--data.init_args.split_seed", str(seed),
        "--data.init_args.batch_size", str(args.batch_size),
        "--test_after_fit", "false",
        "--model.init_args.task.init_args.weight", str(0.0 if arm == "consistency_off" else args.weight),
        "--trainer.callbacks+=" + json.dumps({"class_path": "robust_prompts.RobustnessReport", "init_args": {
            "path": str(report), "seen": seen_templates(), "unseen": list(UNSEEN_TEMPLATES),
            "test_examples": args.test_examples, "batch_size": args.eval_batch_size}}),
    ]
    if arm == "augmented":
        command += ["--model.init_args.task.class_path", "robust_prompts.AugmentedPhrasings"]
    return command


def run_arm(arm: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Train and score one arm and seed in its own process; return its report."""
    root = workdir / f"{arm}_seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    report, log = root / "robustness.json", root / "output.log"
    wall = run_arm_process(arm_command(arm, seed, args, root, report), log, report, f"{arm} seed {seed}")
    return {"arm": arm, "seed": seed, **json.loads(report.read_text()), "wall_seconds": wall}


def aggregate(runs: list[dict]) -> dict:
    """Per arm: mean and std over seeds of each group's per-seed mean accuracy, spread and agreement."""

    def stats(values: list[float]) -> dict:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "per_seed": values}

    table = {}
    for arm in dict.fromkeys(run["arm"] for run in runs):
        mine = [run for run in runs if run["arm"] == arm]
        table[arm] = {f"{group}_{key}": stats([run[group][key] for run in mine])
                      for group in ("seen", "unseen", "all") for key in ("mean", "std", "agreement")}
        table[arm]["seeds"] = [run["seed"] for run in mine]
    return table


def print_results(table: dict) -> None:
    from lightning_peft.cli.tables import print_table

    def pm(entry: dict) -> str:
        return f"{entry['mean']:.3f} ± {entry['std']:.3f}"

    print_table([(arm, pm(row["seen_mean"]), pm(row["unseen_mean"]), f"{row['seen_std']['mean']:.3f}",
                  f"{row['unseen_std']['mean']:.3f}", f"{row['all_std']['mean']:.3f}",
                  f"{row['seen_agreement']['mean']:.3f}", f"{row['unseen_agreement']['mean']:.3f}")
                 for arm, row in table.items()],
                ("arm", "seen acc", "unseen acc", "seen spread", "unseen spread", "all spread", "seen agree",
                 "unseen agree"))
    print("acc: mean ± std over seeds of the per-seed mean over templates; spread: std over templates within a "
          "seed, averaged over seeds; agree: share of examples predicted alike under every template of the group.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS),
                        help="objectives to train (see above): consistency = the recipe, augmented = the control")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="seed_everything and data split_seed of each run (one run per arm and seed)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run (the recipe says 150)")
    parser.add_argument("--batch_size", type=int, default=16, help="training batch size (the recipe's 16)")
    parser.add_argument("--weight", type=float, default=1.0,
                        help="weight of the second term: the divergence (consistency) or the paraphrase's task "
                             "loss (augmented); consistency_off always uses 0")
    parser.add_argument("--test_examples", type=int, default=120,
                        help="examples of each seed's 500-example test split scored under every template")
    parser.add_argument("--eval_batch_size", type=int, default=64, help="scoring batch size")
    parser.add_argument("--no_base", action="store_true", help="skip the zero-shot backbone row")
    parser.add_argument("--backbone", default="smollm2-135m", help="model for every run (zoo short name, hub id or folder)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep each run's folder (output.log, robustness.json) here; default: a temp dir")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "test_examples", "eval_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} must be a positive integer.")
    if len(set(args.arms)) != len(args.arms) or len(set(args.seeds)) != len(args.seeds):
        parser.error("--arms and --seeds must list each value once.")
    if not args.weight >= 0:
        parser.error(f"--weight {args.weight} must be >= 0.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    runs, base = [], []
    with tempfile.TemporaryDirectory(prefix="robust_prompts_") as tmp:
        workdir = args.workdir or Path(tmp)
        for seed in args.seeds:
            if not args.no_base:
                print(f"scoring the zero-shot base on seed {seed}'s test split ...", flush=True)
                base.append({"arm": "base (zero-shot)", "seed": seed, **base_report(args.backbone, seed, args)})
            for arm in args.arms:
                print(f"running {arm}, seed {seed} ({args.steps} steps on {args.backbone}) ...", flush=True)
                runs.append(run_arm(arm, seed, args, workdir))
                print(f"  seen {runs[-1]['seen']['mean']:.3f}  unseen {runs[-1]['unseen']['mean']:.3f}  "
                      f"({runs[-1]['wall_seconds']:.0f} s)", flush=True)
    table = aggregate(base + runs)
    print()
    print_results(table)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {
        "command": shlex.join(["python", "benchmarks/robust_prompts.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**settings, "recipe": str(RECIPE.relative_to(ROOT)), "seen_templates": seen_templates(),
                     "unseen_templates": list(UNSEEN_TEMPLATES)},
        "machine": {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "torch": torch.__version__},
        "wall_seconds": time.perf_counter() - started,
        "table": table,
        "runs": base + runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.output} ({result['wall_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
