"""Does bf16 autocast change a recipe's training signal? Loss and trainable-parameter gradients under
fp32 and CPU bf16 autocast (what `--trainer.precision bf16-mixed` runs) at the same points: the first
batches, then every `--every` steps along an fp32 AdamW trajectory at the recipe's peak rate.

    python benchmarks/precision_gradients.py --config configs/soft_prompt/prompt_tuning_trec6.yaml --lr 0.3

Prints, per point: both losses, the gradients' norms and cosine, and the share of coordinates whose
gradient sign agrees. Issue 22 used it to tell an evaluation or gradient error from a trajectory that
drifts (docs/performance.md). One process, the recipe built by the CLI (`recipe_run.recipe_cli`).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from recipe_run import recipe_cli


def _signals(module, batch, params) -> dict[str, tuple[float, torch.Tensor]]:
    out = {}
    for name, context in (("fp32", contextlib.nullcontext()), ("bf16", torch.autocast("cpu", dtype=torch.bfloat16))):
        module.zero_grad()
        with context:
            loss = module.task.step(module.model, batch).loss
        loss.backward()
        out[name] = (float(loss), torch.cat([p.grad.flatten() for p in params]).clone())
    return out


def _report(label: str, signals: dict, params) -> None:
    (l32, g32), (l16, g16) = signals["fp32"], signals["bf16"]
    flat = torch.cat([p.detach().flatten() for p in params])
    print(f"{label}: trainable rms {flat.pow(2).mean().sqrt():.3f}; loss fp32 {l32:.4f} bf16 {l16:.4f}; "
          f"grad norm fp32 {g32.norm():.4g} bf16 {g16.norm():.4g}; cosine {torch.cosine_similarity(g32, g16, dim=0):.4f}; "
          f"sign agreement {(g32.sign() == g16.sign()).float().mean():.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the recipe YAML")
    parser.add_argument("--lr", type=float, required=True, help="AdamW rate of the fp32 trajectory (the recipe's peak)")
    parser.add_argument("--first", type=int, default=3, help="batches compared before any step")
    parser.add_argument("--steps", type=int, default=12, help="fp32 AdamW steps taken")
    parser.add_argument("--every", type=int, default=4, help="compare every this many steps")
    parser.add_argument("--seed", type=int, default=42, help="seed_everything and the data's split_seed")
    args = parser.parse_args()
    cli = recipe_cli([args.config], 1, args.seed, "--trainer.precision", "32-true",
                     "--data.init_args.split_seed", str(args.seed))
    data, module = cli.datamodule, cli.model
    data.prepare_data()
    data.setup("fit")
    module.trainer, cli.trainer.datamodule = cli.trainer, data  # what fit would attach; setup reads data facts
    module.setup("fit")
    module.configure_model()
    params = [p for p in module.parameters() if p.requires_grad]
    batches = iter(data.train_dataloader())
    for index in range(args.first):
        _report(f"batch {index}, before training", _signals(module, next(batches), params), params)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    batches = iter(data.train_dataloader())  # the trajectory starts from the first batch again, as training would
    for step in range(args.steps):
        batch = next(batches)
        if step % args.every == args.every - 1:
            _report(f"fp32 step {step}", _signals(module, batch, params), params)
        module.zero_grad()
        module.task.step(module.model, batch).loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
