"""Why IAPT did not learn TREC-6 on SmolLM2-135M: step-0 loss and accuracy, per-layer norms, short runs.

    python benchmarks/iapt_diagnosis.py norms                       # hidden-state vs generated-prompt norms per layer
    python benchmarks/iapt_diagnosis.py init                        # test loss/acc: zero-shot vs IAPT at step 0
    python benchmarks/iapt_diagnosis.py train --steps 40 --lr 3e-3  # a short run outside the CLI (same data/seed)

IAPT: Zhu et al. 2024, "IAPT: Instruction-Aware Prompt Tuning for Large Language Models",
arXiv:2405.18203. The model is SmolLM2-135M-Instruct, the data the benchmark's (TREC-6 by verbalizer,
template "Question: {text}\\nAnswer type:", 500 test questions, split seed 42); each IAPT variant is
given as JSON init arguments, e.g. `--iapt '{"init": "random"}'`. The `train` command is a plain
AdamW loop with the recipes' schedule (10% linear warmup, linear decay) over the same training
batches the CLI would draw; the benchmark's numbers come from `benchmarks/soft_prompts.py`.
Set OMP_NUM_THREADS=1 on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from lightning_peft import zoo
from lightning_peft.data.classification import ClassificationData
from lightning_peft.methods.iapt import IAPT
from lightning_peft.tasks.classification import VerbalizerClassification

LABEL_WORDS = {"abbreviation": "abbreviation", "description": "description", "entity": "entity", "human": "person",
               "location": "location", "number": "number"}
TEMPLATE = "Question: {text}\nAnswer type:"


def setup(seed: int):
    torch.manual_seed(seed)
    tokenizer = zoo.load_tokenizer("smollm2-135m")
    data = ClassificationData("trec6", tokenizer=tokenizer, template=TEMPLATE, max_length=64, batch_size=16,
                              eval_batch_size=64, test_size=500, val_size=500, split_seed=42)
    data.setup()
    task = VerbalizerClassification(label_words=LABEL_WORDS)
    task.bind(tokenizer, data.label_names)
    base = AutoModelForCausalLM.from_pretrained(zoo.resolve("smollm2-135m"), torch_dtype=torch.float32).eval()
    return data, task, base


@torch.no_grad()
def evaluate(model, task, data) -> dict:
    model.eval()
    losses, correct, count = [], 0, 0
    for batch in data.test_dataloader():
        scores = task.scores(model, batch["input_ids"], batch["attention_mask"]).float()
        losses.append(F.cross_entropy(scores, batch["labels"], reduction="sum").item())
        correct += int((scores.argmax(-1) == batch["labels"]).sum())
        count += len(batch["labels"])
    return {"test_loss": sum(losses) / count, "test_acc": correct / count}


@torch.no_grad()
def norms(base, iapt_args: dict, data) -> None:
    """Per layer: RMS of the incoming hidden state at the first real token and at the others, and of the prompt."""
    batch = next(iter(data.test_dataloader()))
    ids, mask = batch["input_ids"][:16], batch["attention_mask"][:16]
    seen: dict[int, torch.Tensor] = {}
    layers = base.model.layers
    handles = [layer.register_forward_pre_hook(lambda m, a, kw, i=i: seen.__setitem__(i, (a[0] if a else kw["hidden_states"]).clone()),
                                               with_kwargs=True) for i, layer in enumerate(layers)]
    base.set_attn_implementation("eager")  # attention weights for the sink columns below
    out = base(input_ids=ids, attention_mask=mask, output_attentions=True)  # right-padded: column 0 is every row's first token
    plain = dict(seen)
    queries = mask[:, None, 1:, None].float()  # the real tokens after the first

    def on(weights):  # [B, heads, queries] -> mean over heads and real queries
        return ((weights * queries[..., 0]).sum() / (queries.sum() * weights.shape[1])).item()

    sink = [on(a[:, :, 1:, 0]) for a in out.attentions]  # weight of later real tokens on position 0
    for handle in handles:
        handle.remove()
    adapted = IAPT(**iapt_args).apply(base)
    k = adapted.model.num_tokens
    handles = [layer.register_forward_pre_hook(lambda m, a, kw, i=i: seen.__setitem__(i, (a[0] if a else kw["hidden_states"]).clone()),
                                               with_kwargs=True) for i, layer in enumerate(layers)]
    out = adapted.model(input_ids=ids, attention_mask=mask, output_attentions=True)  # these hooks run after IAPT's
    # mean weight of the real tokens' queries on the k prompt positions, and on the first real token
    sink_prompt = [on(a[:, :, k + 1:, :k].sum(-1)) for a in out.attentions]
    sink_first = [on(a[:, :, k + 1:, k]) for a in out.attentions]
    for handle in handles:
        handle.remove()
    adapted.model.remove_hooks()
    base.set_attn_implementation("sdpa")
    real = mask.bool()
    rows = []
    print("base: first token (tok0) and the other real tokens (rest); IAPT: its k prompt positions and the first real token")
    print(f"{'layer':>5} {'rms tok0':>9} {'max|tok0|':>9} {'rms rest':>9} {'max|rest|':>9} {'rms prompt':>10} "
          f"{'max|prompt|':>11} {'max|tok0| IAPT':>14} {'attn->tok0':>10} {'IAPT attn->prompt':>17} {'IAPT attn->tok0':>15}")
    for i in range(len(layers)):
        h = plain[i]
        first, rest = h[:, 0], h[:, 1:][real[:, 1:]]
        p, shifted = seen[i][:, :k], seen[i][:, k]
        row = [first.pow(2).mean().sqrt().item(), first.abs().max().item(), rest.pow(2).mean().sqrt().item(),
               rest.abs().max().item(), p.pow(2).mean().sqrt().item(), p.abs().max().item(), shifted.abs().max().item(),
               sink[i], sink_prompt[i], sink_first[i]]
        rows.append(row)
        print(f"{i:>5} " + " ".join(f"{v:>9.3g}" for v in row))
    print(json.dumps({"iapt": iapt_args, "rows": rows}))


def train(model, groups, task, data, steps: int, lr: float, log_every: int = 5) -> list[float]:
    params = [p for group in groups.values() for p in group.values()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, int(0.1 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    model.train()
    losses, step = [], 0
    while step < steps:
        for batch in data.train_dataloader():
            scores = task.scores(model, batch["input_ids"], batch["attention_mask"]).float()
            loss = F.cross_entropy(scores, batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
            if step % log_every == 0 or step == 1:
                print(f"step {step:>3} loss {loss.item():.3f}", flush=True)
            if step >= steps:
                break
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["norms", "init", "train"])
    parser.add_argument("--iapt", type=json.loads, action="append", default=None,
                        help="IAPT init arguments as JSON (repeat for several variants); default: IAPT()'s")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = args.iapt or [{}]
    data, task, base = setup(args.seed)
    if args.command == "norms":
        for variant in variants:
            norms(base, variant, data)
        return
    if args.command == "init":
        print(json.dumps({"variant": "zero-shot", **evaluate(base, task, data)}), flush=True)
    for variant in variants:
        torch.manual_seed(args.seed)
        adapted = IAPT(**variant).apply(base)
        result = {"variant": variant, "step0": evaluate(adapted.model, task, data)}
        if args.command == "train":
            started = time.perf_counter()
            losses = train(adapted.model, adapted.groups, task, data, args.steps, args.lr)
            result.update(steps=args.steps, lr=args.lr, first_loss=losses[0], last5_loss=sum(losses[-5:]) / 5,
                          after=evaluate(adapted.model, task, data), train_seconds=time.perf_counter() - started)
        print(json.dumps(result), flush=True)
        adapted.model.remove_hooks()
        del adapted


if __name__ == "__main__":
    main()
