"""The soft-prompt family's LightningModule: prompt tuning, prefix tuning, DePT, EPT, IAPT, robust prompts.

What is special about the family's training procedure, and so lives here rather than in the base:

- the prompt is initialised from text with the run's own tokenizer when the method asks for
  text initialisation and names no tokenizer;
- DePT / EPT build their low-rank offset for inputs of at most `max_length` tokens, so data with a
  longer `max_length` is refused at setup, before any weights load (never truncated silently);
- a robust-prompt objective (`tasks.RobustPrompt`) needs paraphrased instructions in its
  training batches; data without them is refused at setup instead of training the plain task;
- export writes peft format for the methods peft implements and safetensors + JSON otherwise.

The per-group learning rates of DePT (prompt 3e-1, low-rank 1e-4 in the paper) come from
`group_lr` or, with warmup and decay per group, from the `DualLRSchedule` callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from jsonargparse import lazy_instance
from peft import PeftModel
from torch import nn

from ..checkpoint import write_folder_atomically
from ..methods import Adapted, MethodConfigError
from ..methods.dept import DePT, EPT
from ..methods.iapt import IAPT
from ..methods.lora import export_adapter
from ..methods.prompts import PrefixTuning, PromptTuning
from ..methods.soft_prompt_io import save_soft_prompt
from ..tasks import Task, VerbalizerClassification
from ..tasks.robust import RobustPrompt
from .base import FineTuneModule

SoftPromptMethod = Union[PromptTuning, PrefixTuning, DePT, EPT, IAPT]


class SoftPromptModule(FineTuneModule):
    """Train a soft prompt (or prompt generators) in front of a frozen `transformers` model.

    Example::

        lightning-peft fit --config configs/soft_prompt/dept_trec6.yaml

    Args:
        task: The objective (VerbalizerClassification, HeadClassification, CausalLMSFT, Seq2Seq), or
            RobustPrompt wrapping a classification task (needs ParaphraseClassificationData).
        method: PromptTuning, PrefixTuning (both through peft), DePT, EPT or IAPT
            (lightning_peft.methods.prompts / .dept / .iapt).
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, lr_scheduler, ...).
    """

    def __init__(
        self,
        task: Task = lazy_instance(VerbalizerClassification),
        method: SoftPromptMethod = lazy_instance(PromptTuning),
        **kwargs,
    ) -> None:
        super().__init__(task=task, method=method, **kwargs)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        offset_length = getattr(self.method, "max_length", None)
        data_length = getattr(data, "max_length", None) or getattr(data, "max_source_length", None)
        if offset_length is not None and data_length is not None and data_length > offset_length:
            raise MethodConfigError(
                f"{type(self.method).__name__} builds its position offset for inputs of up to max_length={offset_length} "
                f"tokens, but the data allows {data_length}; set model.init_args.method.init_args.max_length >= "
                f"{data_length} or data.init_args.max_length <= {offset_length}."
            )
        if isinstance(self.task, RobustPrompt) and stage == "fit" and not getattr(data, "templates", None):
            raise MethodConfigError(
                "RobustPrompt needs training batches with paraphrased instructions; use "
                "lightning_peft.data.ParaphraseClassificationData with a list of templates."
            )
        super().setup(stage)

    def adapt(self, base: nn.Module) -> Adapted:
        if hasattr(self.method, "tokenizer") and self.method.tokenizer is None:
            self.method.tokenizer = self.tokenizer  # text initialisation reads the run's tokenizer
        return super().adapt(base)

    def export(self, output_dir: str | Path) -> Path:
        """Write the trained prompt plus the tokenizer: peft format for prompt / prefix tuning, else safetensors + JSON."""
        self.configure_model()

        def write(folder: Path) -> None:
            if isinstance(self.model, PeftModel):
                export_adapter(self.model, folder)
            else:
                save_soft_prompt(self.model, folder)
            self.tokenizer.save_pretrained(str(folder))

        return write_folder_atomically(output_dir, write)
