"""`lightning-peft predict`: apply a trained model to a file of inputs, one JSON line out per input.

    lightning-peft predict --ckpt_path runs/x/checkpoints/last.ckpt --input questions.jsonl --output predictions.jsonl
    lightning-peft predict --adapter exported/ --input questions.jsonl       # JSONL to stdout

A classification task writes each input record with `label` and `probabilities` (per class) added;
SFT and seq2seq tasks write it with `generated` added. Inputs are written as in training (the run's
template or chat template, its truncation), which the checkpoint or the export records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

from jsonargparse import ArgumentParser
from tqdm.auto import tqdm

from ..atomic import write_file_atomically
from ..data.formats import InputFormat
from ..inference import GenerationSettings, classify, generate_texts, prompt_for_record
from ..tasks import Classifies
from .generate import decoding_arguments, decoding_settings
from .sources import add_source_arguments, load_source, read_inputs
from .refuse import refuse


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-peft predict", description=__doc__.split("\n\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--input", type=str, required=True,
                        help="Records to predict: .jsonl, .json, .csv, .parquet (each with the input column the run "
                             "trained on, e.g. text), or .txt (one input per line).")
    parser.add_argument("--output", type=str | None, default=None,
                        help="JSONL file to write (replaced only when complete); default: standard output.")
    parser.add_argument("--batch_size", type=int, default=32, help="Inputs per forward pass (or per generate call).")
    decoding_arguments(parser, max_new_tokens=128)  # for SFT and seq2seq tasks
    return parser


def predictions(runnable, records: list[dict[str, Any]], args, settings: GenerationSettings) -> Iterator[dict[str, Any]]:
    """Each record with what the model predicts for it added (`label` + `probabilities`, or `generated`)."""
    fmt = runnable.input_format if runnable.input_format is not None else InputFormat()
    for number, record in enumerate(records, start=1):
        problem = fmt.missing_column(record)
        if problem is not None:
            refuse(f"input {number} of {args.input}: {problem}")
    if isinstance(runnable.task, Classifies):
        for record, predicted in zip(records, classify(runnable, records, args.batch_size)):
            yield {**record, **predicted}
        return
    prompts = [prompt_for_record(runnable, record) for record in records]
    for record, text in zip(records, generate_texts(runnable, prompts, settings, args.batch_size)):
        yield {**record, "generated": text}


def predict_command(argv: list[str]) -> None:
    if any(arg == "--config" or arg.startswith("--config=") for arg in argv):
        refuse("predict needs no --config: the checkpoint (or the exported folder) records the model, "
                         "task and input template; give --ckpt_path C (or --adapter D / --model M) and --input FILE.")
    args = _parser().parse_args(argv)
    if args.batch_size < 1:
        refuse(f"--batch_size must be a positive integer, got {args.batch_size}.")
    settings = decoding_settings(args)  # bad decoding options (e.g. an empty style corpus) fail before the model loads
    runnable = load_source(args)
    column = runnable.input_format.column if runnable.input_format is not None else "text"
    records = read_inputs(args.input, column)
    rows = tqdm(predictions(runnable, records, args, settings), total=len(records), unit="input", file=sys.stderr,
                disable=not sys.stderr.isatty())
    if args.output is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        return
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]  # all computed before the file is touched
    write_file_atomically(Path(args.output), lambda tmp: tmp.write_text("".join(f"{line}\n" for line in lines)))
    print(f"Wrote {len(lines)} predictions to {args.output}")
