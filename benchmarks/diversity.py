"""Possibility exploration vs plain SFT at equal steps: diversity of n samples per held-out context, and perplexity.

Claim (issue 19, after Mai et al. 2024, arXiv:2412.03343): Possibility Exploration Fine-Tuning raises
distinct-2 and lowers the self-similarity (self-BLEU; raises the pairwise embedding distance) of
n = 5 samples per context against plain SFT at the same number of steps, without a held-out reply
perplexity worse than SFT's by more than the stated margin (10%).

Both arms: SmolLM2-135M-Instruct + LoRA r=16, alpha 32 on all linear layers, AdamW lr 5e-4, the same
`movie_dialog` contexts with >= 3 distinct replies (4 replies per context, possibility numbers drawn
from 1..9), the same prompts, split and steps. Possibility exploration adds up to `--negatives`
mismatched rows per context with 0.5 * unlikelihood on their content-word lead tokens; the SFT arm
trains the matching rows alone (`max_negatives: 0`, `CausalLMSFT`), so the comparison isolates the
unlikelihood term. The untrained base is scored too. Diversity: for each of the first `--contexts`
validation contexts, n prompts naming possibility 1..n, sampled at temperature 0.75 (the reference's),
32 new tokens. Perplexity: the validation contexts' matching replies (`val/perplexity`).

    flock /tmp/lp-bench.lock .venv/bin/python benchmarks/diversity.py --steps 60 --contexts 50
    flock /tmp/lp-bench.lock .venv/bin/python benchmarks/diversity.py --arms sft possibility --seeds 42 1 2
    .venv/bin/python benchmarks/diversity.py --plot benchmarks/results/diversity.json docs/methods/diversity_seeds.png

Seed s seeds training (`seed_everything`), the training batch order (`order_seed`) and the sampling; the
split, and so the held-out contexts, stay the same. With several seeds the summary gives each arm's
mean ± sample std and possibility exploration minus SFT paired by seed.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lightning_peft.cli.diversity import encoder, sample_sets, scores
from lightning_peft.data import PossibilityData
from lightning_peft.inference import Runnable
from lightning_peft.inference.generation import GenerationSettings
from lightning_peft.methods import Lora
from lightning_peft.modules import LoraModule
from lightning_peft.tasks import CausalLMSFT, PossibilityExploration

RESULTS = Path(__file__).parent / "results" / "diversity.json"


METRICS = ("val_perplexity", "distinct_1", "distinct_2", "self_bleu", "embedding_distance")


def _data(negatives: int, backbone: str, seed: int) -> PossibilityData:
    return PossibilityData("movie_dialog", tokenizer=backbone, max_negatives=negatives, batch_size=1,
                           eval_batch_size=4, val_size=50, test_size=0, order_seed=seed)


def _module(task, backbone: str) -> LoraModule:
    return LoraModule(backbone=backbone, task=task, method=Lora(r=16, alpha=32, target_modules="all-linear"),
                      optimizer=partial(torch.optim.AdamW, lr=5e-4, weight_decay=0.0))


def _trainer(steps: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0 if steps else None)


def arm(name: str, args, seed: int) -> dict:
    """Train one arm (none for the base), then measure held-out perplexity and the diversity of n samples."""
    L.seed_everything(seed)
    negatives = args.negatives if name == "possibility" else 0
    data = _data(negatives, args.backbone, seed)
    module = _module(PossibilityExploration() if name == "possibility" else CausalLMSFT(), args.backbone)
    start = time.perf_counter()
    if name != "base":
        _trainer(args.steps).fit(module, datamodule=data)
    trained = time.perf_counter() - start
    evaluation = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    perplexity = float(evaluation.validate(module, datamodule=data, verbose=False)[0]["val/perplexity"])
    groups = data.datasets["validation"]
    tokenizer = data.resolve_tokenizer()
    contexts = _contexts(data)[: args.contexts]
    runnable = Runnable(module.probe_model().eval(), tokenizer, None, data.input_format)
    prompts = [[data.prompt_text(c, k) for k in range(1, args.samples + 1)] for c in contexts]
    settings = GenerationSettings(max_new_tokens=32, do_sample=True, temperature=0.75, top_p=1.0, top_k=0, seed=seed)
    samples = sample_sets(runnable, prompts, settings)
    result = {"train_seconds": round(trained, 1), "val_perplexity": perplexity, **scores(samples, args.embed),
              "contexts": len(contexts), "validation_contexts": len(groups), "example": samples[0]}
    print(name, seed, json.dumps(result), flush=True)
    return result


def _contexts(data: PossibilityData) -> list[str]:
    """The validation contexts' text, in split order (decoded from the stored matching prompt is lossy; re-group)."""
    from lightning_peft.data.splits import split_indices

    records = data.prepare_records(list(data.read_data().records))
    order = split_indices(len(records), data.val_size, data.test_size, data.split_seed)["validation"]
    return [records[i]["context"] for i in order]


def summarise(runs: dict[int, dict[str, dict]]) -> dict:
    """Each arm's mean ± sample std of every metric over seeds, and possibility minus SFT paired by seed (when both ran)."""
    from lightning_peft.pet.ensemble import mean_std

    arms = next(iter(runs.values()))
    summary = {name: {metric: mean_std([runs[seed][name][metric] for seed in runs]) for metric in METRICS} for name in arms}
    if {"sft", "possibility"} <= set(arms):
        summary["possibility_minus_sft"] = {
            metric: mean_std([runs[seed]["possibility"][metric] - runs[seed]["sft"][metric] for seed in runs])
            for metric in METRICS}
    return summary


PANELS = {"distinct_2": "distinct-2 (higher: more diverse)", "self_bleu": "self-BLEU (lower: more diverse)",
          "embedding_distance": "embedding distance (higher: more diverse)",
          "val_perplexity": "held-out reply perplexity (lower: better)"}


def plot(results: Path, png: Path) -> None:
    """One panel per metric: each seed's arms as points joined by a line (the pairing), from a results JSON."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    runs = json.loads(results.read_text())["runs"]
    arms = list(next(iter(runs.values())))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.3))
    for axis, (metric, title) in zip(axes, PANELS.items()):
        for seed, by_arm in runs.items():
            axis.plot(range(len(arms)), [by_arm[arm][metric] for arm in arms], marker="o", label=f"seed {seed}")
        axis.set_xticks(range(len(arms)), arms), axis.set_xlim(-0.4, len(arms) - 0.6)
        axis.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m", help="tiny-llama for a smoke run of the script")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--contexts", type=int, default=50)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--negatives", type=int, default=6)
    parser.add_argument("--arms", nargs="+", default=["base", "sft", "possibility"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one run of every arm per seed")
    parser.add_argument("--plot", nargs=2, type=Path, metavar=("RESULTS_JSON", "PNG"),
                        help="draw a results JSON (one line per seed across the arms) as a PNG, and train nothing")
    args = parser.parse_args()
    if args.plot:
        plot(*args.plot)
        return
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed ({args.seeds}); give each seed once.")
    torch.set_num_threads(2)
    args.embed = encoder("minilm-l6")
    runs = {seed: {name: arm(name, args, seed) for name in args.arms} for seed in args.seeds}
    settings = {k: v for k, v in vars(args).items() if k != "embed"}
    summary = summarise(runs)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": settings, "runs": runs, "summary": summary}, indent=2))
    for name, metrics in summary.items():
        print(f"{name:22s} " + "  ".join(f"{metric} {mean:.3f} ± {std:.3f}" for metric, (mean, std) in metrics.items()))


if __name__ == "__main__":
    main()
