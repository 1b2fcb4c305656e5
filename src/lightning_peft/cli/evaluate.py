"""`lightning-peft evaluate`: forgetting probes, the ICL-vs-instruction suite and instruction robustness,
fine-tuned model against its base, from a `fit` checkpoint or an exported peft adapter.

    lightning-peft evaluate --ckpt_path runs/x/checkpoints/last.ckpt --output_dir runs/x/eval
    lightning-peft evaluate --adapter exported/ --backbone smollm2-135m --output_dir eval/

For a peft adapter the base is the same model with the adapter disabled (no second copy); for a
checkpoint of a method that trains the model's own weights, the base is loaded from its backbone.
Prints a table and writes `evaluation.json` and `evaluation.png` into the output folder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterator

from jsonargparse import ArgumentParser
from torch import nn
from tqdm.auto import tqdm

from .evaluation import probes as P
from .tables import print_table
from .evaluation.conjugate import conjugate_report, get_transform, icl_accuracy, icl_suite
from .evaluation.plots import plot_comparison
from .evaluation.robustness import instruction_robustness

ROBUSTNESS_TASK = P.ProbeTask("sentiment_movies", "Review: {text}\nSentiment:", num_examples=64)
ROBUSTNESS_SEEN = ["Review: {text}\nIs this review positive or negative? Answer:",
                   "Review: {text}\nSentiment:"]
ROBUSTNESS_UNSEEN = ["{text}\nDid the reviewer like the movie? The review is",
                     "Movie review: \"{text}\"\nOverall, the review is"]


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-peft evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="A checkpoint written by `lightning-peft fit`.")
    parser.add_argument("--adapter", type=str | None, default=None, help="A peft adapter folder (`lightning-peft export`).")
    parser.add_argument("--backbone", type=str | None, default=None, help="Base model of --adapter (zoo name, hub id, folder).")
    parser.add_argument("--output_dir", type=str, default="evaluation", help="Where evaluation.json and evaluation.png go.")
    parser.add_argument("--num_chunks", type=int, default=8, help="Held-out text chunks for perplexity and KL.")
    parser.add_argument("--chunk_tokens", type=int, default=128, help="Tokens per chunk.")
    parser.add_argument("--top_k", type=int, default=32, help="Base log-probs kept per position for the KL.")
    parser.add_argument("--num_examples", type=int, default=64, help="Examples per probe task (and per robustness template).")
    parser.add_argument("--icl_prompts", type=int, default=20, help="ICL-vs-instruction suite size (0 skips it).")
    parser.add_argument("--transforms", type=list[str], default=["original", "leetspeak", "pig_latin"],
                        help="Prompt transforms for the suite: original, leetspeak, pig_latin, rot13.")
    parser.add_argument("--max_new_tokens", type=int, default=10, help="Greedy decoding length of the suite.")
    parser.add_argument("--robustness", type=bool, default=False,
                        help="Also score sentiment accuracy across seen and unseen instruction phrasings.")
    return parser


def _load(args) -> tuple[nn.Module, Callable[[], contextlib.AbstractContextManager], object]:
    """(fine-tuned causal LM, context manager factory that yields the base, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    from . import zoo
    from .callbacks.probe_contract import find_causal_lm

    if (args.ckpt_path is None) == (args.adapter is None):
        raise SystemExit("error: give either --ckpt_path or --adapter (with --backbone).")
    if args.adapter is not None:
        from peft import PeftModel

        if args.backbone is None or not Path(args.adapter).is_dir():
            raise SystemExit("error: --adapter needs an existing adapter folder and --backbone naming its base model.")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(zoo.resolve(args.backbone),
                                                                               dtype=torch.float32), args.adapter)
        return model, lambda: P.adapters_disabled(model), zoo.load_tokenizer(args.backbone)
    module = _load_module(args.ckpt_path)
    model = find_causal_lm(module, "lightning-peft evaluate")
    if getattr(model, "disable_adapter", None) is not None:
        return model, lambda: P.adapters_disabled(model), module.tokenizer

    @contextlib.contextmanager
    def base() -> Iterator[nn.Module]:  # full FT / HFT / selective: the backbone, loaded once more
        yield AutoModelForCausalLM.from_pretrained(zoo.resolve(module.backbone), dtype=torch.float32)

    return model, base, module.tokenizer


