"""What every method family's LightningModule shares: load the backbone, apply the method, run the task.

A family module (LoRA family, soft prompts, selective fine-tuning, ...) only says which methods it
accepts and what is special about its training procedure; loading, steps, metrics, named
optimizer groups and adapter-only checkpoints live here once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn

from .. import checkpoint, zoo
from .. import quantization as quant
from ..atomic import write_folder_atomically
from ..attention import PACKED_SDPA, supports_packed_sdpa
from ..card import RunCard, scalar_metrics
from ..data.facts import DataFacts
from ..data.formats import InputFormat
from ..methods import Adapted, Method, MethodConfigError
from ..tasks import Task


ATTENTION_KERNELS = frozenset({"eager", "sdpa", PACKED_SDPA, "flash_attention_2", "flash_attention_3", "flex_attention"})


@runtime_checkable
class NamedEvaluationSets(Protocol):
    """Data with several evaluation sets (e.g. a task sequence): metrics are logged per name."""

    task_names: list[str]


def _module_key(name: str) -> str:
    return name.replace(".", "_")  # ModuleDict keys cannot hold dots (a file path might)


class FineTuneModule(L.LightningModule):
    """Fine-tune a `transformers` backbone with a method on a task.

    Args:
        backbone: Zoo short name (`lightning-peft models`), hub id or local folder of the base model.
        task: The objective (e.g. VerbalizerClassification, HeadClassification, CausalLMSFT, Seq2Seq).
        method: How the backbone is adapted (which parameters train).
        label_names: Class names in label-index order; the CLI links them from the data module.
        optimizer: Optimizer class and its arguments (e.g. torch.optim.AdamW with lr); it receives
            one parameter group per method group, each carrying its `name`.
        lr_scheduler: Optional learning-rate scheduler class and arguments, stepped every step.
        group_lr: Learning rate per named parameter group (e.g. {head: 1e-3}); others use the optimizer's lr.
        quantization: Load the frozen base in "int8" (LLM.int8) or "nf4" (QLoRA) with bitsandbytes
            (CUDA, or CPU with bitsandbytes>=0.50).
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        compile: Compile the adapted model with `torch.compile` (in place, so parameter names and
            checkpoints are unchanged); the first steps are slow while it compiles.
        attn_implementation: The backbone's attention kernel, passed to `from_pretrained`: "sdpa",
            "eager", "packed_sdpa" (sdpa per example of a packed row; `lightning_peft.attention`),
            "flash_attention_2" (CUDA, needs the flash-attn package; packed batches then attend per
            example too), "flex_attention", or a hub kernel ("org/repo"). Default: "packed_sdpa"
            when the data module packs (`packing: true`) on a CPU and the model supports sdpa, else
            the transformers default for the model (sdpa where supported).
    """

    def __init__(
        self,
        backbone: str = "smollm2-135m",
        task: Task | None = None,
        method: Method | None = None,
        label_names: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        group_lr: dict[str, float] | None = None,
        quantization: quant.Quantization | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        attn_implementation: str | None = None,
    ) -> None:
        super().__init__()
        if task is None or method is None:
            raise MethodConfigError(f"{type(self).__name__} needs both a task and a method; set model.init_args.task and .method.")
        if attn_implementation is not None and attn_implementation not in ATTENTION_KERNELS and "/" not in attn_implementation:
            raise MethodConfigError(f"attn_implementation={attn_implementation!r} is not an attention kernel; use one of "
                                    f"{sorted(ATTENTION_KERNELS)}, a hub kernel such as 'org/repo', or leave it unset.")
        self.save_hyperparameters()
        self.backbone, self.task, self.method = backbone, task, method
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.group_lr = dict(group_lr or {})
        self.quantization, self.gradient_checkpointing = quantization, gradient_checkpointing
        self.compile_model = compile  # not `self.compile`: that would hide nn.Module.compile
        self.attn_implementation = attn_implementation
        # Cheap checks first, so a bad name or label set fails before any weights load.
        zoo.check_architecture(backbone, task.auto_class_name)
        self.tokenizer = zoo.load_tokenizer(backbone)
        task.bind(self.tokenizer, label_names)
        method.bind(self.tokenizer)
        # "<split>" or "<split>:<task>" -> metrics; per-task entries are added in setup() from the data
        self.eval_metrics = nn.ModuleDict({split: task.metrics().clone(prefix=f"{split}/") for split in ("val", "test")})
        self._eval_keys = {"val": ["val"], "test": ["test"]}
        self.model: nn.Module | None = None
        self.groups: dict[str, dict[str, nn.Parameter]] = {}
        self.base_fingerprint: str | None = None
        self.sampled_fingerprint: str | None = None  # the pre-v2 form, to resume checkpoints written before
        self.strict_loading = False  # checkpoints hold the trainable parameters only
        self._pending_rng: dict[str, Any] | None = None
        # The data's instruction phrasings, when it has several (paraphrase data): kept in checkpoints
        # so `lightning-peft evaluate --robustness` scores the trained task under them.
        self.trained_phrasings: dict[str, Any] | None = None
        # What exports and `predict` need from the data, recorded at setup and kept in checkpoints.
        self.input_format: InputFormat | None = None
        self.dataset_name: str | None = None
        self.final_metrics: dict[str, float] = {}
        # The task's and method's configs as the CLI gave them: kept from the checkpoint too, because a
        # module rebuilt from one holds the built objects in `hparams`, not their configs.
        self.specs: dict[str, dict[str, Any]] = {k: dict(v) for k, v in self.hparams.items()
                                                 if k in ("task", "method") and isinstance(v, dict)}

    # -- building -------------------------------------------------------------------------

    def _check_data(self, data: DataFacts, stage: str) -> None:
        """Refuse data the method or task cannot take, before any weights load."""
        limit, longest = self.method.max_input_length, data.input_length_limit
        if limit is not None and longest is not None and longest > limit:
            raise MethodConfigError(
                f"{type(self.method).__name__} takes inputs of up to {limit} tokens (its max_length), but the data allows "
                f"{longest}; set model.init_args.method.init_args.max_length >= {longest} or the data's max_length <= {limit}."
            )
        if self.task.needs_templates and stage == "fit" and not data.templates:
            raise MethodConfigError(
                f"{type(self.task).__name__} needs training batches with paraphrased instructions; use "
                "lightning_peft.data.ParaphraseClassificationData with a list of templates."
            )

    def setup(self, stage: str) -> None:
        quant.check_strategy(self.quantization, type(self.trainer.strategy).__name__)
        data = self.trainer.datamodule
        if isinstance(data, DataFacts):
            self._check_data(data, stage)
            if data.templates and data.dataset is not None:
                self.trained_phrasings = {"dataset": data.dataset, "templates": list(data.templates)}
            self.input_format, self.dataset_name = data.input_format, data.dataset
        names = list(data.task_names) if isinstance(data, NamedEvaluationSets) and len(data.task_names) > 1 else [None]
        # Created here, not on first use: Lightning maps logged Metric objects to attributes once.
        for split in ("val", "test"):
            for name in names:
                key = split if name is None else f"{split}:{_module_key(name)}"
                if key not in self.eval_metrics:
                    prefix = f"{split}/" if name is None else f"{split}/{name}/"
                    self.eval_metrics[key] = self.task.metrics().clone(prefix=prefix)
        self._eval_keys = {split: [split if n is None else f"{split}:{_module_key(n)}" for n in names] for split in ("val", "test")}

    def configure_model(self) -> None:
        """Load the base, fingerprint it, and apply the method (once; Lightning may call this again)."""
        if self.model is not None:
            return
        quant.check_available(self.quantization)
        kernel = self.attn_implementation
        if kernel is None and self._packs_on_cpu() and supports_packed_sdpa(self._model_class()):
            kernel = PACKED_SDPA  # packed rows: attend per example, not over the whole row
        attention = {} if kernel is None else {"attn_implementation": kernel}
        base = self.task.auto_class().from_pretrained(
            zoo.resolve(self.backbone), **self.task.model_kwargs(), **quant.load_kwargs(self.quantization), **attention
        )
        if self.quantization is not None:
            quant.keep_4bit_layout(base)  # else each checkpoint save moves the base on a CPU (see there)
        # Every weight of the base (a new head's random values excluded); the sampled pre-v2 form too
        # (milliseconds), since once the method is applied it can no longer be computed.
        head = self.task.head_modules(base)
        self.base_fingerprint = checkpoint.fingerprint(base, exclude=head)
        self.sampled_fingerprint = checkpoint.sampled_fingerprint(base, exclude=head)
        # What peft and our exports record as the base: the name the run was given (zoo name or hub
        # id), which loads anywhere lightning-peft is installed, not the cache folder it resolved to.
        base.name_or_path = base.config._name_or_path = self.backbone
        if self.quantization is not None:
            from peft import prepare_model_for_kbit_training

            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=self.gradient_checkpointing)
        adapted = self.adapt(base)
        # from_pretrained returns eval mode and Lightning 2.6 keeps each module's mode, so without
        # this the base's dropout layers would stay off during training.
        self.model, self.groups = adapted.model.train(), adapted.groups
        unknown = sorted(set(self.group_lr) - set(self.groups))
        if unknown:
            raise MethodConfigError(f"group_lr names groups {unknown}, but this method trains {sorted(self.groups)}.")
        if self.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()
        if self.compile_model:
            self.model.compile()

    def _model_class(self) -> type | None:
        """The class `from_pretrained` will build for the backbone (None where the task's auto class maps no class to its config)."""
        config = zoo.load_config(self.backbone)
        try:
            return self.task.auto_class()._model_mapping[type(config)]
        except KeyError:
            return None

    def _packs_on_cpu(self) -> bool:
        trainer = self._trainer
        return (trainer is not None and trainer.strategy.root_device.type == "cpu"
                and isinstance(trainer.datamodule, DataFacts) and trainer.datamodule.packing)

    def adapt(self, base: nn.Module) -> Adapted:
        """Apply the method; family modules override this to add what their procedure needs."""
        return self.method.apply(base, self.task.head_modules(base))

    def configure_optimizers(self):
        param_groups = [
            {"params": list(params.values()), "name": name, **({"lr": self.group_lr[name]} if name in self.group_lr else {})}
            for name, params in self.groups.items()
        ]
        optimizer = self.optimizer_factory(param_groups)
        self._check_clipping(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def _check_clipping(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse, before the first step, what Lightning would refuse at it: clipping a fused optimizer under 16-mixed."""
        trainer = self._trainer
        plugin = trainer.precision_plugin if trainer is not None else None
        if (isinstance(plugin, MixedPrecision) and plugin.scaler is not None and trainer.gradient_clip_val
                and getattr(optimizer, "_step_supports_amp_scaling", False)):
            raise MethodConfigError(
                f"gradient_clip_val={trainer.gradient_clip_val} cannot clip {type(optimizer).__name__} under "
                f"precision={plugin.precision!r}: it undoes the fp16 loss scaling inside its own (fused) step, after "
                "clipping would run; set the optimizer's fused: false, use precision bf16-mixed, or drop gradient_clip_val.")

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip as Lightning does, and also for a fused optimizer (e.g. `AdamW(fused=True)`) under bf16-mixed.

        Lightning refuses any optimizer that unscales gradients in its own step under mixed precision
        (Lightning-AI/pytorch-lightning#21435), which matters only with fp16's gradient scaler:
        bf16-mixed has none, so the gradients are unscaled and clipping them is exact.
        """
        plugin = self.trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            clip_val = self.trainer.gradient_clip_val if gradient_clip_val is None else gradient_clip_val
            algorithm = gradient_clip_algorithm or self.trainer.gradient_clip_algorithm or "norm"
            Precision.clip_gradients(plugin, optimizer, clip_val or 0.0, GradClipAlgorithmType(algorithm))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -- steps ----------------------------------------------------------------------------

    def forward(self, **batch: torch.Tensor):
        return self.model(**batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        output = self.task.step(self.model, batch)
        self.log("train/loss", output.loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return output.loss

    def _evaluate(self, batch: dict[str, torch.Tensor], split: str, dataloader_idx: int) -> None:
        metrics = self.eval_metrics[self._eval_keys[split][dataloader_idx]]
        output = self.task.step(self.model, batch)
        self.task.update(metrics, output)
        size = batch["input_ids"].shape[0]
        self.log(f"{metrics.prefix}loss", output.loss, sync_dist=True, batch_size=size, add_dataloader_idx=False)
        self.log_dict(metrics, prog_bar=True, batch_size=size, add_dataloader_idx=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    # -- what callbacks and commands use: the method's declared contract -------------------

    def probe_model(self) -> nn.Module:
        """The model forgetting probes, conjugate prompts and generation see (prompt included)."""
        self.configure_model()
        return self.method.probe_model(self.model)

    @contextlib.contextmanager
    def probe_base(self) -> Iterator[nn.Module | None]:
        """The base's behaviour for the block (adaptation turned off in place), or None when the
        method trains the model's own weights and only a second copy could give it."""
        self.configure_model()
        if not self.method.capabilities.disable:
            yield None
            return
        with self.method.disabled(self.model) as base:
            yield base

    def probe_input_limit(self) -> int | None:
        """The longest input in tokens the probed model takes (the method's `max_input_length`)."""
        return self.method.max_input_length

    def card(self, kind: str, metrics: dict[str, float] | None = None) -> RunCard:
        """What an export of this module says about itself (`lightning_peft.json` and the model card).

        Args:
            kind: "adapter" or "merged".
            metrics: Final metrics to record; default: those of the last checkpoint written or loaded.
        """
        return RunCard(
            backbone=self.backbone, kind=kind, base_fingerprint=self.base_fingerprint,
            task=self.specs.get("task"), method=self.specs.get("method"),
            label_names=self.task.label_names or None, verbalizer=self.task.verbalizer_words(),
            input_format=self.input_format.to_dict() if self.input_format is not None else None,
            dataset=self.dataset_name, quantization=self.quantization,
            metrics=dict(self.final_metrics if metrics is None else metrics),
        )

    def export(self, output_dir: str | Path, metrics: dict[str, float] | None = None) -> Path:
        """Write the trained part alone plus the tokenizer and its card (the method's format: peft's where peft has it).

        A method that cannot export raises its one-sentence refusal; nothing is left behind.
        """
        self.configure_model()

        def write(folder: Path) -> None:
            self.method.export(self.model, folder)
            self.tokenizer.save_pretrained(str(folder))
            self.card("adapter", metrics).write(folder)

        return write_folder_atomically(output_dir, write)

    def export_merged(self, output_dir: str | Path, metrics: dict[str, float] | None = None) -> Path:
        """Fold the adaptation into the base and write a plain `transformers` folder (plus tokenizer and card)."""
        self.configure_model()

        def write(folder: Path) -> None:
            merged = self.method.merge(self.model)
            self.model = None  # may be folded in place (even if saving fails); rebuild before any further use
            merged.save_pretrained(str(folder), safe_serialization=True)
            self.tokenizer.save_pretrained(str(folder))
            self.card("merged", metrics).write(folder)

        return write_folder_atomically(output_dir, write)

    # -- adapter-only checkpoints ---------------------------------------------------------

    def trainable_parameter_names(self) -> set[str]:
        """Every parameter the method may train, frozen for now or not.

        Taken from the method's groups rather than `requires_grad`: a callback such as
        HalfFineTuning freezes weights that an earlier stage trained, and those must be saved too.
        """
        return {f"model.{name}" for group in self.groups.values() for name in group}

    def on_save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        ckpt["state_dict"] = checkpoint.trainable_state(ckpt["state_dict"], self.trainable_parameter_names())
        trainer = self._trainer
        if trainer is not None:
            self.final_metrics = scalar_metrics(trainer.callback_metrics)
        ckpt["lightning_peft"] = {"fingerprint": self.base_fingerprint, "backbone": self.backbone,
                                  "phrasings": self.trained_phrasings, "dataset": self.dataset_name,
                                  "input_format": self.input_format.to_dict() if self.input_format is not None else None,
                                  "metrics": self.final_metrics}
        ckpt["rng_states"] = checkpoint.capture_rng()
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # Every rank runs this hook; only rank 0 writes. Each rank draws its own dropout masks,
            # so each needs its own generator state back on resume, not rank 0's.
            per_rank: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(per_rank, ckpt["rng_states"])
            ckpt["rng_states_per_rank"] = per_rank
        checkpoint.drop_unsafe_hparams(ckpt)

    def on_load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        self.configure_model()  # the fingerprint needs the base; a no-op when already built
        checkpoint.check_loadable(ckpt, self.base_fingerprint, self.trainable_parameter_names(), self.backbone,
                                  current_sampled=self.sampled_fingerprint)
        self._pending_rng = ckpt.get("rng_states")
        saved = ckpt["lightning_peft"]
        self.specs.update({k: dict(v) for k, v in (ckpt.get(checkpoint.HPARAMS_KEY) or {}).items()
                           if k in ("task", "method") and isinstance(v, dict)})
        self.trained_phrasings = saved.get("phrasings")
        self.dataset_name, self.final_metrics = saved.get("dataset"), dict(saved.get("metrics") or {})
        self.input_format = InputFormat.from_dict(saved["input_format"]) if saved.get("input_format") else None
        per_rank = ckpt.get("rng_states_per_rank")
        trainer = self._trainer
        if per_rank and trainer is not None and len(per_rank) == trainer.world_size:
            self._pending_rng = per_rank[trainer.global_rank]

    def on_train_start(self) -> None:
        # Restored here rather than at load time: everything between (sanity validation,
        # dataloader setup) may draw random numbers that an uninterrupted run did not draw.
        if self._pending_rng is not None:
            checkpoint.restore_rng(self._pending_rng)
            self._pending_rng = None
