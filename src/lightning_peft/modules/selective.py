"""The selective fine-tuning LightningModule: full fine-tuning, HFT, lightweight variants, BitFit.

These methods train the model's own weights, so a checkpoint holds every weight the method can
train (all of them for full fine-tuning and HFT). HFT's per-stage selection is the
`HalfFineTuning` callback's job; the module only has to train whatever is left trainable.
"""

from __future__ import annotations

from ..methods import FullFineTuning, SelectiveMethod
from ..tasks import CausalLMSFT, Task
from .base import FineTuneModule
from .defaults import lazy_default


class SelectiveModule(FineTuneModule):
    """Fine-tune a subset of the backbone's own weights (or all of them).

    Example::

        lightning-peft fit --config configs/selective/hft_two_tasks.yaml

    Args:
        task: The objective (CausalLMSFT, VerbalizerClassification, HeadClassification, Seq2Seq).
        method: FullFineTuning (pair it with the HalfFineTuning callback for HFT across stages),
            HFT (one fixed half), EmbeddingsAndHead, LastBlock, BitFit, or any SelectiveMethod.
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, gradient_checkpointing, ...).
    """

    def __init__(
        self,
        task: Task = lazy_default(CausalLMSFT),
        method: SelectiveMethod = lazy_default(FullFineTuning),
        **kwargs,
    ) -> None:
        super().__init__(task=task, method=method, **kwargs)
