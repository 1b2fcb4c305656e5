"""`lightning-peft`: the LightningCLI for fine-tuning, and `main`, which routes to it or to an extra command.

    lightning-peft fit --config configs/quickstart.yaml       # train (validate, test likewise)
    lightning-peft predict | generate | chat                   # apply a checkpoint, an exported adapter or a merged model
    lightning-peft models | datasets                           # the offline zoo and data catalog
    lightning-peft export --ckpt_path C --output_dir D         # adapter in peft format
    lightning-peft merge --ckpt_path C --output_dir D          # adapter folded into a plain transformers folder
    lightning-peft evaluate --ckpt_path C                      # forgetting / ICL / robustness probes vs the base
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

import lightning as L
import torch
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .. import quantization as quant
from .. import zoo
from ..callbacks import CpuAllocatorCache, EpochRichProgressBar, LastCheckpoint, RunSummary
from ..callbacks.dual_lr import ScheduleConfigError
from ..callbacks.probe_contract import ProbeContractError
from ..callbacks.run_summary import run_dir
from ..callbacks.throughput import ThroughputConfigError
from ..card import CardError
from ..checkpoint import HPARAMS_KEY, AtomicCheckpointIO, CheckpointError, CheckpointMismatchError, read_checkpoint
from ..data import DataConfigError, DataFacts
from ..inference.generation import GenerationError
from ..methods import MethodConfigError
from ..modules import FineTuneModule
from ..modules.fit_check import ChecksFit
from ..tasks import TaskConfigError
from ..zoo import ModelNotFoundError
from .artifact import log_adapter_artifact
from .catalog import datasets_command, models_command
from .ckpt_settings import check_settings
from .evaluate import evaluate_command
from .export import export_command, merge_command
from .generate import chat_command, generate_command
from .parse_errors import condense
from .predict import predict_command
from .refuse import refuse
from .run_config import RunConfig
from .trainer import Trainer
from .launch_env import LaunchEnvironmentError, check_launch_environment


class RunConfigError(ValueError):
    """A setting of the run's config that cannot work (checked before anything is built): one sentence, what and how to fix."""


# Errors whose message is one sentence for the user (what is wrong, how to fix it): printed as
# `error: <message>` with exit status 2 instead of a traceback. LIGHTNING_PEFT_DEBUG=1 shows the traceback.
USER_ERRORS = (CardError, CheckpointError, DataConfigError, GenerationError, LaunchEnvironmentError, MethodConfigError,
               ModelNotFoundError, ProbeContractError, quant.QuantizationError, ScheduleConfigError, TaskConfigError,
               ThroughputConfigError, RunConfigError)

EXTRA_COMMANDS = ("Also: `lightning-peft predict`, `generate`, `chat`, `export`, `merge`, `evaluate`, `pet`, `models`, "
                  "`datasets` (each with --help).")


def _label_names(data: L.LightningDataModule) -> list[str] | None:
    return data.label_names if isinstance(data, DataFacts) else None


