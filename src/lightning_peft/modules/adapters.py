"""The bottleneck-adapter family's LightningModule: Houlsby / Pfeiffer adapters, MAD-X stacks, PVP initialisation.

Their training procedure is the shared base's (the language adapter of a MAD-X stack is frozen by the
method, a pre-trained initialisation is loaded by it); this module narrows the accepted methods to
`AdapterMethod`s, so `--help` documents them and any new subclass is accepted without editing this file.
"""

from __future__ import annotations

from ..methods import AdapterMethod, BottleneckAdapter
from ..tasks import HeadClassification, Task
from .base import FineTuneModule
from .defaults import lazy_default


class AdapterModule(FineTuneModule):
    """Fine-tune bottleneck adapters (and a task head) on a frozen `transformers` backbone.

    Example::

        lightning-peft fit --config configs/adapters/houlsby_sms_spam.yaml

    Args:
        task: The objective (HeadClassification, VerbalizerClassification, CausalLMSFT for a language adapter, ...).
        method: BottleneckAdapter (placement houlsby / pfeiffer; language_adapter for MAD-X; init_from for PVP),
            or any AdapterMethod.
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, ...).
    """

    def __init__(
        self,
        task: Task = lazy_default(HeadClassification),
        method: AdapterMethod = lazy_default(BottleneckAdapter),
        **kwargs,
    ) -> None:
        super().__init__(task=task, method=method, **kwargs)
