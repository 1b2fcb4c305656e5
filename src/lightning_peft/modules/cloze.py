"""The cloze (prompt-based) family's LightningModule: PET's pattern models.

Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL; arXiv:2001.07676). A pattern model is the LM with an adapter, trained on
the few labelled examples with cross-entropy over the verbalizer's class scores, plus, on batches of
unlabelled text drawn alongside, the LM's own loss so that it does not forget the language it scores:

    L = alpha * L_CE + (1 - alpha) * L_LM        (alpha = 0.9999, PET's default)

Self-calibrated fine-tuning (Zhong et al. 2023, "Bag of Tricks for Effective Language Model Pretraining
and Downstream Adaptation: A Case Study on GLUE") is an option here: pool examples the current model is
confident about join the cross-entropy with its own prediction as their label,

    L = alpha * (L_CE + w * L_CE(confident pool examples, predicted labels)) + (1 - alpha) * L_LM

The stages that use several such models (ensemble, distillation, iPET, PCP) run from `lightning-peft pet`
(`cli/pet.py`); `class_scores` is how that command reads a trained model's scores on a data split, and
`ClozePretraining` is PCP's continued pre-training (Shi & Lipani 2023, "Don't Stop Pretraining? Make
Prompt-based Fine-tuning Powerful Learner", NeurIPS).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from ..data.fewshot import POOL_REMEDY, has_pool
from ..methods import Lora, MethodConfigError, PeftMethod
from ..tasks import ClozeClassification
from ..tasks.base import Classifies
from .base import FineTuneModule
from .defaults import lazy_default


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


def confident_pseudo_labels(scores: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-calibration's choice: which examples to add [N] (bool) and their hard labels [N], from class scores [N, C].

    confidence_i = max_c softmax(scores_i)_c; example i is added when confidence_i >= threshold, labelled
    argmax_c scores_i. No gradient flows through the choice.
    """
    confidence, labels = scores.detach().float().softmax(-1).max(-1)
    return confidence >= threshold, labels


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
        unlabelled_batch_size: Unlabelled examples per training step for the LM term and self-calibration
            (default: the training batch size; PET draws 4 labelled and 16 unlabelled).
        self_calibration: Self-calibrated fine-tuning's confidence threshold in (0, 1): at every step, the
            unlabelled batch's examples whose current-model confidence (highest class probability) is at
            least this join the cross-entropy term, each labelled with the model's own prediction. Null: off
            (the objective is exactly alpha * CE + (1 - alpha) * LM). Needs an unlabelled pool.
        self_calibration_weight: Weight w of the self-calibrated cross-entropy beside the labelled one.
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, quantization, ...).
    """

    def __init__(
        self,
        task: ClozeClassification = lazy_default(ClozeClassification),
        method: PeftMethod = lazy_default(Lora),
        alpha: float = 0.9999,
        unlabelled_batch_size: int | None = None,
        self_calibration: float | None = None,
        self_calibration_weight: float = 1.0,
        **kwargs,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
            raise MethodConfigError(f"alpha must be in (0, 1] (the weight of the cross-entropy; PET uses 0.9999), got {alpha!r}.")
        if unlabelled_batch_size is not None and (not isinstance(unlabelled_batch_size, int) or unlabelled_batch_size < 1):
            raise MethodConfigError(f"unlabelled_batch_size must be a positive integer or null, got {unlabelled_batch_size!r}.")
        if self_calibration is not None and (isinstance(self_calibration, bool) or not isinstance(self_calibration, int | float)
                                             or not 0 < self_calibration < 1):
            raise MethodConfigError(f"self_calibration must be a confidence threshold in (0, 1) (e.g. 0.9) or null (off), "
                                    f"got {self_calibration!r}.")
        if isinstance(self_calibration_weight, bool) or not isinstance(self_calibration_weight, int | float) \
                or self_calibration_weight <= 0:
            raise MethodConfigError(f"self_calibration_weight must be a positive number, got {self_calibration_weight!r}.")
        super().__init__(task=task, method=method, **kwargs)
        self.alpha = float(alpha)
        self.unlabelled_batch_size = unlabelled_batch_size
        self.self_calibration, self.self_calibration_weight = self_calibration, float(self_calibration_weight)
        self._pool: Iterator[dict[str, torch.Tensor]] | None = None

    @property
    def uses_pool(self) -> bool:
        """Whether training draws unlabelled batches (the LM term has weight, or self-calibration is on)."""
        return self.alpha < 1 or self.self_calibration is not None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.check_fit(self.trainer, self.trainer.datamodule)

    def check_fit(self, trainer: L.Trainer, data: L.LightningDataModule | None) -> None:
        """`ChecksFit`: an empty pool is refused when the LM term or self-calibration reads it."""
        if self.uses_pool and not has_pool(data):
            readers = [f"the language-model term (alpha={self.alpha} gives it weight {1 - self.alpha:.4g})"] * (self.alpha < 1)
            offs = ["alpha: 1"] * (self.alpha < 1)
            if self.self_calibration is not None:
                readers.append(f"self-calibration (self_calibration={self.self_calibration})")
                offs.append("self_calibration: null")
            raise MethodConfigError(
                f"{' and '.join(readers)} {'read' if len(readers) > 1 else 'reads'} the data's unlabelled pool, but the "
                f"data has no unlabelled examples; {POOL_REMEDY}, or set {' and '.join(offs)}.")

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
        logged = {"train/ce": output.loss}
        if self.alpha < 1:  # first, so that self-calibration's forward pass leaves this step's dropout masks alone
            logged["train/lm_loss"] = lm_loss = self.task.lm_loss(self.model, unlabelled)
        ce = output.loss
        if self.self_calibration is not None:
            ce = ce + self.self_calibration_weight * self._self_calibrated_ce(unlabelled, size)
        loss = self.alpha * ce + (1 - self.alpha) * lm_loss if self.alpha < 1 else ce
        self.log_dict(logged, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _self_calibrated_ce(self, unlabelled: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        """Cross-entropy of the confident pool examples against the model's own predictions (0 when none is confident)."""
        scores = self.task.scores(self.model, unlabelled["input_ids"], unlabelled["attention_mask"])
        keep, labels = confident_pseudo_labels(scores, self.self_calibration)
        self.log("train/pseudo_labelled", keep.sum().float(), batch_size=size)
        if not bool(keep.any()):
            return scores.new_zeros(())
        pseudo_ce = F.cross_entropy(scores[keep].float(), labels[keep])
        self.log("train/pseudo_ce", pseudo_ce, batch_size=size)
        return pseudo_ce


class ClozePretraining(ClozeModule):
    """PCP's continued pre-training (Shi & Lipani 2023): the adapter learns the task's language-model loss on the
    training batches, which are label-free texts (patterns filled with pseudo-label words); no cross-entropy.

    `lightning-peft pet` with `pet.pcp: true` builds it from the recipe's ClozeModule settings (`alpha` stays 1,
    no pool is drawn); the data serves the texts through `FewShotClassificationData.train_on_texts`.
    """

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.task.lm_loss(self.model, batch)
        self.log("train/lm_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss
