"""HFT vs full fine-tuning on SmolLM2-135M: speed, optimizer state, memory, and forgetting.

    python benchmarks/selective.py                     # both parts, defaults below (~25 min on 2 CPU cores)
    python benchmarks/selective.py --part speed --steps 12
    python benchmarks/selective.py --part forgetting --train_examples 480

Speed: the same model, data (movie_dialog SFT, 64 tokens, batch 16) and AdamW, each method in its
own process; seconds per step (median after warm-up), optimizer-state bytes, peak RSS, ratios.
Forgetting: train on a two-task sequence (movie_dialog replies, then TREC-6 answer types), then
measure perplexity on held-out news (lee_news), dialog perplexity and TREC-6 accuracy, for the
base, full fine-tuning and HFT (Hui et al. 2024, arXiv:2404.18466). Results go to
benchmarks/results/selective.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

from lightning_peft.callbacks import HalfFineTuning
from lightning_peft.data import ClassificationData, SFTData, TaskSequenceData
from lightning_peft.evaluation.probes import general_text_chunks, text_stats
from lightning_peft.methods import FullFineTuning
from lightning_peft.modules import SelectiveModule
from lightning_peft.tasks import CausalLMSFT, VerbalizerClassification

BACKBONE = "smollm2-135m"
RESULTS = Path(__file__).parent / "results" / "selective.json"
TREC_TEMPLATE = "Question: {text}\nAnswer type:"


class StepTimer(L.Callback):
    """Wall time of each training step (forward, backward, optimizer)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._start)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))


def _module(lr: float = 2e-5, backbone: str = BACKBONE) -> SelectiveModule:
    return SelectiveModule(backbone=backbone, task=CausalLMSFT(), method=FullFineTuning(),
                           optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=0.0))


def _trainer(callbacks, **kwargs) -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                     num_sanity_val_steps=0, callbacks=callbacks, **kwargs)


def run_speed(method: str, steps: int) -> dict:
    """One method's step time, optimizer state and peak memory (run in a fresh process)."""
    torch.manual_seed(0)
    timer = StepTimer()
    callbacks = [timer] + ([HalfFineTuning(every_n_epochs=1, seed=0)] if method == "hft" else [])
    data = SFTData("movie_dialog", tokenizer=BACKBONE, max_length=64, batch_size=16, bucket_by_length=False,
                   max_train_examples=16 * steps, val_size=0, test_size=0)
    trainer = _trainer(callbacks, max_steps=steps, limit_val_batches=0)
    trainer.fit(_module(), datamodule=data)
    warm = timer.times[2:] or timer.times
    return {"method": method, "seconds_per_step": statistics.median(warm),
            "optimizer_state_bytes": optimizer_state_bytes(trainer.optimizers[0]),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def trec_accuracy(module: SelectiveModule, examples: int, split: str = "validate", split_seed: int = 42) -> float:
    """TREC-6 answer-type accuracy by scoring the label words after the prompt (what stage 1 trained);
    `split` is "validate" (the split carved from training data) or "test", of the `split_seed` split."""
    data = ClassificationData("trec6", tokenizer=module.tokenizer, template=TREC_TEMPLATE, max_eval_examples=examples,
                              eval_batch_size=32, split_seed=split_seed)
    data.setup(split)
    task = VerbalizerClassification()
    task.bind(module.tokenizer, data.label_names)
    correct = total = 0
    loader = data.val_dataloader() if split == "validate" else data.test_dataloader()
    with torch.no_grad():
        for batch in loader:
            out = task.step(module.model, batch)
            correct += int((out.preds == out.target).sum())
            total += len(out.target)
    return correct / total


def _sequence(train_examples: int, eval_examples: int, backbone: str = BACKBONE, split_seed: int = 42) -> TaskSequenceData:
    """The two tasks; `split_seed` draws each task's splits, training subset and batch order."""
    common = {"max_length": 64, "batch_size": 16, "max_train_examples": train_examples, "max_eval_examples": eval_examples,
              "split_seed": split_seed}
    return TaskSequenceData(
        [SFTData("movie_dialog", **common),
         SFTData("trec6", prompt_column="text", response_column="label", prompt_template=TREC_TEMPLATE, **common)],
        names=["dialog", "trec"], tokenizer=backbone)


def run_forgetting(method: str, train_examples: int, eval_examples: int, windows: int) -> dict:
    """Train `method` on the two-task sequence (none for "base"), then measure what was kept and learned."""
    torch.manual_seed(0)
    module, data = _module(), _sequence(train_examples, eval_examples)
    module.configure_model()
    news = general_text_chunks(module.tokenizer, "lee_news", num_chunks=windows, chunk_tokens=128)
    base_stats, _ = text_stats(module.model.eval(), news)
    if method != "base":
        callbacks = [HalfFineTuning(every_n_epochs=1, seed=0)] if method == "hft" else []
        trainer = _trainer(callbacks, max_epochs=2, reload_dataloaders_every_n_epochs=1, limit_val_batches=0)
        trainer.fit(module, datamodule=data)
    stats, kl = text_stats(module.model.eval(), news, base=base_stats)
    data.setup("validate")
    dialog = _trainer([]).validate(module, dataloaders=data.tasks[0].val_dataloader(), verbose=False)[0]
    return {"method": method, "news_perplexity": stats.perplexity, "news_kl_from_base": kl,
            "dialog_perplexity": dialog["val/perplexity"], "trec_accuracy": trec_accuracy(module, eval_examples)}


def _in_subprocess(part: str, method: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", part, "--method", method, "--steps", str(args.steps),
               "--train_examples", str(args.train_examples), "--eval_examples", str(args.eval_examples),
               "--windows", str(args.windows)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print(rows: list[dict], columns: list[str]) -> None:
    print("  ".join(f"{c:>22}" for c in ["method", *columns]))
    for row in rows:
        print("  ".join([f"{row['method']:>22}", *(f"{row[c]:>22.4g}" for c in columns)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "forgetting", "all"], default="all")
    parser.add_argument("--steps", type=int, default=12, help="training steps per method for the speed part")
    parser.add_argument("--train_examples", type=int, default=480, help="training examples per task (forgetting)")
    parser.add_argument("--eval_examples", type=int, default=128, help="evaluation examples per task (forgetting)")
    parser.add_argument("--windows", type=int, default=24, help="128-token lee_news windows for perplexity")
    parser.add_argument("--worker", choices=["speed", "forgetting"], help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "speed":
        print(json.dumps(run_speed(args.method, args.steps)))
        return
    if args.worker == "forgetting":
        print(json.dumps(run_forgetting(args.method, args.train_examples, args.eval_examples, args.windows)))
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.part in ("speed", "all"):
        rows = [_in_subprocess("speed", m, args) for m in ("full", "hft")]
        _print(rows, ["seconds_per_step", "optimizer_state_bytes", "peak_rss_bytes"])
        full, hft = rows
        ratios = {k: hft[k] / full[k] for k in ("seconds_per_step", "optimizer_state_bytes", "peak_rss_bytes")}
        print("HFT / full:", {k: round(v, 3) for k, v in ratios.items()})
        results["speed"] = {"rows": rows, "hft_over_full": ratios, "steps": args.steps}
    if args.part in ("forgetting", "all"):
        rows = [_in_subprocess("forgetting", m, args) for m in ("base", "full", "hft")]
        _print(rows, ["news_perplexity", "news_kl_from_base", "dialog_perplexity", "trec_accuracy"])
        results["forgetting"] = {"rows": rows, "train_examples": args.train_examples, "eval_examples": args.eval_examples}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