class LightningPeftCLI(LightningCLI):
    """LightningCLI with the model's backbone linked to the data's tokenizer and the data's labels to the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")
        parser.link_arguments("data", "model.init_args.label_names", compute_fn=_label_names, apply_on="instantiate")
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(CpuAllocatorCache, "cpu_allocator")
        parser.add_argument(
            "--test_before_fit", type=bool, default=False,
            help="Run the test set once before training (e.g. a zero-shot baseline), recorded in metrics.json.",
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="Run the test set with the final weights when fit ends (if the data has a test split).",
        )
        parser.add_argument(
            "--use_checkpoint_settings", type=bool, default=False,
            help="With --ckpt_path: continue with the module, method and task settings the checkpoint was trained with "
                 "where they differ from the config (by default such a checkpoint is refused, naming the differences).",
        )

    def _resolve_last(self, config) -> None:
        """`--ckpt_path last`: the newest last*.ckpt of the earlier runs under the run's root folders.

        Lightning looks for it only in the new run's own (empty) version folder, so a resume with
        `last` would silently start from scratch.
        """
        roots = {config.get("trainer.default_root_dir") or os.getcwd()}
        logger = config.get("trainer.logger")
        for entry in logger if isinstance(logger, list) else [logger]:
            if isinstance(entry, dict | Namespace) and entry.get("init_args") and entry["init_args"].get("save_dir"):
                roots.add(entry["init_args"]["save_dir"])
        # Lightning's layout only: <root>/<logger name>/<version>/checkpoints, or <root>/checkpoints without a logger
        patterns = ("*/*/checkpoints/last*.ckpt", "checkpoints/last*.ckpt")
        found = [p for root in roots if Path(root).is_dir() for pattern in patterns for p in Path(root).glob(pattern)]
        if not found:
            print(f"No last.ckpt under {', '.join(sorted(map(str, roots)))}: starting from scratch.", file=sys.stderr)
            config["ckpt_path"] = None
            return
        config["ckpt_path"] = str(max(found, key=lambda p: p.stat().st_mtime))
        print(f"Resuming from {config['ckpt_path']}", file=sys.stderr)

    def _parse_ckpt_path(self) -> None:
        # Lightning replaces the model config with the checkpoint's hyperparameters here, so a
        # backbone the user set explicitly would be ignored without a word; say so instead.
        config = self.config.get(self.config.get("subcommand") or "", {})
        if config and config.get("ckpt_path") == "last":
            self._resolve_last(config)
        ckpt_path, wanted = config.get("ckpt_path"), config.get("model.init_args.backbone")
        if ckpt_path and ckpt_path not in ("best", "hpc") and "://" not in str(ckpt_path):
            if not Path(ckpt_path).is_file():
                raise CheckpointError(f"--ckpt_path {ckpt_path} is not a checkpoint file; point it at a .ckpt written by "
                                      "`lightning-peft fit` (or use --ckpt_path last).")
            saved = read_checkpoint(ckpt_path)  # one sentence for a damaged or foreign file, before Lightning loads it
            trained_on = saved.get("lightning_peft", {}).get("backbone") or saved.get("hyper_parameters", {}).get("backbone")
            if trained_on and wanted and trained_on != wanted:
                raise CheckpointMismatchError(
                    f"--ckpt_path {ckpt_path} was trained on base model {trained_on!r}, but the config asks for "
                    f"backbone {wanted!r}; set model.init_args.backbone to {trained_on!r} or start without --ckpt_path."
                )
            if isinstance(config.get("model"), Namespace):
                check_settings(ckpt_path, saved.get(HPARAMS_KEY) or {}, config["model"].as_dict(),
                               bool(config.get("use_checkpoint_settings")))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        # Machine-independent conflicts first: on a CPU, Lightning would otherwise stop at "FSDP needs
        # a GPU" (or "install deepspeed"), and after fixing that the user would still hit this one.
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        kind = config.get("model.init_args.quantization") if config.get("model.init_args") else None
        quant.check_strategy(kind, config.get("trainer.strategy", "auto"))
        quant.check_available(kind)
        _check_trainer(config.get("trainer") or Namespace())
        _check_boolean_keys(config)
        if self.subcommand == "fit" and config.get("model.init_args"):
            _check_optimizer(config.get("model.init_args.optimizer"))

    def _run_subcommand(self, subcommand: str) -> None:
        # A run refused once it started (bad data, a Lightning check at fit start) leaves no run folder
        # (config.yaml, hparams.yaml) behind: the folder it created itself is removed, unless it holds a checkpoint.
        if isinstance(self.model, FineTuneModule) and isinstance(self.datamodule, DataFacts):
            _check_positions(self.model.backbone, self.datamodule.input_length_limit)
        created = _first_missing(run_dir(self.trainer)) if self.trainer.is_global_zero else None
        try:
            super()._run_subcommand(subcommand)
        except Exception as error:
            if created is not None and created.is_dir() and _one_sentence(error) is not None \
                    and not any(created.rglob("*.ckpt")):
                shutil.rmtree(created, ignore_errors=True)
            raise

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        check_launch_environment(trainer.num_devices * trainer.num_nodes)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # keep any IO plugin the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _instantiate_trainer(self, config: dict, callbacks: list[L.Callback]) -> L.Trainer:
        def listed(value) -> list:
            return [] if value is None else value if isinstance(value, list) else [value]

        given = [*listed(config.get("callbacks")), *callbacks, *listed(self.trainer_defaults.get("callbacks"))]
        if (config.get("enable_progress_bar") is not False and find_spec("rich") is not None
                and not any(isinstance(c, ProgressBar) for c in given)):
            # Lightning's default bar (rich) prints "Epoch 0/-2" for a run limited by max_steps; ours does not.
            callbacks = [*callbacks, EpochRichProgressBar()]
        if config.get("enable_checkpointing") is not False and not any(isinstance(c, ModelCheckpoint) for c in given):
            callbacks = [*callbacks, LastCheckpoint()]  # a last.ckpt from every fit, interrupted ones included
        return super()._instantiate_trainer(config, callbacks)

    def _subcommand_flag(self, name: str) -> bool:
        return bool(self.config.get(self.subcommand, {}).get(name, False))

    def before_fit(self) -> None:
        if self._subcommand_flag("test_before_fit"):
            if isinstance(self.model, ChecksFit):  # a setting fit would refuse: one sentence before the test pass
                if self.datamodule is not None:
                    self.datamodule.prepare_data()
                    self.datamodule.setup("fit")
                self.model.check_fit(self.trainer, self.datamodule)
            self.trainer.test(self.model, datamodule=self.datamodule)

    def after_fit(self) -> None:
        finished = self.trainer.state.status == "finished" and not self.trainer.interrupted
        if self._subcommand_flag("test_after_fit") and finished:
            if self.datamodule is not None and type(self.datamodule).test_dataloader is not L.LightningDataModule.test_dataloader:
                self.trainer.test(self.model, datamodule=self.datamodule)
        if finished and isinstance(self.model, FineTuneModule):
            log_adapter_artifact(self.trainer, self.model)


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (what a run will create), or None."""
    missing = None
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing = path
    return missing


