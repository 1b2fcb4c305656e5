"""SetFit with 8 shots per class vs full fine-tuning and vs the `setfit` library, on all-MiniLM-L6-v2.

    python benchmarks/setfit.py --dataset sms_spam --seeds 0 1 2
    python benchmarks/setfit.py --dataset bbc_news --seeds 0 --arms ours setfit

Tunstall et al. 2022 ("Efficient Few-Shot Learning Without Prompts", arXiv:2209.11055) report that
SetFit with a few shots per class comes within a few points of fine-tuning on the full training set.
Three arms, scored on the same seeded test split (`ClassificationData`'s, split_seed 42):

- `ours`: ContrastiveModule + SetFitData (8 shots per class drawn with shot_seed = seed; oversampling
  pairs, 1 body epoch at lr 2e-5, batch 16), then the logistic-regression head (scikit-learn's objective,
  C=1, L-BFGS) on all shots: setfit's default head.
- `ours_gradient`: the same with setfit's differentiable head instead (16 passes, batch 2, lr 1e-2).
- `setfit`: the `setfit` library 1.2 (logistic-regression head, its defaults otherwise) on the very
  same shot texts and seed, in its own virtual environment (`setfit_reference.py`), because it is a
  reference, not a dependency. Make that environment once:
      python -m venv /tmp/setfit-ref/venv && echo "$(python -c 'import site;print(site.getsitepackages()[0])')" \
          > /tmp/setfit-ref/venv/lib/python3.11/site-packages/main_venv.pth && \
          /tmp/setfit-ref/venv/bin/pip install setfit==1.2.0 scikit-learn
  (the .pth lets it reuse this environment's torch and transformers); point SETFIT_PYTHON at another one.
- `full`: the same encoder with a classification head (`HeadClassification`, FullFineTuning) trained on
  the whole training split (`--full_epochs`, lr 5e-5, batch 16).

Results (accuracy, macro-F1, training wall time) go to benchmarks/results/setfit_<dataset>.json with a
mean ± std table. Training times are of one process each, in sequence on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lightning_peft import zoo
from lightning_peft.data import ClassificationData, SetFitData
from lightning_peft.methods import FullFineTuning
from lightning_peft.modules import ContrastiveModule, SelectiveModule
from lightning_peft.tasks import HeadClassification

BACKBONE = "minilm-l6"
RESULTS = Path(__file__).parent / "results"
REFERENCE = Path(__file__).with_name("setfit_reference.py")
SETFIT_PYTHON = os.environ.get("SETFIT_PYTHON", "/tmp/setfit-ref/venv/bin/python")
SPLITS = {"sms_spam": dict(val_size=0, test_size=1000), "bbc_news": dict(val_size=0, test_size=445)}
SETTINGS = dict(batch_size=16, num_epochs=1, body_lr=2e-5, head_lr=1e-2, sampling_strategy="oversampling")


def _trainer(max_epochs: int) -> L.Trainer:
    return L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)


def _timed_fit_and_test(module: L.LightningModule, data: L.LightningDataModule, max_epochs: int) -> dict[str, float]:
    trainer = _trainer(max_epochs)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    (scores,) = trainer.test(module, datamodule=data, verbose=False)
    return {"acc": scores["test/acc"], "f1": scores["test/f1"], "train_seconds": seconds, "steps": trainer.global_step}


def setfit_data(dataset: str, seed: int, shots: int, max_length: int, gradient_head: bool = False) -> SetFitData:
    head = dict(head_batch_size=2, head_epochs=16) if gradient_head else dict(head_batch_size=None, head_epochs=1)
    return SetFitData(dataset, tokenizer=BACKBONE, shots_per_class=shots, shot_seed=seed, max_length=max_length,
                      batch_size=SETTINGS["batch_size"], sampling_strategy=SETTINGS["sampling_strategy"],
                      **head, **SPLITS[dataset])


def run_ours(dataset: str, seed: int, shots: int, max_length: int, gradient_head: bool = False) -> dict[str, float]:
    L.seed_everything(seed)
    data = setfit_data(dataset, seed, shots, max_length, gradient_head)
    module = ContrastiveModule(backbone=BACKBONE, method=FullFineTuning(), label_names=data.label_names,
                               head_fit="gradient" if gradient_head else "logistic_regression",
                               head_lr=SETTINGS["head_lr"], optimizer=partial(torch.optim.AdamW, lr=SETTINGS["body_lr"]))
    return _timed_fit_and_test(module, data, max_epochs=1)


def run_full(dataset: str, seed: int, max_length: int, epochs: int) -> dict[str, float]:
    L.seed_everything(seed)
    data = ClassificationData(dataset, tokenizer=BACKBONE, max_length=max_length, batch_size=16, **SPLITS[dataset])
    module = SelectiveModule(backbone=BACKBONE, task=HeadClassification(), method=FullFineTuning(),
                             label_names=data.label_names, optimizer=partial(torch.optim.AdamW, lr=5e-5))
    return _timed_fit_and_test(module, data, max_epochs=epochs)


def shot_and_test_texts(dataset: str, seed: int, shots: int, max_length: int) -> dict:
    """The raw texts and labels of our arm's shots and test split, for the library (checked against our token ids)."""
    data = setfit_data(dataset, seed, shots, max_length)
    records = data.prepare_records(data.read_data().records)  # the order the store was tokenized in
    data.setup()
    tokenizer = zoo.load_tokenizer(BACKBONE)
    out = {}
    for name, split in (("shots", "train"), ("test", "test")):
        examples = data.datasets[split]
        texts = [records[index]["text"] for index in examples.indices]
        labels = [examples[position]["label"] for position in range(len(examples))]
        first = tokenizer(texts[0], truncation=True, max_length=max_length)["input_ids"]
        assert first == examples[0]["input_ids"], "record order differs from the tokenized store"
        out[name] = {"texts": texts, "labels": labels}
    return out


