"""The code-personalisation comparison (Zlotchevski et al. 2022, "Exploring and Evaluating Personalized
Models for Code Generation"): full fine-tuning, embeddings + head, last block, prefix tuning and LoRA on
SmolLM2-135M, trained on the email package's train files (`configs/code/*.yaml`), scored on held-out files.

Per arm (one process each, so its peak memory is its own): trainable parameters, seconds per step and
peak RSS of training (`StepClock`), next-token loss on the validation files, the completion line's loss on
the test files, and exact match of greedy single-line completions (`evaluation/code_completion.py`).
`--method base` scores the untrained model (the LoRA recipe before any step: B = 0).

    flock /tmp/lp-bench.lock python benchmarks/code_personalisation.py --method lora --steps 30 --completions 40
    python benchmarks/code_personalisation.py --table          # the ranking from the saved results

Each run adds its figures to benchmarks/results/code_personalisation.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from recipe_run import fit_timed, recipe_cli

from lightning_peft.evaluation.code_completion import line_exact_match

RESULTS = Path(__file__).parent / "results" / "code_personalisation.json"
METHODS = ["full", "embeddings_head", "last_block", "prefix_tuning", "lora"]
NEW_TOKENS = 32


@torch.inference_mode()
def mean_loss(cli, loader, batches: int) -> float:
    """Token-weighted next-token loss of the task over the first `batches` batches of `loader`."""
    model, nll, tokens = cli.model.probe_model().eval(), 0.0, 0
    for k, batch in enumerate(loader):
        if k == batches:
            break
        out = cli.model.task.step(model, batch)
        nll, tokens = nll + float(out.token_nll), tokens + int(out.tokens)
    return nll / tokens


def run(method: str, steps: int, completions: int, seed: int, backbone: str) -> dict:
    recipe = "lora" if method == "base" else method
    cli = recipe_cli(["configs/code/data.yaml", f"configs/code/{recipe}.yaml"], steps, seed,
                     "--test_before_fit", "false", "--test_after_fit", "false", "--model.init_args.backbone", backbone)
    if method == "base":
        cli.datamodule.setup()
        cli.model.configure_model()
        training: dict = {}
    else:
        training = fit_timed(cli)
    data = cli.datamodule
    examples = data.test_completions()[:completions]
    model = cli.model.probe_model().eval()
    scores = line_exact_match(model, data.tokenizer, examples, NEW_TOKENS, batch_size=8,
                              max_tokens=data.max_length - NEW_TOKENS)
    result = {"method": method, "backbone": backbone, "steps": 0 if method == "base" else steps, "seed": seed,
              "train": training,
              "trainable_parameters": 0 if method == "base" else sum(p.numel() for g in cli.model.groups.values()
                                                                     for p in g.values()),
              "val_loss_heldout_files": mean_loss(cli, data.val_dataloader(), batches=3),
              "test_completion_line_loss": mean_loss(cli, data.test_dataloader(), batches=4),
              **scores}
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[f"{method}_{backbone}_steps{result['steps']}_seed{seed}"] = result
    RESULTS.write_text(json.dumps(saved, indent=1))
    return result


def parameters(backbone: str) -> dict:
    """Trainable parameters of each method's recipe (weights loaded and adapted; nothing trained: seconds)."""
    counts = {}
    for method in METHODS:
        cli = recipe_cli(["configs/code/data.yaml", f"configs/code/{method}.yaml"], 1, 0,
                         "--model.init_args.backbone", backbone)
        cli.model.configure_model()
        counts[method] = sum(p.numel() for g in cli.model.groups.values() for p in g.values())
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[f"trainable_parameters_{backbone}"] = counts
    RESULTS.write_text(json.dumps(saved, indent=1))
    return counts


def table() -> str:
    rows = ["| method | steps | exact match | test line loss | held-out loss | trainable params | s/step | peak RSS GB |",
            "|---|---|---|---|---|---|---|---|"]
    arms = {key: r for key, r in json.loads(RESULTS.read_text()).items() if "method" in r}
    for key, r in sorted(arms.items(), key=lambda item: -item[1]["exact_match"]):
        train = r["train"]
        rows.append(f"| {r['method']} | {r['steps']} | {r['exact_match']:.3f} ({int(r['count'])}) | "
                    f"{r['test_completion_line_loss']:.3f} | {r['val_loss_heldout_files']:.3f} | "
                    f"{r['trainable_parameters']:,} | {train.get('seconds_per_step', float('nan')):.2f} | "
                    f"{train.get('peak_rss_bytes', float('nan')) / 1e9:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=["base", *METHODS])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--completions", type=int, default=40, help="test completions scored by exact match")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--backbone", default="smollm2-135m", help="tiny-llama for a smoke run")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--parameters", action="store_true", help="trainable parameters per method only (seconds)")
    args = parser.parse_args()
    if args.parameters:
        print(json.dumps(parameters(args.backbone), indent=1))
        return
    if args.table or args.method is None:
        print(table())
        return
    print(json.dumps(run(args.method, args.steps, args.completions, args.seed, args.backbone), indent=1))


if __name__ == "__main__":
    main()
