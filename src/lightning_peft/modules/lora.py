"""The LoRA-family LightningModule: LoRA, DoRA, rsLoRA and IA3 through peft.

Nothing about their training procedure differs from the shared base (export and merging come
from the method's contract); this module narrows the accepted methods to `PeftMethod`s, so
`--help` documents them and any new subclass is accepted without editing this file.
"""

from __future__ import annotations

from ..methods import Lora, PeftMethod
from ..tasks import Task, VerbalizerClassification
from .base import FineTuneModule
from .defaults import lazy_default


class LoraModule(FineTuneModule):
    """Fine-tune with a peft adapter (LoRA, DoRA, rsLoRA, IA3) on any task.

    Example::

        lightning-peft fit --config configs/quickstart.yaml

    Args:
        task: The objective (VerbalizerClassification, HeadClassification, CausalLMSFT, Seq2Seq).
        method: The adapter: lightning_peft.methods.Lora (variant lora / dora / rslora), IA3, or any PeftMethod.
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, quantization, ...).
    """

    def __init__(
        self,
        task: Task = lazy_default(VerbalizerClassification),
        method: PeftMethod = lazy_default(Lora),
        **kwargs,
    ) -> None:
        super().__init__(task=task, method=method, **kwargs)
