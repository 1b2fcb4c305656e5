"""The LoRA-family LightningModule: LoRA, DoRA, rsLoRA and IA3 through peft.

Nothing about their training procedure differs from the shared base; this module narrows the
accepted methods (so `--help` lists them) and adds peft-format export and merging.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import lazy_instance

from ..checkpoint import write_folder_atomically
from ..methods import Lora, PeftMethod, export_adapter, merge_adapter
from ..tasks import Task, VerbalizerClassification
from .base import FineTuneModule


class LoraModule(FineTuneModule):
    """Fine-tune with a peft adapter (LoRA, DoRA, rsLoRA, IA3) on any task.

    Example::

        lightning-peft fit --config configs/quickstart.yaml

    Args:
        task: The objective (VerbalizerClassification, HeadClassification, CausalLMSFT, Seq2Seq).
        method: The adapter: lightning_peft.methods.Lora (variant lora / dora / rslora) or IA3.
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, quantization, ...).
    """

    def __init__(
        self,
        task: Task = lazy_instance(VerbalizerClassification),
        method: PeftMethod = lazy_instance(Lora),
        **kwargs,
    ) -> None:
        super().__init__(task=task, method=method, **kwargs)

    def export(self, output_dir: str | Path) -> Path:
        """Write the adapter in peft format plus the tokenizer; `PeftModel.from_pretrained` reads it."""
        self.configure_model()

        def write(folder: Path) -> None:
            export_adapter(self.model, folder)
            self.tokenizer.save_pretrained(str(folder))

        return write_folder_atomically(output_dir, write)

    def export_merged(self, output_dir: str | Path) -> Path:
        """Fold the adapter into the base and write a plain `transformers` folder (plus tokenizer)."""
        self.configure_model()

        def write(folder: Path) -> None:
            merged = merge_adapter(self.model)
            self.model = None  # the adapter is folded in (even if saving fails); rebuild before any further use
            merged.save_pretrained(str(folder), safe_serialization=True)
            self.tokenizer.save_pretrained(str(folder))

        return write_folder_atomically(output_dir, write)
