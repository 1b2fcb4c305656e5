"""`lightning-peft export` and `lightning-peft merge`: a `fit` checkpoint to a folder others can load."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from .rebuild import module_from_checkpoint
from .refuse import refuse


def _parser(prog: str, what: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=what)
    parser.add_argument("--ckpt_path", type=str, required=True, help="An adapter-only checkpoint written by `lightning-peft fit`.")
    parser.add_argument("--output_dir", type=str, required=True, help="Folder to write (must not exist or be empty).")
    return parser


def _check_output(output_dir: str) -> None:
    """Refuse a folder that holds files before loading anything, so nothing is overwritten."""
    target = Path(output_dir)
    blocking = next((p for p in [target, *target.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == target else f"lies under {blocking}, which is a file"
        refuse(f"--output_dir {output_dir} {where}; choose a new folder.")
    if target.exists() and any(target.iterdir()):
        refuse(f"--output_dir {output_dir} is not empty; choose a new folder so nothing is overwritten.")


def export_command(argv: list[str]) -> None:
    args = _parser(
        "lightning-peft export",
        "Export a checkpoint's adapter alone: peft format where peft has the method (PeftModel.from_pretrained loads "
        "it), else safetensors + soft_prompt_config.json (lightning_peft.methods.soft_prompt_io.load_soft_prompt, or "
        "the method's load, reads it). Methods that train the model's own weights have no adapter: use merge.",
    ).parse_args(argv)
    _check_output(args.output_dir)
    module = module_from_checkpoint(args.ckpt_path, require="export")
    print(f"Adapter exported to {module.export(args.output_dir)}")


def merge_command(argv: list[str]) -> None:
    args = _parser(
        "lightning-peft merge",
        "Save a checkpoint's model with the adaptation folded into the base as a plain transformers folder "
        "(LoRA family; selective fine-tuning saves its fine-tuned weights). Soft prompts cannot merge: use export.",
    ).parse_args(argv)
    _check_output(args.output_dir)
    module = module_from_checkpoint(args.ckpt_path, require="merge")
    print(f"Merged model saved to {module.export_merged(args.output_dir)}")
