"""SciPrompt's weighted verbalizer in the cloze family: a PET pattern model whose verbalizer can be calibrated.

You et al. 2024, "SciPrompt: Knowledge-augmented Prompting for Fine-grained Categorization of
Scientific Topics" (EMNLP; arXiv:2410.01946). Training is `ClozeModule`'s (cross-entropy over the
class scores, PET's optional LM term); this module adds contextual calibration: before the first
step (or evaluation) it estimates each label word's prior on a support set, the data's unlabelled
pool, and hands it to the task (`WeightedVerbalizerClassification.set_prior`). The prior is kept
in checkpoints, so a resumed or evaluated run scores with the prior it trained with.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import torch

from ..checkpoint import HPARAMS_KEY
from ..data.catalog import load_records
from ..data.classification import TrainingTexts
from ..data.fewshot import UnlabelledPool
from ..methods import MethodConfigError
from ..tasks.weighted_verbalizer import TRAINING_SPLIT, WeightedVerbalizerClassification
from .cloze import ClozeModule
from .defaults import lazy_default

PRIOR_KEY = "weighted_verbalizer_prior"  # the calibration prior's entry in a checkpoint


class WeightedVerbalizerModule(ClozeModule):
    """A cloze pattern model scored by SciPrompt's weighted verbalizer, calibrated on the unlabelled pool when asked.

    Example::

        lightning-peft fit --config configs/cloze/sciprompt_bbc_news.yaml

    Args:
        task: `lightning_peft.tasks.WeightedVerbalizerClassification`.
        support_size: How many unlabelled examples (the pool's first, in a fixed order) estimate the prior.
        **kwargs: Everything else of `ClozeModule` (method, alpha, backbone, optimizer, ...).
    """

    def __init__(self, task: WeightedVerbalizerClassification = lazy_default(WeightedVerbalizerClassification),
                 support_size: int = 200, **kwargs) -> None:
        if isinstance(support_size, bool) or not isinstance(support_size, int) or support_size < 1:
            raise MethodConfigError(f"support_size must be a positive integer (support examples for calibration), got {support_size!r}.")
        super().__init__(task=task, **kwargs)
        self.support_size = support_size

    def configure_model(self) -> None:
        """Expand the label words from the task's `expand_from` texts (once, cached), then build the model.

        From then on the task's config (`specs`, and so checkpoints and exports) names the expanded words as
        `word_scores`, so a module rebuilt from a checkpoint (`export`, `evaluate`) reads no texts.
        """
        if self.model is None:
            self.expand_label_words(self._trainer.datamodule if self._trainer is not None else None)
        super().configure_model()

    def expand_label_words(self, data: object | None) -> None:
        """Expand the seed words now (if the task awaits it), reading `expand_from`, or `data`'s training split for `train`.

        `configure_model` calls it with the trainer's data; a caller that builds the model outside a fit (`lightning-peft
        pet` scores each pattern model before training) calls it first with the data module it will fit on.
        """
        if not self.task.awaits_expansion:
            return
        self.task.expand(self._expansion_texts(data))
        task = self.specs.get("task")
        if task is not None:
            settings = {**(task.get("init_args") or {}), "word_scores": self.task.expanded_words(), "expand_from": None}
            self.specs["task"] = {**task, "init_args": settings}

    def _expansion_texts(self, data: object | None) -> list[str]:
        if self.task.expand_from != TRAINING_SPLIT:
            return [record.get("text", "") for record in load_records(self.task.expand_from)]
        if not isinstance(data, TrainingTexts):
            raise MethodConfigError(f"expand_from={TRAINING_SPLIT!r} expands the label words from the training split of "
                                    "the data the module trains on, but it has no such data; fit it with a classification "
                                    "data module, or set expand_from to a dataset name or file.")
        return data.training_texts()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if not self.task.calibrate or self.task.log_prior is not None:
            return
        data = self.trainer.datamodule
        if not isinstance(data, UnlabelledPool) or data.pool_size() == 0:
            raise MethodConfigError("calibrate=True estimates each label word's prior on a support set, the data's unlabelled "
                                    "pool, but the data has none; use FewShotClassificationData with unlabelled examples, "
                                    "or set calibrate: false.")

    def calibrate(self, data: UnlabelledPool) -> None:
        """Estimate each label word's prior on `data`'s unlabelled pool now, if the task calibrates and has no prior yet.

        The first fit, validate or test calls it with the trainer's data; a caller that scores the model outside
        them (`lightning-peft pet` scores each pattern model on its shots before training) calls it first, so
        those scores are calibrated as the trained model's will be.
        """
        if not self.task.calibrate or self.task.log_prior is not None:
            return
        batch_size = min(self.support_size, 16)
        batches = islice(data.unlabelled_dataloader(batch_size, shuffle=False), -(-self.support_size // batch_size))
        with torch.no_grad():
            self.task.set_prior(self.task.word_prior(self.model, batches))

    def on_fit_start(self) -> None:
        self.calibrate(self.trainer.datamodule)

    def on_validation_start(self) -> None:
        self.calibrate(self.trainer.datamodule)

    def on_test_start(self) -> None:
        self.calibrate(self.trainer.datamodule)

    def on_save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        if isinstance((ckpt.get(HPARAMS_KEY) or {}).get("task"), dict) and "task" in self.specs:
            ckpt[HPARAMS_KEY] = {**ckpt[HPARAMS_KEY], "task": self.specs["task"]}  # the expanded words, not their source
        super().on_save_checkpoint(ckpt)
        if self.task.log_prior is not None:
            ckpt[PRIOR_KEY] = self.task.log_prior.exp().tolist()

    def on_load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        super().on_load_checkpoint(ckpt)
        if ckpt.get(PRIOR_KEY) is not None:
            self.task.set_prior(torch.tensor(ckpt[PRIOR_KEY]))
