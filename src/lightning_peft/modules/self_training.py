"""LiST in the cloze family: a teacher trained on the shots soft-labels the unlabelled pool, a re-weighted student learns it.

Wang, Mukherjee, Liu, Gao, Awadallah & Gao 2022, "LiST: Lite Prompted Self-training Makes
Parameter-efficient Few-shot Learners" (NAACL Findings; arXiv:2110.06274). Prompt-based fine-tuning
of lite adapters (x + W2 W1 x, width 128, N(0, 0.02) init, after the attention and FFN outputs:
`BottleneckAdapter` with `non_linearity: identity, init_std: 0.02`) is the only training, so the
teacher and the student are two sets of adapter weights on one shared frozen base. The schedule counts
optimizer steps, so a resumed run picks it up where it stopped:

    steps [0, teacher_steps)          the teacher: cross-entropy over the verbalizer's class scores on the shots
    every refresh_every steps after   a new session: teacher <- the current adapters; the student restarts
                                      from the adapters' initial weights (reset_student) with fresh optimizer state
    each session step                 L = CE(shots) + sum_i w_i KL(teacher_i || student_i) on a pool batch,
                                      w from one virtual SGD step (`tasks.self_training.example_weights`)
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterator

import lightning as L
import torch

from ..data.fewshot import POOL_REMEDY, has_pool
from ..methods import BottleneckAdapter, MethodBase, MethodConfigError
from ..tasks import ClozeClassification
from ..tasks.self_training import WithParameters, example_weights, soft_label_losses
from .base import FineTuneModule
from .cloze import _forever, class_scores
from .defaults import lazy_default

STATE_KEY = "self_training"  # the teacher, the initial adapters and the pool position in a checkpoint


def _positive(name: str, value: Any, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MethodConfigError(f"{name} must be a positive integer ({meaning}), got {value!r}.")


class SelfTrainingModule(FineTuneModule):
    """LiST: lite adapters trained on the shots as a teacher, then self-training sessions of a re-weighted student.

    Example::

        lightning-peft fit --config configs/cloze/list_trec6.yaml

    Args:
        task: The cloze objective (template and verbalizer): `lightning_peft.tasks.ClozeClassification`.
        method: What teacher and student train (the teacher is a copy of its weights): LiST's lite adapters are
            BottleneckAdapter with non_linearity identity, init_std 0.02 and a width of 128 (reduction_factor =
            hidden size / 128); any method works.
        teacher_steps: Optimizer steps the teacher trains on the shots alone before self-training starts.
        refresh_every: Student steps per self-training session; after each, the teacher takes the student's weights.
        reset_student: Restart the student at each session from the adapters' weights before the first step (and
            clear the optimizer's state), as LiST re-initialises it; false: the student continues from the teacher.
        unlabelled_batch_size: Pool examples the teacher labels per student step (default: the training batch size).
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, lr_scheduler, ...).
    """

    def __init__(
        self,
        task: ClozeClassification = lazy_default(ClozeClassification),
        method: MethodBase = lazy_default(BottleneckAdapter, non_linearity="identity", init_std=0.02),
        teacher_steps: int = 100,
        refresh_every: int = 100,
        reset_student: bool = True,
        unlabelled_batch_size: int | None = None,
        **kwargs,
    ) -> None:
        _positive("teacher_steps", teacher_steps, "optimizer steps of the teacher on the shots")
        _positive("refresh_every", refresh_every, "student steps per self-training session")
        if unlabelled_batch_size is not None:
            _positive("unlabelled_batch_size", unlabelled_batch_size, "pool examples per student step; null: the batch size")
        super().__init__(task=task, method=method, **kwargs)
        self.teacher_steps, self.refresh_every = teacher_steps, refresh_every
        self.reset_student, self.unlabelled_batch_size = reset_student, unlabelled_batch_size
        self.teacher: dict[str, torch.Tensor] | None = None  # set at the first session
        self.initial: dict[str, torch.Tensor] | None = None  # the adapters before any step (reset_student)
        self.pool_drawn = 0  # pool batches used so far: a resumed run skips as many
        self._pool: Iterator[dict[str, torch.Tensor]] | None = None
        self._session_step: int | None = None  # the step whose session start has run (accumulation repeats a step)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.check_fit(self.trainer, self.trainer.datamodule)

    def check_fit(self, trainer: L.Trainer, data: L.LightningDataModule | None) -> None:
        """`ChecksFit`: an empty pool, or max_steps that end before self-training starts, are refused."""
        if not has_pool(data):
            raise MethodConfigError(
                f"LiST's student trains on the data's unlabelled pool, but the data has no unlabelled examples; {POOL_REMEDY}.")
        if not trainer.fast_dev_run and 0 < trainer.max_steps <= self.teacher_steps:
            raise MethodConfigError(
                f"trainer.max_steps={trainer.max_steps} ends before self-training starts (teacher_steps="
                f"{self.teacher_steps}); raise max_steps or lower teacher_steps.")

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """The parameters teacher and student hold, by name in `self.model`."""
        return {name: param for group in self.groups.values() for name, param in group.items()}

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.reset_student and self.initial is None:
            self.initial = {name: param.detach().clone() for name, param in self.trainable().items()}
        self.initial = self._on_device(self.initial)
        self.teacher = self._on_device(self.teacher)
        pool = _forever(self.trainer.datamodule.unlabelled_dataloader(self.unlabelled_batch_size))
        self._pool = islice(pool, self.pool_drawn, None)  # the seeded pool order, past what was used

    def _on_device(self, weights: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        return None if weights is None else {name: value.to(self.device) for name, value in weights.items()}

    @torch.no_grad()
    def _start_session(self) -> None:
        """The teacher takes the current weights; the student restarts from the initial ones (reset_student)."""
        weights = self.trainable()
        self.teacher = {name: param.detach().clone() for name, param in weights.items()}
        if not self.reset_student:
            return
        for name, param in weights.items():
            param.copy_(self.initial[name])
        for optimizer in self.trainer.optimizers:
            optimizer.state.clear()  # a new student gets a new optimizer, as in LiST; the schedule runs on

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        step = self.global_step
        in_session = step >= self.teacher_steps
        if in_session and (step - self.teacher_steps) % self.refresh_every == 0 and self._session_step != step:
            self._start_session()
            self._session_step = step
        size = batch["input_ids"].shape[0]
        labelled = self.task.step(self.model, batch)
        if not in_session:
            self.log("train/loss", labelled.loss, prog_bar=True, batch_size=size)
            return labelled.loss
        pool = {key: value.to(self.device) for key, value in next(self._pool).items()}
        self.pool_drawn += 1
        teacher_scores, _ = class_scores(self.task, WithParameters(self.model, self.teacher), [pool], self.device)
        soft = teacher_scores.softmax(-1).to(self.device)

        def pool_losses(model: torch.nn.Module) -> torch.Tensor:
            return soft_label_losses(self.task.scores(model, pool["input_ids"], pool["attention_mask"]), soft)

        weights = example_weights(self.model, self.trainable(), pool_losses, lambda model: self.task.step(model, batch).loss)
        pseudo = (weights * pool_losses(self.model)).sum()
        loss = labelled.loss + pseudo
        self.log_dict({"train/ce": labelled.loss, "train/pseudo_loss": pseudo, "train/kept": (weights > 0).float().mean()},
                      batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def on_save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        super().on_save_checkpoint(ckpt)
        cpu = {name: {key: value.detach().cpu() for key, value in weights.items()} if weights is not None else None
               for name, weights in (("teacher", self.teacher), ("initial", self.initial))}
        ckpt[STATE_KEY] = {**cpu, "pool_drawn": self.pool_drawn}

    def on_load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        super().on_load_checkpoint(ckpt)
        state = ckpt.get(STATE_KEY) or {}
        self.teacher, self.initial = state.get("teacher"), state.get("initial")
        self.pool_drawn = int(state.get("pool_drawn", 0))
