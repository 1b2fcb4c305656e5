"""`lightning-peft generate` and `lightning-peft chat`: text from a trained (or any) model.

    lightning-peft generate --adapter exported/ --prompt "Recommend a film for a rainy day."
    lightning-peft generate --ckpt_path last.ckpt --prompts_file prompts.txt --output answers.jsonl
    lightning-peft chat --model smollm2-135m

Prompts are written as the model was trained to read them: the tokenizer's chat template when the
run used one (or a plain model has one), else the run's prompt template. Decoding is transformers'
`generate` with the KV cache, batched with left padding; one prompt streams to the terminal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jsonargparse import ArgumentParser
from transformers import TextStreamer

from ..atomic import write_file_atomically
from ..inference import GenerationSettings, generate_texts, prompt_for
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


def decoding_settings(args) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)


def _generate_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-peft generate", description=__doc__.split("\n\n")[0])
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
    if len(prompts) == 1 and args.output is None:
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
    streamer = TextStreamer(runnable.tokenizer, skip_prompt=True, skip_special_tokens=True)
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
        sys.stdout.flush()
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": answer}]
