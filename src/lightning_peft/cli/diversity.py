"""`lightning-peft evaluate --diversity N`: sample N answers per context and score how different they are.

    lightning-peft evaluate --ckpt_path runs/x/last.ckpt --diversity 5 --diversity_prompts contexts.txt \\
        --diversity_template "...{context}... possibility number #{possibility}."

Each line of `--diversity_prompts` (plain text, or JSONL with a "context" field) is one context. Its
N prompts are `--diversity_template` filled with the context and `possibility` = 1..N (a template
without `{possibility}` gives N identical prompts, so the samples differ by sampling alone), written
as the model was trained to read them (its chat template or training template), and decoded by
sampling. Scores: distinct-1/2, self-BLEU and, with `--diversity_encoder`, the mean pairwise embedding
distance (`lightning_peft.evaluation.diversity`). Writes `diversity.json` and `diversity_samples.jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..data.formats import fill, template_fields
from ..evaluation.diversity import DistinctN, PairwiseEmbeddingDistance, SelfBLEU, SentenceEncoder
from ..inference.generation import GenerationSettings, generate_texts, prompt_for
from .refuse import refuse


def add_arguments(parser) -> None:
    """The `--diversity*` options of `lightning-peft evaluate`."""
    parser.add_argument("--diversity", type=int, default=0,
                        help="Sample this many answers per context of --diversity_prompts and report distinct-1/2, "
                             "self-BLEU and embedding distance instead of the forgetting probes (0: off).")
    parser.add_argument("--diversity_prompts", type=str | None, default=None,
                        help="Contexts, one per line (text, or JSONL with a 'context' field).")
    parser.add_argument("--diversity_template", type=str, default="{context}",
                        help="Prompt per sample with {context} and optionally {possibility} (1..N, one per sample).")
    parser.add_argument("--diversity_encoder", type=str | None, default="minilm-l6",
                        help="Sentence encoder for the pairwise embedding distance (zoo name or folder; null skips it).")
    parser.add_argument("--temperature", type=float, default=0.75, help="Sampling temperature of --diversity.")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed of --diversity.")


def read_contexts(path: str) -> list[str]:
    """The contexts of a prompts file (blank lines skipped)."""
    if not Path(path).is_file():
        refuse(f"--diversity_prompts {path} is not a file; give one context per line.")
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not path.endswith(".jsonl"):
        return lines
    records = [json.loads(line) for line in lines]
    if not all(isinstance(r, dict) and "context" in r for r in records):
        refuse(f"--diversity_prompts {path}: every JSONL line needs a 'context' field (or give a plain text file).")
    return [str(r["context"]) for r in records]


def prompt_sets(contexts: list[str], template: str, samples: int) -> list[list[str]]:
    """Per context, the `samples` prompts: the template with possibility 1..samples (the paper's protocol)."""
    if not set(template_fields(template)) <= {"context", "possibility"} or "context" not in template_fields(template):
        refuse(f"--diversity_template {template!r} must place {{context}} and may place {{possibility}}, nothing else.")
    return [[fill(template, {"context": c, "possibility": k}, "--diversity_template") for k in range(1, samples + 1)]
            for c in contexts]


def sample_sets(runnable, prompts: list[list[str]], settings: GenerationSettings, batch_size: int = 25) -> list[list[str]]:
    """The generated answer of every prompt, grouped as `prompts` is (prompts written as the model was trained)."""
    flat = [prompt_for(runnable, text) for group in prompts for text in group]
    answers = iter(generate_texts(runnable, flat, settings, batch_size=batch_size))
    return [[next(answers).strip() for _ in group] for group in prompts]


def encoder(name: str) -> Callable:
    """The mean-pooled sentence encoder `name` names (`minilm-l6` by default)."""
    from transformers import AutoModel

    from .. import zoo

    return SentenceEncoder(AutoModel.from_pretrained(zoo.resolve(name)), zoo.load_tokenizer(name))


def scores(samples: list[list[str]], embed: Callable | None) -> dict[str, float]:
    """distinct-1, distinct-2, self-BLEU (and embedding distance with `embed`) of the sample sets."""
    metrics = {"distinct_1": DistinctN(1), "distinct_2": DistinctN(2), "self_bleu": SelfBLEU()}
    if embed is not None:
        metrics["embedding_distance"] = PairwiseEmbeddingDistance(embed)
    result = {}
    for name, metric in metrics.items():
        metric.update(samples)
        result[name] = float(metric.compute())
    return result


def _runnable(args):
    from ..inference import Runnable
    from ..inference.loading import load_folder, load_model

    if args.adapter is not None:
        return load_folder(args.adapter, device="cpu", dtype="float32")
    if args.ckpt_path is not None:
        from .rebuild import module_from_checkpoint

        module = module_from_checkpoint(args.ckpt_path)
        return Runnable(module.probe_model().eval(), module.tokenizer, module.task, module.input_format)
    if args.backbone is None:
        refuse("--diversity needs a model: give --ckpt_path, --adapter or --backbone.")
    return load_model(args.backbone, device="cpu", dtype="float32")


def diversity_command(args) -> dict:
    """Sample, score, write and print the diversity of the model the arguments name."""
    if args.diversity < 2 or args.diversity_prompts is None:
        refuse("--diversity needs N >= 2 samples per context and --diversity_prompts naming the contexts file.")
    prompts = prompt_sets(read_contexts(args.diversity_prompts), args.diversity_template, args.diversity)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature,
                                  top_p=1.0, top_k=0, seed=args.seed)
    samples = sample_sets(_runnable(args), prompts, settings)
    result = scores(samples, encoder(args.diversity_encoder) if args.diversity_encoder else None)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diversity.json").write_text(json.dumps({"samples_per_context": args.diversity, "contexts": len(samples),
                                                    **result}, indent=2))
    with (out / "diversity_samples.jsonl").open("w") as handle:
        handle.writelines(json.dumps({"prompts": p, "samples": s}) + "\n" for p, s in zip(prompts, samples))
    for name, value in result.items():
        print(f"{name:20s} {value:.4f}")
    print(f"\nWrote {out / 'diversity.json'} and {out / 'diversity_samples.jsonl'}")
    return result
