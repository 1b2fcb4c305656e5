"""The ICL-vs-instruction suite under chosen conjugates, for one model, with every output kept (issue 23).

    python benchmarks/conjugate_suite.py --output base.json                                   # SmolLM2-135M-Instruct
    python benchmarks/conjugate_suite.py --ckpt_path RUN/checkpoints/step=20.ckpt --output tuned.json \\
        --transforms original leetspeak                                                       # a `fit` checkpoint

Kotha, Springer, Raghunathan, ICLR 2024 (arXiv:2309.10105). The same scoring as `lightning-peft
evaluate` (`icl_suite`, `greedy_outputs`, `is_in_context_answer`), but one model per process and any
subset of transforms, so several can run side by side on a crowded machine, and each output is
written with its inverse translation for reading. `recovered` then comes from two such files
(`conjugate_report(base, tuned)`). A checkpoint is measured as the model its method declares for
probes (`module.probe_model()`), as `evaluate` does.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM

from lightning_peft import zoo
from lightning_peft.evaluation.conjugate import get_transform, greedy_outputs, icl_suite, is_in_context_answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", help="A `lightning-peft fit` checkpoint; default: the base --backbone.")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--transforms", nargs="+", default=["original", "leetspeak", "pig_latin", "german"])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ckpt_path:
        from lightning_peft.cli.rebuild import module_from_checkpoint

        module = module_from_checkpoint(args.ckpt_path)
        model, tokenizer = module.probe_model(), module.tokenizer
    else:
        model, tokenizer = AutoModelForCausalLM.from_pretrained(zoo.resolve(args.backbone)), zoo.load_tokenizer(args.backbone)
    model.eval()
    suite, start, accuracy, outputs = icl_suite(args.prompts), time.time(), {}, {}
    for name in args.transforms:
        transform = get_transform(name)
        with torch.no_grad():
            texts = greedy_outputs(model, tokenizer, [p.render(transform) for p in suite], max_new_tokens=10)
        hits = [is_in_context_answer(text, p, transform) for text, p in zip(texts, suite)]
        accuracy[name] = sum(hits) / len(suite)
        outputs[name] = [{"task": p.task, "query": p.query, "output": text, "in_context": hit,
                          "inverse": transform.inverse(text.strip().split("\n", 1)[0])}
                         for text, p, hit in zip(texts, suite, hits)]
        print(f"{name}: {accuracy[name]:.2f} ({time.time() - start:.0f} s)", flush=True)
    with open(args.output, "w", encoding="utf-8") as out:
        json.dump({"args": vars(args), "accuracy": accuracy, "outputs": outputs}, out, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
