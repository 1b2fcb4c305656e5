"""`lightning-peft`: a LightningCLI for fine-tuning, plus the commands fine-tuners need around it.

    lightning-peft fit --config configs/quickstart.yaml       # train (validate, test, predict likewise)
    lightning-peft models | datasets                           # the offline zoo and data catalog
    lightning-peft export --ckpt_path C --output_dir D         # adapter in peft format
    lightning-peft merge --ckpt_path C --output_dir D          # adapter folded into a plain transformers folder
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .callbacks import RunSummary
from .checkpoint import AtomicCheckpointIO
from .modules import FineTuneModule

EXTRA_COMMANDS = "Also: `lightning-peft models`, `datasets`, `export`, `merge` (each with --help)."


def _label_names(data: L.LightningDataModule) -> list[str] | None:
    return getattr(data, "label_names", None)


class LightningPeftCLI(LightningCLI):
    """LightningCLI with the model's backbone linked to the data's tokenizer and the data's labels to the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")
        parser.link_arguments("data", "model.init_args.label_names", compute_fn=_label_names, apply_on="instantiate")
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_argument(
            "--test_before_fit", type=bool, default=False,
            help="Run the test set once before training (e.g. a zero-shot baseline), recorded in metrics.json.",
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="Run the test set with the final weights when fit ends (if the data has a test split).",
        )

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # keep any IO plugin the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _subcommand_flag(self, name: str) -> bool:
        return bool(self.config.get(self.subcommand, {}).get(name, False))

    def before_fit(self) -> None:
        if self._subcommand_flag("test_before_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule)

    def after_fit(self) -> None:
        if self._subcommand_flag("test_after_fit") and self.trainer.state.status == "finished" and not self.trainer.interrupted:
            if self.datamodule is not None and type(self.datamodule).test_dataloader is not L.LightningDataModule.test_dataloader:
                self.trainer.test(self.model, datamodule=self.datamodule)


def _print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)))


def models_command(argv: list[str]) -> None:
    ArgumentParser(prog="lightning-peft models", description="List the offline model zoo's short names.").parse_args(argv)
    from .zoo import list_models

    _print_table(list_models(), ("name", "description"))
    print("\nAny other name is passed to from_pretrained unchanged (hub id or local folder).")


def datasets_command(argv: list[str]) -> None:
    ArgumentParser(prog="lightning-peft datasets", description="List the offline data catalog.").parse_args(argv)
    from .data import list_datasets

    rows = [(d["name"], d["kind"], str(d["size"]), str(d.get("labels") or "-"), d["description"]) for d in list_datasets()]
    _print_table(rows, ("name", "kind", "size", "labels", "description"))
    print("\nAny other value is read as a local .jsonl/.json/.csv/.parquet file.")


def _export_parser(prog: str, what: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=what)
    parser.add_argument("--ckpt_path", type=str, required=True, help="An adapter-only checkpoint written by `lightning-peft fit`.")
    parser.add_argument("--output_dir", type=str, required=True, help="Folder to write (must not exist or be empty).")
    return parser


def _load_for_export(ckpt_path: str, output_dir: str):
    """Rebuild the LoRA-family module a `fit` checkpoint came from, with its trained adapter loaded.

    Refuses before loading anything when the output folder holds files, so nothing is overwritten.
    """
    import warnings

    from .checkpoint import CheckpointError, read_checkpoint, saved_module_class
    from .modules import LoraModule

    target = Path(output_dir)
    if target.exists() and any(target.iterdir()):
        raise SystemExit(f"error: --output_dir {output_dir} is not empty; choose a new folder so nothing is overwritten.")
    if not Path(ckpt_path).is_file():
        raise SystemExit(f"error: --ckpt_path {ckpt_path} does not exist.")
    try:
        module_class = saved_module_class(read_checkpoint(ckpt_path), FineTuneModule)
        if not issubclass(module_class, LoraModule):
            raise CheckpointError(
                f"Only LoRA-family (peft) adapters export or merge; this checkpoint holds a {module_class.__name__}."
            )
        with warnings.catch_warnings():  # the frozen base is absent from the checkpoint by design
            warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in")
            return module_class.load_from_checkpoint(ckpt_path, map_location="cpu", strict=False, weights_only=True)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None


def export_command(argv: list[str]) -> None:
    args = _export_parser("lightning-peft export", "Export a checkpoint's adapter in peft format (PeftModel.from_pretrained loads it).").parse_args(argv)
    module = _load_for_export(args.ckpt_path, args.output_dir)
    print(f"Adapter exported to {module.export_peft(args.output_dir)}")


def merge_command(argv: list[str]) -> None:
    args = _export_parser("lightning-peft merge", "Merge a checkpoint's adapter into its base and save a plain transformers folder.").parse_args(argv)
    module = _load_for_export(args.ckpt_path, args.output_dir)
    print(f"Merged model saved to {module.export_merged(args.output_dir)}")


COMMANDS = {"models": models_command, "datasets": datasets_command, "export": export_command, "merge": merge_command}


def main(args: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
        return
    LightningPeftCLI(
        FineTuneModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": f"Parameter-efficient fine-tuning with Lightning. {EXTRA_COMMANDS}"},
        args=argv,
    )


if __name__ == "__main__":
    main()