def _check_trainer(trainer: Namespace) -> None:
    """Trainer settings Lightning refuses late (a ZeroDivisionError, a folder error) or in its own terms."""
    max_steps, max_epochs = trainer.get("max_steps"), trainer.get("max_epochs")
    if isinstance(max_steps, int) and max_steps < -1:
        raise RunConfigError(f"trainer.max_steps must be a positive number of optimizer steps or -1 (no limit), "
                             f"got {max_steps}; fix it.")
    if isinstance(max_epochs, int) and max_epochs < -1:
        raise RunConfigError(f"trainer.max_epochs must be a positive number of epochs or -1 (no limit), "
                             f"got {max_epochs}; fix it.")
    accumulate = trainer.get("accumulate_grad_batches")
    if isinstance(accumulate, int) and accumulate < 1:
        raise RunConfigError(f"trainer.accumulate_grad_batches must be a positive integer (1: a step every batch), "
                             f"got {accumulate}; fix it.")
    clip = trainer.get("gradient_clip_val")
    if isinstance(clip, int | float) and clip < 0:
        raise RunConfigError(f"trainer.gradient_clip_val must be >= 0 (0 or null: no clipping), got {clip}; fix it.")
    accelerator = trainer.get("accelerator")
    if (accelerator == "cuda" and not torch.cuda.is_available()) or (
            accelerator == "gpu" and not torch.cuda.is_available() and not torch.backends.mps.is_available()):
        raise RunConfigError(f"trainer.accelerator {accelerator!r} needs a CUDA GPU, but torch finds none on this "
                             "machine; use accelerator 'cpu' (or 'auto', which takes a GPU where there is one).")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise RunConfigError("trainer.accelerator 'mps' needs Apple's MPS backend, which this machine lacks; "
                             "use accelerator 'cpu' or 'auto'.")
    root = trainer.get("default_root_dir")
    if isinstance(root, str | os.PathLike):
        blocking = next((p for p in [Path(root), *Path(root).parents] if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            where = "is a file" if blocking == Path(root) else f"lies under {blocking}, which is a file"
            raise RunConfigError(f"trainer.default_root_dir {root} {where}; point it at a folder "
                                 "(a new one is created).")


def _check_positions(backbone: str, longest: int | None) -> None:
    """Refuse data longer than a learned position table (GPT-2, BERT): torch.embedding would fail at the first long batch."""
    if longest is None:
        return
    config = zoo.load_config(backbone).to_dict()  # the config only; rotary (Llama) and relative (T5) positions have no table
    learned = "n_positions" in config or config.get("position_embedding_type") == "absolute"
    positions = config.get("n_positions") or config.get("max_position_embeddings")
    if learned and isinstance(positions, int) and longest > positions:
        raise RunConfigError(f"The data allows inputs of {longest} tokens (its max_length), but backbone {backbone!r} has "
                             f"learned positions for {positions} only; set data.init_args.max_length <= {positions}.")


def _check_boolean_keys(value, where: str = "") -> None:
    """A mapping key YAML read as a boolean (unquoted yes/no/on/off) is never meant: say to quote it."""
    items = value.items() if isinstance(value, Namespace | dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, bool):
            raise RunConfigError(f"{where or 'the config'} has the key {key} where YAML read an unquoted yes/no/on/off/"
                                 f"true/false as a boolean; quote it (e.g. 'yes': ...).")
        _check_boolean_keys(item, f"{where}.{key}" if where else str(key))


def _check_optimizer(optimizer: Namespace | None) -> None:
    """Build the optimizer once on a stand-in parameter, so torch's checks of its arguments (a negative lr,
    betas outside [0, 1)) are one sentence before any weights load, not a traceback at configure_optimizers."""
    if not isinstance(optimizer, Namespace) or not isinstance(optimizer.get("class_path"), str):
        return
    module_name, _, name = optimizer["class_path"].rpartition(".")
    optimizer_class = vars(importlib.import_module(module_name)).get(name) if module_name else None
    if not isinstance(optimizer_class, type):
        return
    init_args = optimizer.get("init_args")
    kwargs = init_args.as_dict() if isinstance(init_args, Namespace) else {}
    try:
        optimizer_class([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except ValueError as error:
        raise RunConfigError(f"model.optimizer {name} refuses its arguments ({error}); fix it in "
                             "model.init_args.optimizer.init_args (or --model.optimizer.<argument> VALUE).") from None


def pet_command(argv: list[str]) -> None:
    """`lightning-peft pet` (cli/pet.py), imported on use: it builds on LightningPeftCLI, defined here."""
    from .pet import pet_command as run_pet

    run_pet(argv)


COMMANDS = {"pet": pet_command, "models": models_command, "datasets": datasets_command, "export": export_command, "merge": merge_command,
            "evaluate": evaluate_command, "predict": predict_command, "generate": generate_command, "chat": chat_command}


def user_error(error: BaseException) -> BaseException | None:
    """Our one-sentence error behind `error`, or None (jsonargparse wraps the ones raised while instantiating).

    Public for drivers that run the CLI in-process and report refusals (benchmarks/peft_league_run.py).
    """
    while error is not None:
        if isinstance(error, USER_ERRORS):
            return error
        error = error.__cause__ or error.__context__
    return None


def _raised_by_lightning(error: BaseException) -> bool:
    """Whether `error` was raised in Lightning's own code (its checks of trainer arguments are one-line sentences)."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and Path(traceback.tb_frame.f_code.co_filename).is_relative_to(Path(L.__file__).parent)


def _one_sentence(error: BaseException) -> str | None:
    """The one sentence to print for a user error (ours, a parse error, or Lightning's check of its arguments)."""
    ours = user_error(error)
    if ours is not None:
        return str(ours)
    if isinstance(error, ArgumentError):
        return condense(str(error))
    if isinstance(error, MisconfigurationException | ValueError) and _raised_by_lightning(error):
        return " ".join(str(error).split())
    return None


def _check_yaml(argv: list[str]) -> None:
    """Name the file and line of a malformed --config (jsonargparse reports only "<unicode string>")."""
    import yaml

    paths = [b for a, b in zip(argv, argv[1:]) if a == "--config"] + [a[9:] for a in argv if a.startswith("--config=")]
    for path in filter(os.path.isfile, paths):
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or type(err).__name__
            print(f"error: {path} is not valid YAML ({problem}{where}); fix that line.", file=sys.stderr)
            raise SystemExit(2) from None


_CLASS_OPTIONS = ("--model.optimizer", "--model.init_args.optimizer", "--model.lr_scheduler", "--model.init_args.lr_scheduler")


def _torch_class_names(argv: list[str]) -> list[str]:
    """`--model.optimizer AdamW` means torch's AdamW (and likewise for schedulers).

    jsonargparse refuses a bare name that several imported classes share, and bitsandbytes (which
    peft imports) defines its own AdamW, Adam, SGD, ...; the bitsandbytes ones stay reachable by
    their full path (bitsandbytes.optim.AdamW8bit).
    """
    import torch

    def full(option: str, value: str) -> str:
        if "." in value or not option.startswith(_CLASS_OPTIONS) or option.endswith(".init_args"):
            return value
        scope = torch.optim.lr_scheduler if "lr_scheduler" in option else torch.optim
        return f"{scope.__name__}.{value}" if isinstance(vars(scope).get(value), type) else value

    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
            out.append(f"{option}={full(option, value)}")
        elif i > 0 and argv[i - 1].startswith(_CLASS_OPTIONS) and "=" not in argv[i - 1] and not arg.startswith("--"):
            out.append(full(argv[i - 1], arg))
        else:
            out.append(arg)
    return out


def _refuse_top_level_optimizer(argv: list[str]) -> None:
    """LightningCLI's top-level --optimizer/--lr_scheduler would build one group from every parameter; ours are per method group."""
    for arg in argv:
        option = arg.split("=", 1)[0]
        if option in ("--optimizer", "--lr_scheduler") or option.startswith(("--optimizer.", "--lr_scheduler.")):
            name = option[2:].split(".")[0]
            refuse(f"{option} is not an option here: the module builds the optimizer with one parameter group per "
                   f"method group; use --model.{name} (e.g. --model.optimizer torch.optim.AdamW --model.optimizer.lr 0.001).")


def main(args: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            try:
                COMMANDS[argv[0]](argv[1:])
            except SystemExit as exit_:
                # predict, generate and chat still end with SystemExit("error: ..."), which exits with status 1
                if isinstance(exit_.code, str) and exit_.code.startswith("error: "):
                    refuse(exit_.code[len("error: "):])
                raise
            return
        _check_yaml(argv)
        _refuse_top_level_optimizer(argv)
        argv = _torch_class_names(argv)
        if args is None:  # LightningCLI reads sys.argv itself (passing args too makes Lightning warn on every run)
            sys.argv[1:] = argv
        LightningPeftCLI(
            FineTuneModule,
            L.LightningDataModule,
            trainer_class=Trainer,  # precision "auto" by default (lightning_peft.precision)
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": f"Parameter-efficient fine-tuning with Lightning. {EXTRA_COMMANDS}",
                           "exit_on_error": False},
            auto_configure_optimizers=False,  # --model.optimizer / --model.lr_scheduler: per-group, see FineTuneModule
            args=None if args is None else argv,
        )
    except (ArgumentError, ValueError, MisconfigurationException) as error:
        message = _one_sentence(error)
        if os.environ.get("LIGHTNING_PEFT_DEBUG") or message is None:
            raise
        refuse(message)
