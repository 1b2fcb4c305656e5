"""The cloze (prompt-based) family's LightningModule: PET's pattern models.

Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL; arXiv:2001.07676). A pattern model is the LM with an adapter, trained on
the few labelled examples with cross-entropy over the verbalizer's class scores, plus, on batches of
unlabelled text drawn alongside, the LM's own loss so that it does not forget the language it scores:

    L = alpha * L_CE + (1 - alpha) * L_LM        (alpha = 0.9999, PET's default)

The stages that use several such models (ensemble, distillation, iPET) run from `lightning-peft pet`
(`cli/pet.py`); `class_scores` is how that command reads a trained model's scores on a data split.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from jsonargparse import lazy_instance
from torch import nn

from ..data.fewshot import UnlabelledPool
from ..methods import Lora, MethodConfigError, PeftMethod
from ..tasks import ClozeClassification
from ..tasks.base import Classifies
from .base import FineTuneModule


@torch.no_grad()
def class_scores(task: Classifies, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every example's class scores [N, classes] in batch order, and its labels [N] (None for unlabelled batches).

    Runs in eval mode without gradients and puts the model's training mode back afterwards.
    """
    was_training = model.training
    model.eval()
    scores, labels = [], []
    try:
        for batch in batches:
            scores.append(task.scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu())
            if "labels" in batch:
                labels.append(batch["labels"])
    finally:
        model.train(was_training)
    return torch.cat(scores), (torch.cat(labels) if labels else None)


def _forever(loader: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader  # a new (seeded, reshuffled) pass each time the pool runs out


class ClozeModule(FineTuneModule):
    """A PET pattern model: a peft adapter trained on a cloze task with PET's auxiliary language-model loss.

    Example::

        lightning-peft pet --config configs/cloze/pet_bbc_news.yaml      # patterns x seeds -> ensemble -> classifier

    Args:
        task: The cloze objective (patterns and verbalizers): `lightning_peft.tasks.ClozeClassification`.
        method: The adapter trained per pattern model: lightning_peft.methods.Lora or any PeftMethod.
        alpha: Weight of the cross-entropy term; 1 - alpha weighs the language-model loss on the data's
            unlabelled pool (next-token loss for a causal LM, 15% masked-LM loss for a masked LM). 1 turns
            the LM term off (then no pool is needed).
        unlabelled_batch_size: Unlabelled examples per training step for the LM term (default: the training
            batch size; PET draws 4 labelled and 16 unlabelled).
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, quantization, ...).
    """

    def __init__(
        self,
        task: ClozeClassification = lazy_instance(ClozeClassification),
        method: PeftMethod = lazy_instance(Lora),
        alpha: float = 0.9999,
        unlabelled_batch_size: int | None = None,
        **kwargs,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
            raise MethodConfigError(f"alpha must be in (0, 1] (the weight of the cross-entropy; PET uses 0.9999), got {alpha!r}.")
        if unlabelled_batch_size is not None and (not isinstance(unlabelled_batch_size, int) or unlabelled_batch_size < 1):
            raise MethodConfigError(f"unlabelled_batch_size must be a positive integer or null, got {unlabelled_batch_size!r}.")
        super().__init__(task=task, method=method, **kwargs)
        self.alpha = float(alpha)
        self.unlabelled_batch_size = unlabelled_batch_size
        self._pool: Iterator[dict[str, torch.Tensor]] | None = None

    @property
    def uses_pool(self) -> bool:
        """Whether training draws unlabelled batches (the LM term has weight)."""
        return self.alpha < 1

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit" or not self.uses_pool:
            return
        data = self.trainer.datamodule
        if not isinstance(data, UnlabelledPool) or data.pool_size() == 0:
            raise MethodConfigError(
                f"alpha={self.alpha} gives the language-model term weight {1 - self.alpha:.4g}, which trains on the data's "
                "unlabelled pool, but the data has no unlabelled examples; use FewShotClassificationData with more "
                "training examples than shots_per_class x classes, or set alpha: 1.")

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.uses_pool:
            self._pool = _forever(self.trainer.datamodule.unlabelled_dataloader(self.unlabelled_batch_size))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        size = batch["input_ids"].shape[0]
        output = self.task.step(self.model, batch)
        if self._pool is None:
            self.log("train/loss", output.loss, prog_bar=True, batch_size=size)
            return output.loss
        unlabelled = {key: value.to(self.device) for key, value in next(self._pool).items()}
        lm_loss = self.task.lm_loss(self.model, unlabelled)
        loss = self.alpha * output.loss + (1 - self.alpha) * lm_loss
        self.log_dict({"train/ce": output.loss, "train/lm_loss": lm_loss}, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss
