"""What `predict`, `generate` and `chat` run: a checkpoint, an exported adapter folder, or a (merged) model."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from ..card import CardError
from ..inference import Runnable, load_folder, load_model
from ..inference.loading import ready, resolve_device
from ..zoo import load_config
from .refuse import refuse


def add_source_arguments(parser: ArgumentParser) -> None:
    """--ckpt_path / --adapter / --model (exactly one) and where to run."""
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="A checkpoint written by `lightning-peft fit`.")
    parser.add_argument("--adapter", type=str | None, default=None,
                        help="A folder written by `lightning-peft export` (its lightning_peft.json names the base).")
    parser.add_argument("--model", type=str | None, default=None,
                        help="A folder written by `lightning-peft merge`, or any model: zoo name, hub id or folder.")
    parser.add_argument("--device", type=str, default="auto", help="auto (the GPU if there is one), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", type=str, default="auto",
                        help="auto (bfloat16 on a GPU that computes it, else float32), float32, bfloat16 or float16.")


def load_source(args) -> Runnable:
    """The model the arguments name, ready to run; one `error:` sentence for a wrong combination or folder."""
    given = [name for name in ("ckpt_path", "adapter", "model") if args.get(name) is not None]
    if len(given) != 1:
        got = f"; got {', '.join('--' + g for g in given)}." if given else "."
        refuse("give exactly one of --ckpt_path (a fit checkpoint), --adapter (an exported folder) "
               "or --model (a merged folder or any model name)" + got)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the answers
    if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        refuse(f"--dtype {args.dtype!r} is not one of auto, float32, bfloat16, float16.")
    try:
        device = resolve_device(args.device)  # before any weights load
        if args.adapter is not None:
            return load_folder(args.adapter, args.device, args.dtype)
        if args.model is not None:
            return load_model(args.model, args.device, args.dtype)
    except CardError as error:
        refuse(str(error))
    from .rebuild import module_from_checkpoint

    module = module_from_checkpoint(args.ckpt_path)
    model = module.probe_model()
    if module.quantization is None:  # a quantized base stays where bitsandbytes put it
        model = ready(model, device, args.dtype)
    return Runnable(model.eval(), module.tokenizer, module.task, module.input_format,
                    bool(load_config(module.backbone).is_encoder_decoder))


def read_inputs(path: str, column: str = "text") -> list[dict]:
    """Records of a JSONL/JSON/CSV/Parquet file (a .txt file: one `{column: line}` per non-empty line)."""
    from ..data.errors import DataConfigError
    from ..data.readers import read_file

    file = Path(path)
    if not file.is_file():
        refuse(f"--input {path} does not exist.")
    if file.suffix.lower() == ".txt":
        return [{column: line} for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        return read_file(file)
    except DataConfigError as error:
        refuse(str(error))
