"""`lightning-peft evaluate`: forgetting probes, the ICL-vs-instruction suite and instruction robustness,
fine-tuned model against its base, from a `fit` checkpoint or an exported peft adapter.

    lightning-peft evaluate --ckpt_path runs/x/checkpoints/last.ckpt --output_dir runs/x/eval
    lightning-peft evaluate --adapter exported/ --output_dir eval/        # the export names its base

The model measured is the one the method declares for probes (`Method.probe_model`: a soft prompt
included). The base is the same model with its adaptation turned off (`Method.disabled`, no second
copy) where the method can; for methods that train the model's own weights it is loaded from the
backbone. `--adapter` takes a peft folder or a soft-prompt export (`lightning-peft export`).
Prints a table and writes `evaluation.json` and `evaluation.png` into the output folder.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from jsonargparse import ArgumentParser
from torch import nn
from tqdm.auto import tqdm

from ..evaluation import probes as P
from ..evaluation.conjugate import TRANSFORMS, conjugate_report, get_transform, icl_accuracy, icl_suite
from ..tasks.base import TaskConfigError
from ..evaluation.plots import plot_comparison
from ..evaluation.robustness import instruction_robustness
from . import diversity
from .refuse import refuse
from .tables import print_table

ROBUSTNESS_TASK = P.ProbeTask("sentiment_movies", "Review: {text}\nSentiment:", num_examples=64)
ROBUSTNESS_SEEN = ["Review: {text}\nIs this review positive or negative? Answer:",
                   "Review: {text}\nSentiment:"]
ROBUSTNESS_UNSEEN = ["{text}\nDid the reviewer like the movie? The review is",
                     "Movie review: \"{text}\"\nOverall, the review is"]


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-peft evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="A checkpoint written by `lightning-peft fit`.")
    parser.add_argument("--adapter", type=str | None, default=None, help="A peft adapter folder (`lightning-peft export`).")
    parser.add_argument("--backbone", type=str | None, default=None,
                        help="Base model of --adapter (zoo name, hub id, folder); default: the one its lightning_peft.json names.")
    parser.add_argument("--output_dir", type=str, default="evaluation", help="Where evaluation.json and evaluation.png go.")
    parser.add_argument("--num_chunks", type=int, default=8, help="Held-out text chunks for perplexity and KL.")
    parser.add_argument("--chunk_tokens", type=int, default=128, help="Tokens per chunk.")
    parser.add_argument("--top_k", type=int, default=32, help="Base log-probs kept per position for the KL.")
    parser.add_argument("--num_examples", type=int, default=64, help="Examples per probe task (and per robustness template).")
    parser.add_argument("--icl_prompts", type=int, default=20, help="ICL-vs-instruction suite size (0 skips it).")
    parser.add_argument("--transforms", type=list[str], default=["original", "leetspeak", "pig_latin"],
                        help="Prompt transforms for the suite: " + ", ".join(TRANSFORMS)
                             + " (german needs `apt-get install dict-freedict-eng-deu`; docs/forgetting.md).")
    parser.add_argument("--max_new_tokens", type=int, default=10, help="Greedy decoding length of the suite.")
    parser.add_argument("--robustness", type=bool, default=False,
                        help="Also score accuracy across instruction phrasings: for a checkpoint trained on paraphrased "
                             "instructions (ParaphraseClassificationData), its own task under its training phrasings "
                             "(seen) and --unseen_templates; otherwise a fixed movie-sentiment task under two seen and "
                             "two unseen phrasings. Examples are a seeded sample of the whole dataset.")
    parser.add_argument("--unseen_templates", type=list[str], default=[],
                        help="Extra phrasings (each with {text}, the label word follows) scored as unseen by --robustness.")
    diversity.add_arguments(parser)
    return parser


@dataclass
class Robustness:
    """What `--robustness` scores: a task and its seen and unseen phrasings."""

    task: P.ProbeTask
    seen: list[str]
    unseen: list[str]


def _robustness(args, module=None) -> Robustness:
    """The trained task under its own phrasings when the checkpoint records them, else the fixed sentiment task."""
    phrasings = module.trained_phrasings if module is not None else None
    words = module.task.verbalizer_words() if module is not None else None
    if phrasings and words:
        task = P.ProbeTask(phrasings["dataset"], phrasings["templates"][0], words, num_examples=args.num_examples)
        return Robustness(task, list(phrasings["templates"]), list(args.unseen_templates))
    task = P.ProbeTask(ROBUSTNESS_TASK.dataset, ROBUSTNESS_TASK.template, num_examples=args.num_examples)
    return Robustness(task, ROBUSTNESS_SEEN, [*ROBUSTNESS_UNSEEN, *args.unseen_templates])


@dataclass
class Loaded:
    """What `evaluate` measures: the fine-tuned model, how to see its base, and what it takes."""

    model: nn.Module
    base: Callable[[], contextlib.AbstractContextManager]  # yields the base-behaving model
    tokenizer: object
    robustness: Robustness
    max_tokens: int | None  # the model's input limit (the method's max_input_length)


def _load(args) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM

    from .. import zoo
    from ..callbacks.probe_contract import probe_base

    if (args.ckpt_path is None) == (args.adapter is None):
        refuse("give either --ckpt_path or --adapter.")

    def load_base(name: str) -> nn.Module:
        return AutoModelForCausalLM.from_pretrained(zoo.resolve(name), dtype=torch.float32)

    if args.adapter is not None:
        from ..methods.soft_prompt_io import CONFIG_NAME, exported_method

        if not Path(args.adapter).is_dir():
            refuse(f"--adapter {args.adapter} is not a folder; pass one written by `lightning-peft export`.")
        if args.backbone is None:  # our exports name their base in lightning_peft.json
            from ..card import CardError, RunCard

            try:
                args.backbone = RunCard.read(args.adapter).backbone
            except CardError as error:
                refuse(f"{error} (or pass --backbone naming its base model)")
        tokenizer = zoo.load_tokenizer(args.backbone)
        if (Path(args.adapter) / CONFIG_NAME).is_file():  # ours (DePT, EPT, IAPT): the export names its method
            method = exported_method(args.adapter)
            model = method.load(load_base(args.backbone), args.adapter)
            return Loaded(model, lambda: method.disabled(model), tokenizer, _robustness(args), method.max_input_length)
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_base(args.backbone), args.adapter).eval()
        return Loaded(model, lambda: P.adapters_disabled(model), tokenizer, _robustness(args), None)
    from .rebuild import module_from_checkpoint

    module = module_from_checkpoint(args.ckpt_path)

    @contextlib.contextmanager
    def base() -> Iterator[nn.Module]:
        with probe_base(module, "lightning-peft evaluate") as disabled:
            # None: the method trains the model's own weights, so the backbone is loaded once more
            yield disabled if disabled is not None else load_base(module.backbone)

    return Loaded(module.probe_model(), base, module.tokenizer, _robustness(args, module), module.probe_input_limit())


def _stages(args) -> list[str]:
    return ["perplexity, KL and probe tasks"] + ["ICL suite"] * bool(args.icl_prompts) + ["robustness"] * bool(args.robustness)


def _transforms(names: list[str]) -> list:
    """The suite's transforms, built before any weights load so an unknown name or a missing dictionary ends early."""
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown:
        refuse(f"--transforms names {', '.join(unknown)}, which is not a transform; pick from {', '.join(TRANSFORMS)}.")
    try:
        return [get_transform(name) for name in dict.fromkeys(["original", *names])]
    except TaskConfigError as error:
        refuse(str(error))


