"""How much faster the cloze table (`benchmarks/cloze.py`) could run on this machine at most.

    python benchmarks/cpu_ceiling.py                        # the table's measured 224 minutes
    python benchmarks/cpu_ceiling.py --table-minutes 224 --repeats 5

Every claim of the table trains and scores SmolLM2-135M (LoRA on a frozen backbone, inputs of up to 128
tokens), so its wall-clock is bound by the fp32 matrix products of the model's body. This measures, in one
process:

- the ceiling: a 4096 x 4096 fp32 matrix product, in GFLOP/s (what torch's BLAS reaches on this CPU);
- scoring: the body's forward on 16 x 128 tokens with `logits_to_keep=1` (the cloze scores read one
  position), GFLOP/s = 2 * N * tokens / seconds;
- training: forward and backward of the LoRA model (r = 8 on q_proj, v_proj) on 4 x 128 tokens, the
  recipes' batch, GFLOP/s = 4 * N * tokens / seconds (the frozen weights need input gradients only);

with N the body's parameters that multiply activations (`count_parameters`: embeddings and LM head left
out; attention's own products, a few percent at 128 tokens, are not counted, so the efficiencies are
slight underestimates). The best time of `--repeats` runs counts. The last line scales the table's
measured minutes by the lower of the two efficiencies: an estimate of its time at the ceiling that holds
only if all of it were the model's products at these shapes. Time that is not products (start-up,
loading, data work) would make the true figure smaller, and so would products on shorter inputs
(trec6's questions), which run further below the ceiling than the 128-token shapes measured here.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lightning_peft.callbacks.flops import count_parameters  # noqa: E402
from lightning_peft.cli.tables import print_table  # noqa: E402
from lightning_peft.zoo import resolve  # noqa: E402


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    """The shortest of `repeats` timed calls of `work`, after one untimed warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(backbone: str, repeats: int, length: int = 128) -> dict[str, float]:
    """GFLOP/s of the fp32 matmul ceiling, of `backbone`'s scoring and of its LoRA training step (see the top)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    ceiling = 2 * 4096**3 / best_seconds(lambda: a @ b, repeats) / 1e9

    model = AutoModelForCausalLM.from_pretrained(resolve(backbone), dtype=torch.float32)
    body, _ = count_parameters(model.model)
    score_ids = torch.randint(0, model.config.vocab_size, (16, length))
    with torch.inference_mode():
        scoring = 2 * body * score_ids.numel() / best_seconds(
            lambda: model(input_ids=score_ids, logits_to_keep=1), repeats) / 1e9

    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    train_ids = torch.randint(0, model.config.vocab_size, (4, length))

    def step() -> None:
        lora(input_ids=train_ids, logits_to_keep=1).logits.float().logsumexp(-1).mean().backward()

    training = 4 * body * train_ids.numel() / best_seconds(step, repeats) / 1e9
    return {"ceiling": ceiling, "scoring": scoring, "training": training, "body_parameters": body}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-minutes", type=float, default=224.0,
                        help="The table's measured wall-clock (224: the six claims, one at a time, docs/methods/cloze.md).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each measurement; the best counts.")
    parser.add_argument("--backbone", default="smollm2-135m", help="A causal LM of the zoo (the table's: smollm2-135m).")
    parser.add_argument("--length", type=int, default=128,
                        help="Tokens per input (128: bbc_news's max_length; trec6's prompted questions: 18 on average).")
    args = parser.parse_args()
    gflops = measure(args.backbone, args.repeats, args.length)
    ceiling = gflops["ceiling"]
    rows = [("fp32 matmul 4096 x 4096 (the ceiling)", f"{ceiling:.0f}", "100%"),
            (f"{args.backbone} scoring, 16 x {args.length} tokens", f"{gflops['scoring']:.0f}", f"{gflops['scoring'] / ceiling:.0%}"),
            (f"{args.backbone} LoRA training step, 4 x {args.length} tokens", f"{gflops['training']:.0f}",
             f"{gflops['training'] / ceiling:.0%}")]
    print(f"{torch.get_num_threads()} threads; body N = {gflops['body_parameters'] / 1e6:.1f}M parameters")
    print_table(rows, ("what", "GFLOP/s", "of the ceiling"))
    share = min(gflops["scoring"], gflops["training"]) / ceiling
    print(f"the table's {args.table_minutes:.0f} min, all of it products at the ceiling: "
          f"{args.table_minutes * share:.0f} min ({1 / share:.2f}x faster)")


if __name__ == "__main__":
    main()
