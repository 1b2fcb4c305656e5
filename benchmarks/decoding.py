"""Decoding-time methods on SmolLM2-135M (issue 20): the n-gram style prior's lambda sweep, and
conditional beam search against plain beam search on degenerate (looping) answers.

    flock /tmp/lp-bench.lock python benchmarks/decoding.py          # ~10 min on 2 CPU cores
    python benchmarks/decoding.py --model tiny-llama --prompts 4 --max_new_tokens 8 --lambdas 0 1 \\
        --classifier_texts 8 --output /tmp/decoding.json --plot ''  # smoke run

Claim (i), "Limits of n-gram Style Control for LLMs via Logit-Space Injection": as lambda rises the
generations' perplexity under the style corpus falls, while fluency (the base model's own
perplexity of its generations) holds only for small lambda (about 0.1) and collapses beyond.
Setup: the style corpus is the Lee news corpus (`lee_news`), split by article: the prior is
counted on the even-numbered articles, style perplexity is measured with the interpolated trigram
(p_3 of the same Witten-Bell model) counted on the odd-numbered ones, so the measure is not the
steering model itself. Prompts: the first 8 words of `--prompts` movie-dialogue lines (conversational,
not news), plain continuation without a chat template, sampled (temperature 0.7, top_p 0.9, seed 0),
the same prompts and seed for every lambda. Because a looping answer is easy for the model to
predict (its own perplexity *falls* on collapse), fluency is also read from repetition: the mean
4-gram repeat rate of the answers and the share that are degenerate (repeat rate > 0.5, as in (ii)).

Claim (ii), "Making the Most of your Model" (conditional beam search): a "not degenerate"
classifier on the LM's hidden states lowers the share of looping answers against plain beam
search at equal beam width. The classifier is trained here by the recipe's code
(`beam_classifier_training.train`, Lee news windows, synthetic and model-made loops); prompts are
the first 10 words of `--prompts` BBC news articles (a source it did not train on); greedy beam
search, `--num_beams` beams, beta 0 (plain) and `--betas`. Degenerate: more than half of the
answer's 4-grams occurred earlier in it (`repeat_rate` > 0.5); the mean repeat rate is reported too.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from lightning_peft.data.catalog import load_records
from lightning_peft.inference import GenerationSettings, generate_texts, load_model
from lightning_peft.inference.beam_classifier_training import BeamClassifierRecipe, repeat_rate, train
from lightning_peft.inference.ngram_prior import NgramPrior, ngram_counts

ROOT = Path(__file__).resolve().parents[1]


def _openings(dataset: str, field: str, words: int, count: int, seed: int) -> list[str]:
    texts = [str(r[field]) for r in load_records(dataset) if len(str(r[field]).split()) > words + 4]
    return [" ".join(t.split()[:words]) for t in random.Random(seed).sample(texts, count)]


def _split_corpus(folder: Path) -> tuple[Path, Path]:
    articles = [r["text"] for r in load_records("lee_news")]
    prior, held = folder / "lee_even.txt", folder / "lee_odd.txt"
    prior.write_text("\n".join(articles[0::2]))
    held.write_text("\n".join(articles[1::2]))
    return prior, held


def style_perplexity(prior: NgramPrior, tokenizer, prompts: list[str], answers: list[str]) -> float:
    """exp of the mean -log p_3(token | two before) of the answers' tokens under the held-out n-gram model."""
    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers):
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for token in tokenizer(answer, add_special_tokens=False)["input_ids"]:
            total -= math.log(float(prior.distributions(context)[-1][token]))
            context = context + [token]
            count += 1
    return math.exp(total / max(1, count))


@torch.no_grad()
def model_perplexity(runnable, prompts: list[str], answers: list[str]) -> float:
    """exp of the base model's mean next-token loss on the answers' tokens, each read after its prompt."""
    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers):
        head = runnable.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        tail = runnable.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not tail:
            continue
        logits = runnable.model(input_ids=torch.tensor([head + tail])).logits[0, len(head) - 1:-1]
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(tail), reduction="sum"))
        count += len(tail)
    return math.exp(total / max(1, count))


