"""What `CausalLMSFT(chunked_loss="auto")` (the default) saves per training step, against the model's own loss.

    python benchmarks/chunked_loss_ab.py                          # SmolLM2-135M + LoRA, movie_dialog and trec6, fp32 and bf16
    python benchmarks/chunked_loss_ab.py --backbone tiny-llama --rounds 2 --output /tmp/ab.json   # smoke run

One process, one model (LoRA r=16, alpha 32, dropout 0.05 on every linear layer, as `throughput.py`), the
batches `throughput.py` trains (the plain loader's order, padded): each round times forward + backward of
every batch once with each loss, the two losses alternating batch by batch and their order swapping every
round, so drift in the machine's load falls on both alike. Reported per loss: median seconds per step
(wall and process CPU time) over all rounds and batches, and the ratio. The optimizer step is left out:
it is the same for both. Results: `--output` (JSON) and a printed table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from throughput import model_path, training_order, workload_data

from lightning_peft.data.collate import pad_right
from lightning_peft.methods import Lora
from lightning_peft.tasks import CausalLMSFT

LOSSES = {"own loss (chunked_loss: false)": CausalLMSFT(chunked_loss=False), "auto (default)": CausalLMSFT()}


def batches(workload: str, path: str, batch_size: int, steps: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    examples = training_order(workload_data(workload, batch_size, steps), path)
    out = []
    for start in range(0, len(examples), batch_size):
        group = examples[start:start + batch_size]
        ids = pad_right([e["input_ids"] for e in group], pad_id)
        out.append({"input_ids": ids, "labels": pad_right([e["labels"] for e in group], -100),
                    "attention_mask": pad_right([[1] * len(e["input_ids"]) for e in group], 0)})
    return out


def time_step(task: CausalLMSFT, model: torch.nn.Module, batch: dict, precision: str) -> tuple[float, float, float]:
    """(wall s, process CPU s, loss) of one forward + backward."""
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = task.step(model, batch).loss
    loss.backward()
    return time.perf_counter() - wall, time.process_time() - cpu, float(loss.detach())


def measure(model: torch.nn.Module, data: list[dict], precision: str, rounds: int) -> dict:
    names = list(LOSSES)
    times = {name: {"wall": [], "cpu": [], "losses": []} for name in names}
    for name in names:  # warm-up: one batch each
        time_step(LOSSES[name], model, data[0], precision)
    for round_ in range(rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for batch in data:
            for name in order:
                wall, cpu, loss = time_step(LOSSES[name], model, batch, precision)
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
                times[name]["losses"].append(loss)
    own, auto = (times[name] for name in names)
    worst = max(abs(a - b) for a, b in zip(own["losses"], auto["losses"]))
    result = {name: {"wall_s": statistics.median(t["wall"]), "cpu_s": statistics.median(t["cpu"])} for name, t in times.items()}
    result["speedup_wall"] = result[names[0]]["wall_s"] / result[names[1]]["wall_s"]
    result["speedup_cpu"] = result[names[0]]["cpu_s"] / result[names[1]]["cpu_s"]
    result["max_loss_difference"] = worst
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2-135m", help="zoo name, hub id or folder (default: smollm2-135m)")
    parser.add_argument("--datasets", default="movie_dialog,trec6", help="workloads of throughput.py, comma-separated")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (CPU autocast), comma-separated")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per batch (default 8, as throughput.py)")
    parser.add_argument("--steps", type=int, default=6, help="batches per round (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches, each loss once per batch (default 3)")
    parser.add_argument("--output", default="benchmarks/results/chunked_loss_ab.json", help="JSON file")
    args = parser.parse_args()
    from lightning_peft import zoo

    path = model_path(args.backbone)
    tokenizer = zoo.load_tokenizer(path)
    torch.manual_seed(0)
    model = Lora(r=16, alpha=32, dropout=0.05, target_modules="all-linear").apply(AutoModelForCausalLM.from_pretrained(path)).model.train()
    results = {"command": "python benchmarks/chunked_loss_ab.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "threads": torch.get_num_threads(), "rows": []}
    print(f"{'workload':<13} {'precision':<9} {'own loss s/step':>16} {'auto s/step':>12} {'speedup (wall)':>15} "
          f"{'speedup (CPU)':>14} {'max |loss diff|':>16}")
    for workload in args.datasets.split(","):
        data = batches(workload, path, args.batch_size, args.steps, tokenizer.pad_token_id)
        labelled = sum(int((b["labels"][:, 1:] != -100).sum()) for b in data) / sum(int(b["attention_mask"].numel()) for b in data)
        for precision in args.precisions.split(","):
            row = {"workload": workload, "precision": precision, "labelled_fraction_of_positions": labelled,
                   **measure(model, data, precision, args.rounds)}
            results["rows"].append(row)
            own, auto = (row[name] for name in LOSSES)
            print(f"{workload:<13} {precision:<9} {own['wall_s']:>16.3f} {auto['wall_s']:>12.3f} {row['speedup_wall']:>15.2f} "
                  f"{row['speedup_cpu']:>14.2f} {row['max_loss_difference']:>16.2e}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
