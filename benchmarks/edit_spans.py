"""Edit-span targets vs full rewrites (Kaneko & Okazaki 2023, "Reducing Sequence Length by Predicting
Edit Operations with Large Language Models"), on `dialog_corrections` with SmolLM2-135M.

Claims checked: (i) the targets are shorter by a stated factor (tokens, on SmolLM2's tokenizer);
(ii) training and generation are faster accordingly; (iii) correction accuracy is at least that of the
full-rewrite model at equal steps. The two arms are the recipes `configs/rewriting/full_rewrite_dialog.yaml`
and `configs/rewriting/edit_spans_dialog.yaml` (the same LoRA, data, split and steps).

    python benchmarks/edit_spans.py --lengths                      # (i): tokenizer only, seconds
    flock /tmp/lp-bench.lock python benchmarks/edit_spans.py --arm full_rewrite --steps 150 --eval 200
    flock /tmp/lp-bench.lock python benchmarks/edit_spans.py --arm edit_spans --steps 150 --eval 200

Each run adds its figures to benchmarks/results/edit_spans.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from recipe_run import fit_timed, recipe_cli

from lightning_peft import zoo
from lightning_peft.data import load_records
from lightning_peft.data.edits import decode, extract, serialise
from lightning_peft.data.splits import split_indices
from lightning_peft.evaluation.conjugate import greedy_outputs

RESULTS = Path(__file__).parent / "results" / "edit_spans.json"
TWIN = "configs/rewriting/full_rewrite_dialog.yaml"
ARMS = {"full_rewrite": [TWIN], "edit_spans": [TWIN, "configs/rewriting/edit_spans_dialog.yaml"]}
TEMPLATES = {"full_rewrite": "Fix the errors: {prompt}\nCorrected:", "edit_spans": "Fix the errors: {prompt}\nEdits:"}
SPLIT = dict(val_size=500, test_size=500, seed=42)  # the recipes' split: the test sentences are theirs


def _save(key: str, value: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = value
    RESULTS.write_text(json.dumps(results, indent=1))


def lengths() -> dict:
    """Target tokens (+ EOS) of every record, full rewrite vs serialised edits, on SmolLM2's tokenizer."""
    tokenizer = zoo.load_tokenizer("smollm2-135m")
    records = load_records("dialog_corrections")
    full = [len(tokenizer(r["response"], add_special_tokens=False)["input_ids"]) + 1 for r in records]
    edits = [len(tokenizer(serialise(extract(r["prompt"], r["response"])), add_special_tokens=False)["input_ids"]) + 1
             for r in records]
    changed = [k for k, r in enumerate(records) if r["prompt"] != r["response"]]
    result = {"records": len(records), "changed": len(changed),
              "mean_tokens_full": statistics.mean(full), "mean_tokens_edits": statistics.mean(edits),
              "ratio_all": sum(full) / sum(edits),
              "ratio_changed": sum(full[k] for k in changed) / sum(edits[k] for k in changed),
              "median_tokens_full": statistics.median(full), "median_tokens_edits": statistics.median(edits),
              "ratio_by_words": {}}
    for low, high in ((4, 8), (9, 14), (15, 20)):  # by sentence length (the noise is per word: longer, more edits)
        bucket = [k for k, r in enumerate(records) if low <= len(r["response"].split()) <= high]
        result["ratio_by_words"][f"{low}-{high}"] = sum(full[k] for k in bucket) / sum(edits[k] for k in bucket)
    _save("lengths", result)
    return result


def arm(name: str, steps: int, evaluate: int, seed: int, backbone: str) -> dict:
    """Train one arm for `steps`, then correct `evaluate` test sentences greedily and time it."""
    cli = recipe_cli(ARMS[name], steps, seed, "--test_after_fit", "false", "--model.init_args.backbone", backbone)
    training = fit_timed(cli)
    records = load_records("dialog_corrections")
    test = [records[k] for k in split_indices(len(records), SPLIT["val_size"], SPLIT["test_size"], SPLIT["seed"])["test"]]
    test = test[:evaluate]
    model, tokenizer = cli.model.probe_model().eval(), cli.datamodule.tokenizer
    prompts = [TEMPLATES[name].format(prompt=r["prompt"]) for r in test]
    started = time.perf_counter()
    with torch.inference_mode():
        outputs = greedy_outputs(model, tokenizer, prompts, max_new_tokens=64, batch_size=16)
    generation_seconds = time.perf_counter() - started
    if name == "edit_spans":
        decoded = [decode(r["prompt"], o) for r, o in zip(test, outputs)]
        corrected, skipped = [d.text for d in decoded], sum(d.skipped for d in decoded)
    else:
        corrected, skipped = [" ".join(o.split()) for o in outputs], 0
    right = [c == " ".join(r["response"].split()) for c, r in zip(corrected, test)]
    result = {"backbone": backbone, "steps": steps, "seed": seed, "train": training, "eval_sentences": len(test),
              "accuracy": sum(right) / len(test),
              "accuracy_changed": statistics.mean(x for x, r in zip(right, test) if r["prompt"] != r["response"]),
              "copy_source_accuracy": statistics.mean(r["prompt"] == r["response"] for r in test),
              "generation_seconds": generation_seconds,
              "generated_tokens_mean": statistics.mean(len(tokenizer(o)["input_ids"]) for o in outputs),
              "skipped_edits": skipped, "examples": [[r["prompt"], o] for r, o in zip(test[:5], outputs[:5])]}
    _save(f"{name}_{backbone}_steps{steps}_seed{seed}", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", action="store_true", help="measure target lengths only (tokenizer, seconds)")
    parser.add_argument("--arm", choices=sorted(ARMS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval", type=int, default=200, help="test sentences to correct")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--backbone", default="smollm2-135m", help="tiny-llama for a smoke run")
    args = parser.parse_args()
    result = lengths() if args.lengths or args.arm is None else arm(args.arm, args.steps, args.eval, args.seed, args.backbone)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
