"""Zero-shot vs MNR vs MNR + enforced-routing domain experts, by retrieval of held-out bbc_news (title, body) pairs.

    for arm in zero_shot mnr_experts mnr_single_expert mnr_full; do
        flock /tmp/lp-bench.lock python benchmarks/embeddings_mnr.py --steps 100 --seed 0 --arms $arm; done

Hallee et al. 2024 ("Contrastive Learning and Mixture of Experts Enables Precise Vector Embeddings",
arXiv:2401.15713) claim that a mixture of domain experts with enforced routing, trained with the
multiple-negatives-ranking loss, beats the single-expert model on per-domain retrieval. Arms, all on
all-MiniLM-L6-v2 (minilm-l6), the same seeded splits (`EmbeddingPairData`, split_seed 42) and the same
steps, batch 16 pairs, max_length 128:

- `zero_shot`: the pre-trained encoder, no training.
- `mnr_full`: MNR, the whole encoder trained (lr 2e-5): configs/encoders/mnr_bbc_news.yaml.
- `mnr_single_expert`: MNR, one trainable copy of every FFN, the rest frozen (lr 1e-4): the single-expert model.
- `mnr_experts`: MNR, five FFN copies, one per topic, enforced routing (lr 1e-4):
  configs/encoders/mnr_experts_bbc_news.yaml. Same trainable structure as the single expert, five times wider.

A seed sets initialisation, dropout and the batch order (`order_seed` 42 + seed) over the same split.
Each query (a title) ranks the held-out bodies: overall among all test bodies, per domain among its
topic's only. Results go to benchmarks/results/embeddings_mnr.json and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lightning_peft.data import EmbeddingPairData
from lightning_peft.methods import DomainExperts, FullFineTuning
from lightning_peft.modules import EmbeddingModule

BACKBONE = "minilm-l6"
RESULTS = Path(__file__).parent / "results"
TOPICS = ["business", "entertainment", "politics", "sports", "tech"]
ARMS = {"zero_shot": (FullFineTuning, {}, 0.0), "mnr_full": (FullFineTuning, {}, 2e-5),
        "mnr_single_expert": (DomainExperts, {"domains": ["all"]}, 1e-4),
        "mnr_experts": (DomainExperts, {"domains": TOPICS}, 1e-4)}


def run(arm: str, steps: int, seed: int, test_size: int) -> dict[str, float]:
    L.seed_everything(seed)
    method_cls, kwargs, lr = ARMS[arm]
    data = EmbeddingPairData("bbc_news", tokenizer=BACKBONE, batch_size=16, eval_batch_size=64, max_length=128,
                             val_size=0, test_size=test_size, split_seed=42, order_seed=42 + seed)
    module = EmbeddingModule(BACKBONE, method=method_cls(**kwargs), optimizer=partial(torch.optim.AdamW, lr=lr,
                                                                                      weight_decay=0.01))
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    if lr:
        trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    (scores,) = trainer.test(module, datamodule=data, verbose=False)
    return {**{k.removeprefix("test/"): float(v) for k, v in scores.items()}, "train_seconds": seconds,
            "steps": trainer.global_step, "trainable": sum(p.numel() for g in module.groups.values() for p in g.values())}


def table(results: dict[str, dict[str, float]]) -> str:
    columns = ["", *[f"{t}/" for t in TOPICS]]
    lines = ["| arm | steps | " + " | ".join(f"{c or 'all/'}R@1 / MRR" for c in columns) + " | train s |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    for arm, r in results.items():
        cells = [f"{r[c + 'recall@1']:.3f} / {r[c + 'mrr']:.3f}" for c in columns]
        lines.append(f"| {arm} | {r['steps']} | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test_size", type=int, default=400)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--output", type=Path, default=RESULTS / "embeddings_mnr.json",
                        help="results JSON; arms run with the same settings merge into it (one file per seed)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    # Arms may run one per process (each under the shared machine's time limit): results of the same settings merge.
    settings = {"steps": args.steps, "seed": args.seed, "test_size": args.test_size}
    saved = json.loads(out.read_text()) if out.is_file() else {}
    results = saved.get("results", {}) if saved.get("settings") == settings else {}
    for arm in args.arms:
        results[arm] = run(arm, args.steps, args.seed, args.test_size)
        out.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    print(table(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
