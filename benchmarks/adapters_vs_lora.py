"""Bottleneck adapters vs LoRA at matched trainable-parameter counts, all-MiniLM-L6-v2 + a head on sms_spam.

    nice -n 10 python benchmarks/adapters_vs_lora.py --steps 150 --seeds 0 1 2

The audio-spectrogram PETL paper (Cappellazzo et al. 2024, arXiv:2312.03694) found bottleneck adapters
best among PEFT methods at equal budgets; this asks the same of a sentence encoder on SMS spam. Four arms,
each with the same data, head, optimizer, steps and seed:

- Houlsby adapters, reduction factor 16 (width 24, 12 adapters): 226,080 parameters;
- LoRA r=24 on query and value (peft): 221,184;
- Pfeiffer adapters, factor 16 (6 adapters): 113,040;
- LoRA r=12 on query and value: 110,592.

Every arm also trains the new 770-parameter head (its own learning rate). Test accuracy and macro F1 on
500 held-out messages (the catalog's seeded split). Results are appended to
benchmarks/results/adapters_vs_lora.jsonl, one line per arm and seed. Accuracy only: timings on a shared
CPU mean nothing, so none are reported.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lightning_peft.data import ClassificationData
from lightning_peft.methods import BottleneckAdapter, Lora
from lightning_peft.modules import AdapterModule, LoraModule
from lightning_peft.tasks import HeadClassification

RESULTS = Path(__file__).parent / "results" / "adapters_vs_lora.jsonl"
ARMS = {
    "houlsby_f16": lambda: (AdapterModule, BottleneckAdapter(placement="houlsby", reduction_factor=16)),
    "lora_qv_r24": lambda: (LoraModule, Lora(r=24, alpha=48, dropout=0.0, target_modules=["query", "value"])),
    "pfeiffer_f16": lambda: (AdapterModule, BottleneckAdapter(placement="pfeiffer", reduction_factor=16)),
    "lora_qv_r12": lambda: (LoraModule, Lora(r=12, alpha=24, dropout=0.0, target_modules=["query", "value"])),
}


def run_arm(name: str, seed: int, steps: int, lr: float, head_lr: float, root: Path) -> dict:
    L.seed_everything(seed)
    module_cls, method = ARMS[name]()
    module = module_cls(backbone="minilm-l6", task=HeadClassification(), method=method,
                        label_names=["ham", "spam"], optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.0),
                        group_lr={"head": head_lr})
    data = ClassificationData("sms_spam", tokenizer="minilm-l6", max_length=64, batch_size=16, val_size=0, test_size=500)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=root / f"{name}-{seed}")
    trainer.fit(module, datamodule=data)
    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    counts = {group: sum(p.numel() for p in params.values()) for group, params in module.groups.items()}
    return {"arm": name, "seed": seed, "steps": steps, "lr": lr, "head_lr": head_lr, "trainable": counts,
            "test_acc": metrics["test/acc"], "test_f1": metrics["test/f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head_lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--root", type=Path, default=Path("runs/benchmarks/adapters_vs_lora"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.arms:
            row = run_arm(name, seed, args.steps, args.lr, args.head_lr, args.root)
            print(json.dumps(row), flush=True)
            with RESULTS.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