def _load_module(ckpt_path: str):
    import warnings

    from .checkpoint import CheckpointError, read_checkpoint, saved_module_class
    from .modules import FineTuneModule

    if not Path(ckpt_path).is_file():
        raise SystemExit(f"error: --ckpt_path {ckpt_path} does not exist.")
    try:
        module_class = saved_module_class(read_checkpoint(ckpt_path), FineTuneModule)
        with warnings.catch_warnings():  # the frozen base is absent from the checkpoint by design
            warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in")
            return module_class.load_from_checkpoint(ckpt_path, map_location="cpu", strict=False, weights_only=True)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None


def _stages(args) -> list[str]:
    return ["perplexity, KL and probe tasks"] + ["ICL suite"] * bool(args.icl_prompts) + ["robustness"] * bool(args.robustness)


def _score(model: nn.Module, tokenizer, probes: P.ForgettingProbes, args, progress, which: str,
           base_text=None) -> tuple[dict, P.TextStats]:
    transforms = [get_transform(name) for name in dict.fromkeys(["original", *args.transforms])]
    progress.set_description(f"{which}: perplexity, KL and probe tasks")
    measured, stats = probes.measure(model, base=base_text)
    progress.update()
    if args.icl_prompts:
        progress.set_description(f"{which}: ICL suite")
        with P.evaluation_mode(model):
            icl = icl_accuracy(model, tokenizer, icl_suite(args.icl_prompts), transforms, args.max_new_tokens)
        measured.update({f"icl/{k}": v for k, v in icl.items()})
        progress.update()
    if args.robustness:
        progress.set_description(f"{which}: robustness")
        task = P.ProbeTask(ROBUSTNESS_TASK.dataset, ROBUSTNESS_TASK.template, num_examples=args.num_examples)
        measured["robustness"] = instruction_robustness(model, tokenizer, task, ROBUSTNESS_SEEN, ROBUSTNESS_UNSEEN)
        progress.update()
    return measured, stats


def evaluate(args) -> dict:
    tuned_model, base_of, tokenizer = _load(args)
    tasks = tuple(P.ProbeTask(t.dataset, t.template, t.label_words, args.num_examples) for t in P.DEFAULT_PROBE_TASKS)
    probes = P.ForgettingProbes(tokenizer, num_chunks=args.num_chunks, chunk_tokens=args.chunk_tokens, top_k=args.top_k,
                                tasks=tasks)
    with tqdm(total=2 * len(_stages(args)), unit="stage") as progress:  # minutes each on a CPU: show where it is
        with base_of() as base_model:
            base, base_text = _score(base_model if isinstance(base_model, nn.Module) else tuned_model, tokenizer, probes,
                                     args, progress, "base")
        tuned, _ = _score(tuned_model, tokenizer, probes, args, progress, "tuned", base_text=base_text)
    result = {"base": base, "tuned": tuned, "forgetting": P.compare(base, tuned)}
    if args.icl_prompts:
        strip = lambda scores: {k[4:]: v for k, v in scores.items() if k.startswith("icl/")}  # noqa: E731
        result["conjugate"] = conjugate_report(strip(base), strip(tuned))
    return result


def _rows(result: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, base in result["base"].items():
        if isinstance(base, float):
            tuned = result["tuned"][key]
            rows.append((key, f"{base:.4g}", f"{tuned:.4g}", f"{tuned - base:+.4g}"))
    for group in ("seen", "unseen"):
        for key in ("mean", "std"):
            if "robustness" in result["base"] and result["base"]["robustness"][group]:
                base, tuned = result["base"]["robustness"][group][key], result["tuned"]["robustness"][group][key]
                rows.append((f"robustness/{group}/{key}", f"{base:.4g}", f"{tuned:.4g}", f"{tuned - base:+.4g}"))
    rows += [(f"forgetting/{k}", "", f"{v:.4g}", "") for k, v in result["forgetting"].items()]
    rows += [(f"conjugate/{k}", "", f"{v:.4g}", "") for k, v in result.get("conjugate", {}).items() if k.endswith("recovered")]
    return rows


def evaluate_command(argv: list[str]) -> None:

    args = _parser().parse_args(argv)
    result = evaluate(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    bars = {k: (v, result["tuned"][k]) for k, v in result["base"].items() if k.startswith(("acc/", "icl/"))}
    f = result["forgetting"]
    plot_comparison(bars, out / "evaluation.png",
                    title=f"perplexity ratio {f['perplexity_ratio']:.3f}, KL from base {f['kl_from_base']:.4f}")
    print_table(_rows(result), ("metric", "base", "tuned", "delta"))
    print(f"\nWrote {out / 'evaluation.json'} and {out / 'evaluation.png'}")
