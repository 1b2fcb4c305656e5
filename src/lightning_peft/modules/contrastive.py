"""The contrastive family's LightningModule: SetFit-style few-shot classification.

Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", arXiv:2209.11055 (used for
MasakhaNEWS). What is special about the procedure, and so lives here: two phases in one fit (the
data marks each training batch as a body batch of sentence pairs or a head batch of shots, see
`data/setfit.py`), the head in its own optimizer group with its own learning rate, and the body in
eval mode and without gradient while the head trains. The body trains in full (`FullFineTuning`)
or through any peft adapter (`Lora` on the attention linears); checkpoints hold what the method
trains plus the head, as for every module.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Literal, Optional, Union

import torch
from torch import nn

from .. import zoo
from ..data.setfit import BODY, SetFitData
from ..methods import Adapted, FullFineTuning, PeftMethod, SelectiveMethod
from ..tasks import TaskConfigError
from ..tasks.setfit import HEAD_NAME, SetFitClassification
from .base import FineTuneModule
from .defaults import lazy_default

HEAD_GROUP = "head"


def check_encoder(backbone: str, who: str = "SetFit") -> None:
    """Refuse a decoder-only backbone in one sentence, before any weights load.

    An encoder here is a model type transformers can load as a masked LM (BERT, RoBERTa, MPNet, ...):
    those attend in both directions, which mean pooling over a sentence relies on.
    """
    zoo.check_architecture(backbone, "AutoModel")  # a missing or broken backbone gets its own sentence first
    try:
        zoo.check_architecture(backbone, "AutoModelForMaskedLM")
    except zoo.ModelNotFoundError:
        raise TaskConfigError(
            f"{who} embeds sentences with a bidirectional encoder, but backbone {backbone!r} is not one (transformers "
            "has no masked-LM form of its architecture, as for decoder-only LMs); use minilm-l6 or another sentence "
            "encoder (BERT, RoBERTa, MPNet).") from None


def with_head_group(adapted: Adapted) -> Adapted:
    """Move the head's parameters into their own group (full fine-tuning puts every weight in one)."""
    groups: dict[str, dict[str, nn.Parameter]] = {}
    for group, parameters in adapted.groups.items():
        for name, parameter in parameters.items():
            groups.setdefault(HEAD_GROUP if HEAD_NAME in name.split(".") else group, {})[name] = parameter
    return Adapted(adapted.model, groups)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """No dropout for the block (the head learns from the embeddings inference will give), then back to training."""
    model.eval()
    try:
        yield
    finally:
        model.train()


class ContrastiveModule(FineTuneModule):
    """SetFit: contrastive fine-tuning of a sentence encoder on pairs of shots, then a linear head.

    Example::

        lightning-peft fit --config configs/encoders/setfit_sms_spam.yaml

    Args:
        backbone: The sentence encoder: zoo short name (minilm-l6), hub id or local folder.
        task: SetFitClassification (pooling and normalisation of the encoder's embeddings).
        method: How the body trains: FullFineTuning (SetFit's default) or another SelectiveMethod, or a
            peft adapter (PeftMethod) such as Lora(target_modules=[query, key, value]).
        head_fit: "logistic_regression" (SetFit's default head): each head batch fits the head to convergence
            with L-BFGS (scikit-learn's objective; give it all shots in one batch: SetFitData's head_batch_size
            null, head_epochs 1); "gradient" (setfit's differentiable head): an optimizer step per head batch
            at `head_lr`.
        head_c: Inverse L2 strength of the logistic regression (scikit-learn's C, default 1.0).
        head_lr: Learning rate of the head with head_fit "gradient" (setfit's `head_learning_rate`, 1e-2); the
            optimizer's lr is the body's (setfit's `body_learning_rate`, 2e-5).
        **kwargs: Everything else of `FineTuneModule` (optimizer, group_lr, lr_scheduler, ...).
    """

    def __init__(
        self,
        backbone: str = "minilm-l6",
        task: SetFitClassification = lazy_default(SetFitClassification),
        method: Union[SelectiveMethod, PeftMethod] = lazy_default(FullFineTuning),
        head_fit: Literal["logistic_regression", "gradient"] = "logistic_regression",
        head_c: float = 1.0,
        head_lr: float = 1e-2,
        **kwargs: Any,
    ) -> None:
        if not head_lr > 0 or not head_c > 0:
            raise TaskConfigError(f"head_lr={head_lr} and head_c={head_c} must be positive (SetFit uses 1e-2 and 1.0).")
        if head_fit not in ("logistic_regression", "gradient"):
            raise TaskConfigError(f"head_fit={head_fit!r} is not 'logistic_regression' or 'gradient'.")
        check_encoder(backbone)
        super().__init__(backbone=backbone, task=task, method=method, **kwargs)
        self.group_lr = {HEAD_GROUP: head_lr, **self.group_lr}
        self.head_fit, self.head_c = head_fit, head_c

    def adapt(self, base: nn.Module) -> Adapted:
        return with_head_group(super().adapt(base))

    def setup(self, stage: str) -> None:
        if stage == "fit" and not isinstance(self.trainer.datamodule, SetFitData):
            raise TaskConfigError(
                f"{type(self).__name__} trains on SetFit's pair and shot batches, which "
                f"{type(self.trainer.datamodule).__name__} does not make; use lightning_peft.data.SetFitData.")
        super().setup(stage)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Optional[torch.Tensor]:
        """Body batches: the pair loss, for the optimizer. Head batches: the head's loss for the optimizer
        ("gradient"), or None after fitting the head in place ("logistic_regression": Lightning then skips
        the optimizer step, so nothing else moves)."""
        if batch["phase"] == BODY:
            output, size = self.task.pair_step(self.model, batch), batch["similarity"].shape[0]
        else:
            size = batch["labels"].shape[0]
            with eval_mode(self.model):
                output = (self.task.head_step(self.model, batch) if self.head_fit == "gradient"
                          else self.task.fit_logistic_regression(self.model, batch, self.head_c))
        self.log(f"train/{batch['phase']}_loss", output.loss, prog_bar=True, batch_size=size)
        self.log("train/loss", output.loss, batch_size=size)
        return None if batch["phase"] != BODY and self.head_fit == "logistic_regression" else output.loss