def _score(model: nn.Module, loaded: Loaded, probes: P.ForgettingProbes, args, progress, which: str,
           transforms: list, base_text=None) -> tuple[dict, P.TextStats]:
    tokenizer, limit = loaded.tokenizer, loaded.max_tokens
    progress.set_description(f"{which}: perplexity, KL and probe tasks")
    measured, stats = probes.measure(model, base=base_text)
    progress.update()
    if args.icl_prompts:
        progress.set_description(f"{which}: ICL suite")
        with P.evaluation_mode(model):
            icl = icl_accuracy(model, tokenizer, icl_suite(args.icl_prompts), transforms, args.max_new_tokens, limit)
        measured.update({f"icl/{k}": v for k, v in icl.items()})
        progress.update()
    if args.robustness:
        progress.set_description(f"{which}: robustness")
        robustness = loaded.robustness
        measured["robustness"] = instruction_robustness(model, tokenizer, robustness.task, robustness.seen, robustness.unseen,
                                                        max_tokens=limit)
        progress.update()
    return measured, stats


def evaluate(args) -> dict:
    transforms = _transforms(args.transforms) if args.icl_prompts else []
    loaded = _load(args)
    tasks = tuple(P.ProbeTask(t.dataset, t.template, t.label_words, args.num_examples) for t in P.DEFAULT_PROBE_TASKS)
    probes = P.ForgettingProbes(loaded.tokenizer, num_chunks=args.num_chunks, chunk_tokens=args.chunk_tokens,
                                top_k=args.top_k, tasks=tasks, max_tokens=loaded.max_tokens)
    with tqdm(total=2 * len(_stages(args)), unit="stage") as progress:  # minutes each on a CPU: show where it is
        with loaded.base() as base_model:
            base, base_text = _score(base_model, loaded, probes, args, progress, "base", transforms)
        tuned, _ = _score(loaded.model, loaded, probes, args, progress, "tuned", transforms, base_text=base_text)
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
    if args.diversity:
        diversity.diversity_command(args)
        return
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
