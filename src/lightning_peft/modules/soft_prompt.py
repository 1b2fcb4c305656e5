"""The soft-prompt family's LightningModule: prompt tuning, prefix tuning, DePT, EPT, IAPT, robust prompts.

Everything these methods need from a module is part of their declared contract and handled by
the shared base: the run's tokenizer is bound before `apply` (text initialisation), an input
limit (DePT / EPT's offset covers `max_length` positions) is checked against the data at setup,
a robust-prompt objective (`tasks.RobustPrompt`) is refused without paraphrased data, and export
writes peft format for the methods peft implements and safetensors + JSON otherwise. This module
narrows the accepted methods to `SoftPromptMethod`s.

The per-group learning rates of DePT (prompt 3e-1, low-rank 1e-4 in the paper) come from
`group_lr` or, with warmup and decay per group, from the `DualLRSchedule` callback.
"""

from __future__ import annotations

from ..methods import PromptTuning, SoftPromptMethod
from ..tasks import Task, VerbalizerClassification
from .base import FineTuneModule
from .defaults import lazy_default


class SoftPromptModule(FineTuneModule):
    """Train a soft prompt (or prompt generators) in front of a frozen `transformers` model.

    Example::

        lightning-peft fit --config configs/soft_prompt/dept_trec6.yaml

    Args:
        task: The objective (VerbalizerClassification, HeadClassification, CausalLMSFT, Seq2Seq), or
            RobustPrompt wrapping a classification task (needs ParaphraseClassificationData).
        method: PromptTuning, PrefixTuning (both through peft), DePT, EPT, IAPT, or any SoftPromptMethod.
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, lr_scheduler, ...).
    """

    def __init__(
        self,
        task: Task = lazy_default(VerbalizerClassification),
        method: SoftPromptMethod = lazy_default(PromptTuning),
        **kwargs,
    ) -> None:
        super().__init__(task=task, method=method, **kwargs)