def _repeat_rates(tokenizer, answers: list[str]) -> dict:
    """Share of degenerate answers (4-gram repeat rate > 0.5) and the mean repeat rate."""
    rates = [repeat_rate(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    return {"degenerate_share": sum(r > 0.5 for r in rates) / len(rates), "mean_repeat_rate": sum(rates) / len(rates)}


def lambda_sweep(runnable, args, folder: Path) -> list[dict]:
    prior_file, held_file = _split_corpus(folder)
    held = NgramPrior(ngram_counts(str(held_file), runnable.tokenizer, 3, folder / "cache"), len(runnable.tokenizer))
    prompts = _openings("movie_dialog", "prompt", 8, args.prompts, args.seed)
    rows = []
    for style_lambda in args.lambdas:
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=True, seed=args.seed,
                                      style_corpus=str(prior_file), style_lambda=style_lambda)
        start = time.perf_counter()
        answers = list(generate_texts(runnable, prompts, settings, batch_size=8))
        rates = _repeat_rates(runnable.tokenizer, answers)
        rows.append({"lambda": style_lambda, "style_ppl": style_perplexity(held, runnable.tokenizer, prompts, answers),
                     "model_ppl": model_perplexity(runnable, prompts, answers), **rates,
                     "seconds": time.perf_counter() - start, "example": answers[0], "answers": answers})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
    return rows


def beam_comparison(runnable, args, folder: Path) -> dict:
    recipe = BeamClassifierRecipe(model=args.model, dataset="lee_news", output=str(folder / "classifier"),
                                  texts=args.classifier_texts, prefix_tokens=16, length=48, seed=args.seed)
    report = train(recipe)
    print(json.dumps({"classifier": report}), flush=True)
    prompts = _openings("bbc_news", "text", 10, args.prompts, args.seed)
    rows = []
    for beta in [0.0, *args.betas]:
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                      beam_classifier=recipe.output, beta=beta)
        answers = list(generate_texts(runnable, prompts, settings, batch_size=8))
        rows.append({"beta": beta, **_repeat_rates(runnable.tokenizer, answers),
                     "model_ppl": model_perplexity(runnable, prompts, answers), "example": answers[0]})
        print(json.dumps(rows[-1]), flush=True)
    return {"classifier": report, "rows": rows}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lambdas = [r["lambda"] for r in rows]
    figure, (axis, loops) = plt.subplots(1, 2, figsize=(10, 4))
    axis.plot(lambdas, [r["style_ppl"] for r in rows], "o-", label="style perplexity (held-out Lee news trigram)")
    axis.plot(lambdas, [r["model_ppl"] for r in rows], "s-", label="SmolLM2's own perplexity")
    axis.set_yscale("log")
    axis.set_ylabel("perplexity of the generations")
    axis.set_title("n-gram style prior on SmolLM2-135M")
    axis.legend(fontsize=8)
    loops.plot(lambdas, [r["mean_repeat_rate"] for r in rows], "o-", label="mean 4-gram repeat rate")
    loops.plot(lambdas, [r["degenerate_share"] for r in rows], "s-", label="share degenerate (repeat rate > 0.5)")
    loops.set_ylim(0, 1)
    loops.set_title("fluency read from repetition")
    loops.legend(fontsize=8)
    for ax in (axis, loops):
        ax.set_xscale("symlog", linthresh=0.05)
        ax.set_xlabel("lambda")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max_new_tokens", type=int, default=40)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--num_beams", type=int, default=4)
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--classifier_texts", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/lp-decoding")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/decoding.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs/img/ngram_prior_lambda.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    runnable = load_model(args.model, "cpu", "float32")
    start = time.perf_counter()
    result = {"args": vars(args), "lambda_sweep": lambda_sweep(runnable, args, folder),
              "conditional_beam": beam_comparison(runnable, args, folder)}
    result["seconds"] = time.perf_counter() - start
    Path(args.output).write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result["lambda_sweep"], Path(args.plot))
    print(f"Wrote {args.output} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
