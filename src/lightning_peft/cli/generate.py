"""`lightning-peft generate` and `lightning-peft chat`: text from a trained (or any) model.

    lightning-peft generate --adapter exported/ --prompt "Recommend a film for a rainy day."
    lightning-peft generate --ckpt_path last.ckpt --prompts_file prompts.txt --output answers.jsonl
    lightning-peft chat --model smollm2-135m
    lightning-peft generate --config configs/decoding/ngram_prior_lee_news.yaml --prompt "The minister said"

Prompts are written as the model was trained to read them: the tokenizer's chat template when the
run used one (or a plain model has one), else the run's prompt template. Decoding is transformers'
`generate` with the KV cache, batched with left padding; one prompt streams to the terminal (not
with beams). Decoding-time methods: an n-gram style prior (--style_corpus, --style_lambda),
conditional beam search (--beam_classifier, --beta, --num_beams) and hidden-state optimisation
(--hso_steps, --hso_lr); see docs/generation.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dataclasses import fields

from jsonargparse import ActionConfigFile, ArgumentParser
from transformers import TextStreamer

from ..atomic import write_file_atomically
from ..inference import GenerationSettings, generate_texts, prompt_for
from ..inference.decoding import check_style_corpus
from ..inference.generation import GenerationError, chat_prompt, uses_chat_template
from .sources import add_source_arguments, load_source, read_inputs
from .refuse import refuse


def decoding_arguments(parser: ArgumentParser, max_new_tokens: int) -> None:
    """The decoding options of generate, chat and predict (generative tasks)."""
    parser.add_argument("--max_new_tokens", type=int, default=max_new_tokens, help="The most tokens per answer.")
    parser.add_argument("--do_sample", type=bool, default=False, help="Sample instead of greedy decoding.")
    parser.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature, > 0 (with --do_sample).")
    parser.add_argument("--top_p", type=float, default=0.9, help="Nucleus sampling mass in (0, 1] (with --do_sample).")
    parser.add_argument("--top_k", type=int, default=50, help="Sample among the k most likely tokens; 0: all (with --do_sample).")
    parser.add_argument("--repetition_penalty", type=float, default=1.0, help="> 1 discourages repeating tokens.")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (the same seed gives the same answer).")
    parser.add_argument("--num_beams", type=int, default=1, help="Beam search with this many beams (1: greedy or sampling).")
    parser.add_argument("--style_corpus", type=str | None, default=None,
                        help="n-gram style prior: a text file or dataset (catalog name, data file) to push the style toward.")
    parser.add_argument("--style_lambda", type=float, default=0.1, help="Weight of the style prior (>= 0; the paper: 0.1).")
    parser.add_argument("--style_order", type=int, default=3, help="Highest n-gram order of the style prior.")
    parser.add_argument("--beam_classifier", type=str | None, default=None,
                        help="Conditional beam search: a classifier folder (beam_classifier_training); needs --num_beams >= 2.")
    parser.add_argument("--beta", type=float, default=1.0, help="Weight of the beam classifier's log-probability (>= 0).")
    parser.add_argument("--hso_steps", type=int, default=0,
                        help="Hidden-state optimisation: gradient steps on the prompt's cached keys/values (0: off).")
    parser.add_argument("--hso_lr", type=float, default=0.01, help="Learning rate of the hidden-state optimisation steps.")


def decoding_settings(args) -> GenerationSettings:
    """The settings the options give, checked (a style corpus is read) before any model loads."""
    settings = GenerationSettings(**{field.name: args[field.name] for field in fields(GenerationSettings)})
    check_style_corpus(settings)
    return settings


def _generate_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-peft generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML of these options (e.g. configs/decoding/).")
    add_source_arguments(parser)
    parser.add_argument("--prompt", type=str | None, default=None, help="One prompt (streamed to the terminal).")
    parser.add_argument("--prompts_file", type=str | None, default=None,
                        help="Many prompts: .txt (one per line) or .jsonl/.json/.csv/.parquet with a `prompt` column.")
    parser.add_argument("--output", type=str | None, default=None,
                        help="JSONL file of {prompt, generated} to write; default: print the answers.")
    parser.add_argument("--batch_size", type=int, default=8, help="Prompts decoded together.")
    parser.add_argument("--system", type=str | None, default=None, help="A system message (models with a chat template).")
    decoding_arguments(parser, max_new_tokens=128)
    return parser


def _prompts(args) -> list[str]:
    if (args.prompt is None) == (args.prompts_file is None):
        refuse("give either --prompt \"...\" or --prompts_file FILE.")
    if args.prompt is not None:
        return [args.prompt]
    records = read_inputs(args.prompts_file, "prompt")
    missing = [number for number, record in enumerate(records, start=1) if "prompt" not in record]
    if missing:
        refuse(f"record {missing[0]} of {args.prompts_file} has no `prompt` field; give each as "
                         "{\"prompt\": \"...\"} (or use a .txt file, one prompt per line).")
    return [str(record["prompt"]) for record in records]


def generate_command(argv: list[str]) -> None:
    args = _generate_parser().parse_args(argv)
    prompts = _prompts(args)
    settings = decoding_settings(args)
    runnable = load_source(args)
    texts = [prompt_for(runnable, prompt, args.system) for prompt in prompts]
    if len(prompts) == 1 and args.output is None and settings.num_beams == 1:  # beams cannot stream
        streamer = TextStreamer(runnable.tokenizer, skip_prompt=True, skip_special_tokens=True)
        list(generate_texts(runnable, texts, settings, streamer=streamer))  # the streamer prints as tokens arrive
        return
    answers = generate_texts(runnable, texts, settings, args.batch_size)
    if args.output is None:
        for prompt, answer in zip(prompts, answers):
            print(f">>> {prompt}\n{answer}\n", flush=True)
        return
    lines = [json.dumps({"prompt": p, "generated": a}, ensure_ascii=False) for p, a in zip(prompts, answers)]
    write_file_atomically(Path(args.output), lambda tmp: tmp.write_text("".join(f"{line}\n" for line in lines)))
    print(f"Wrote {len(lines)} answers to {args.output}")


def _chat_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-peft chat",
                            description="Talk with a trained (or any) chat model, turn by turn; /reset starts over, "
                                        "/exit or Ctrl-D leaves.")
    add_source_arguments(parser)
    parser.add_argument("--system", type=str | None, default=None, help="A system message (models with a chat template).")
    decoding_arguments(parser, max_new_tokens=256)
    return parser


def chat_command(argv: list[str]) -> None:
    args = _chat_parser().parse_args(argv)
    settings = decoding_settings(args)
    runnable = load_source(args)
    if not uses_chat_template(runnable) or not runnable.tokenizer.chat_template:
        raise GenerationError("chat needs a model trained with (or a tokenizer that has) a chat template; use "
                              "`lightning-peft generate` for this one.")
    history: list[dict[str, str]] = []
    print("Chat started: /reset starts over, /exit or Ctrl-D leaves.", flush=True)
    streaming = settings.num_beams == 1  # beam search cannot stream: the answer is printed when done
    streamer = TextStreamer(runnable.tokenizer, skip_prompt=True, skip_special_tokens=True) if streaming else None
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            history.clear()
            print("(conversation cleared)")
            continue
        if not line.strip():
            continue
        print("model> ", end="", flush=True)
        # the conversation so far, without its oldest exchanges once it no longer fits the model with the answer
        text = chat_prompt(runnable, line, args.system, history, runnable.tokenizer.model_max_length - settings.max_new_tokens)
        (answer,) = generate_texts(runnable, [text], settings, streamer=streamer)
        if not streaming:
            print(answer)
        sys.stdout.flush()
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": answer}]
