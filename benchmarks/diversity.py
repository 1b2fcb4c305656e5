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


def _data(negatives: int, backbone: str) -> PossibilityData:
    return PossibilityData("movie_dialog", tokenizer=backbone, max_negatives=negatives, batch_size=1,
                           eval_batch_size=4, val_size=50, test_size=0)


def _module(task, backbone: str) -> LoraModule:
    return LoraModule(backbone=backbone, task=task, method=Lora(r=16, alpha=32, target_modules="all-linear"),
                      optimizer=partial(torch.optim.AdamW, lr=5e-4, weight_decay=0.0))


def _trainer(steps: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0 if steps else None)


def arm(name: str, args) -> dict:
    """Train one arm (none for the base), then measure held-out perplexity and the diversity of n samples."""
    L.seed_everything(42)
    negatives = args.negatives if name == "possibility" else 0
    data = _data(negatives, args.backbone)
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
    settings = GenerationSettings(max_new_tokens=32, do_sample=True, temperature=0.75, top_p=1.0, top_k=0, seed=0)
    samples = sample_sets(runnable, prompts, settings)
    result = {"train_seconds": round(trained, 1), "val_perplexity": perplexity, **scores(samples, args.embed),
              "contexts": len(contexts), "validation_contexts": len(groups), "example": samples[0]}
    print(name, json.dumps(result), flush=True)
    return result


def _contexts(data: PossibilityData) -> list[str]:
    """The validation contexts' text, in split order (decoded from the stored matching prompt is lossy; re-group)."""
    from lightning_peft.data.splits import split_indices

    records = data.prepare_records(list(data.read_data().records))
    order = split_indices(len(records), data.val_size, data.test_size, data.split_seed)["validation"]
    return [records[i]["context"] for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m", help="tiny-llama for a smoke run of the script")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--contexts", type=int, default=50)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--negatives", type=int, default=6)
    parser.add_argument("--arms", nargs="+", default=["base", "sft", "possibility"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.embed = encoder("minilm-l6")
    results = {name: arm(name, args) for name in args.arms}
    settings = {k: v for k, v in vars(args).items() if k != "embed"}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    for name, r in results.items():
        print(f"{name:12s} ppl {r['val_perplexity']:.2f}  distinct-1 {r['distinct_1']:.3f}  distinct-2 {r['distinct_2']:.3f}"
              f"  self-BLEU {r['self_bleu']:.3f}  emb-dist {r['embedding_distance']:.3f}  ({r['train_seconds']} s)")


if __name__ == "__main__":
    main()