def run_setfit(dataset: str, seed: int, shots: int, max_length: int) -> dict[str, float]:
    job = {"encoder": zoo.resolve(BACKBONE), "seed": seed, "max_length": max_length, **SETTINGS,
           **shot_and_test_texts(dataset, seed, shots, max_length)}
    with tempfile.TemporaryDirectory() as folder:
        job_path, result_path = Path(folder) / "job.json", Path(folder) / "result.json"
        job_path.write_text(json.dumps(job))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        subprocess.run([SETFIT_PYTHON, "-P", str(REFERENCE), str(job_path), str(result_path)], check=True, env=env)
        return json.loads(result_path.read_text())


def summary(runs: list[dict[str, float]]) -> dict[str, str]:
    def mean_std(key: str, scale: float) -> str:
        values = [run[key] * scale for run in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.1f} ± {spread:.1f}"

    return {"acc": mean_std("acc", 100), "f1": mean_std("f1", 100), "train_seconds": mean_std("train_seconds", 1)}


def record(path: Path, arm: str, seed: int, run: dict) -> dict:
    """Add one run to the results file, read again first (arms of one dataset may run in separate processes)."""
    results = json.loads(path.read_text()) if path.exists() else {}
    entry = results.setdefault(arm, {"runs": {}})
    entry["runs"][str(seed)] = run
    entry["summary"] = summary(list(entry["runs"].values()))
    path.write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sms_spam", choices=sorted(SPLITS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["ours", "setfit", "full"], choices=["ours", "ours_gradient", "setfit", "full"])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=256, help="all-MiniLM-L6-v2's max_seq_length")
    parser.add_argument("--full_epochs", type=int, default=1)
    parser.add_argument("--full_seeds", type=int, default=1, help="seeds of the full fine-tuning arm (the first n)")
    parser.add_argument("--sampling_strategy", default=SETTINGS["sampling_strategy"],
                        choices=["oversampling", "undersampling", "unique"], help="pairs, for ours and the library alike")
    args = parser.parse_args()
    SETTINGS["sampling_strategy"] = args.sampling_strategy
    path = RESULTS / f"setfit_{args.dataset}.json"
    for seed in args.seeds:  # seeds outermost: every arm of a seed is done before the next seed starts
        for arm in args.arms:
            if arm == "full" and seed not in args.seeds[: args.full_seeds]:
                continue
            if arm in ("ours", "ours_gradient"):
                run = run_ours(args.dataset, seed, args.shots, args.max_length, gradient_head=arm == "ours_gradient")
            elif arm == "setfit":
                run = run_setfit(args.dataset, seed, args.shots, args.max_length)
            else:
                run = run_full(args.dataset, seed, args.max_length, args.full_epochs)
            print(json.dumps({"arm": arm, "seed": seed, **run}), flush=True)
            results = record(path, arm, seed, {**run, "command": " ".join(["python", *sys.argv])})
    for arm, entry in results.items():
        print(f"{args.dataset:10s} {arm:7s} seeds={sorted(entry['runs'])} "
              + " ".join(f"{k}={v}" for k, v in entry["summary"].items()))


if __name__ == "__main__":
    main()
