"""The contrastive family's embedding procedure: multiple-negatives-ranking training, optionally through domain experts.

Hallee, Kapur, Patel, Gleghorn 2024, "Contrastive Learning and Mixture of Experts Enables Precise
Vector Embeddings", arXiv:2401.15713. A sentence encoder learns from (anchor, positive) pairs with the
in-batch MNR loss (`tasks/embedding.py`); with `DomainExperts` each layer's FFN has one expert per
domain and every pair goes through its domain's expert (enforced routing). What is special here, and
so lives in this module: routing each batch by its domain labels, and scoring the held-out pairs by
retrieval (each anchor must find its own positive) overall and per domain, once per evaluation epoch.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Union

import torch

from ..data.embedding_pairs import EmbeddingPairData
from ..methods import DomainExperts, FullFineTuning, PeftMethod, SelectiveMethod
from ..tasks import TaskConfigError
from ..tasks.embedding import MNREmbedding, mnr_loss, retrieval_scores
from .base import FineTuneModule
from .contrastive import check_encoder
from .defaults import lazy_default

Batch = dict[str, torch.Tensor]


class EmbeddingModule(FineTuneModule):
    """Train sentence embeddings with the MNR loss; evaluate by retrieval of the held-out pairs.

    Example::

        lightning-peft fit --config configs/encoders/mnr_experts_bbc_news.yaml

    Validation and test log `<split>/recall@1`, `<split>/recall@10`, `<split>/mrr` (each anchor ranks all
    held-out positives) and the same per domain, `<split>/<domain>/recall@1`, ... (ranking the domain's only).

    Args:
        backbone: The sentence encoder: zoo short name (minilm-l6), hub id or local folder.
        task: MNREmbedding (pooling, normalisation, the loss's scale).
        method: How the encoder trains: FullFineTuning or another SelectiveMethod, a peft adapter (PeftMethod), or
            DomainExperts (one FFN expert per domain, routed by the data's domain labels; its domains must
            include every domain of the data, unless it has a single expert, which then serves them all).
        **kwargs: Everything else of `FineTuneModule` (optimizer, group_lr, lr_scheduler, ...).
    """

    def __init__(
        self,
        backbone: str = "minilm-l6",
        task: MNREmbedding = lazy_default(MNREmbedding),
        method: Union[SelectiveMethod, PeftMethod, DomainExperts] = lazy_default(FullFineTuning),
        **kwargs: Any,
    ) -> None:
        check_encoder(backbone, "MNR embedding training")
        super().__init__(backbone=backbone, task=task, method=method, **kwargs)
        self.domain_names: list[str] = []
        self._experts_of: torch.Tensor | None = None  # data domain index -> expert index; None: no routing
        self._held_out: dict[str, list[tuple[torch.Tensor, ...]]] = {"val": [], "test": []}

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if not isinstance(data, EmbeddingPairData):
            raise TaskConfigError(f"{type(self).__name__} trains on (anchor, positive, domain) batches, which "
                                  f"{type(data).__name__} does not make; use lightning_peft.data.EmbeddingPairData.")
        self.domain_names = data.domain_names
        if isinstance(self.method, DomainExperts) and len(self.method.domains) > 1:
            self._experts_of = self.method.expert_indices(self.domain_names)  # refuses a domain without an expert
        super().setup(stage)

    @contextlib.contextmanager
    def routed(self, batch: Batch) -> Iterator[None]:
        """Route the batch's 2B texts (anchors, then positives) through the experts of their domains."""
        if self._experts_of is None:
            yield
            return
        experts = self._experts_of.to(batch["domain"].device)[batch["domain"]]
        with self.method.route(self.model, experts.repeat(2)):
            yield

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        with self.routed(batch):
            output = self.task.step(self.model, batch)
        self.log("train/loss", output.loss, prog_bar=True, batch_size=batch["domain"].shape[0])
        return output.loss

    def _evaluate(self, batch: Batch, split: str, dataloader_idx: int) -> None:
        with self.routed(batch):
            anchors, positives = self.task.pair_embeddings(self.model, batch)
        size = batch["domain"].shape[0]
        self.log(f"{split}/loss", mnr_loss(anchors, positives, self.task.scale), batch_size=size, add_dataloader_idx=False)
        self._held_out[split].append((anchors.float().cpu(), positives.float().cpu(), batch["domain"].cpu()))

    def _score(self, split: str) -> None:
        """Retrieval over every held-out pair of the epoch (a single process holds them all; see docs)."""
        held = self._held_out[split]
        if not held:
            return
        anchors, positives, domains = (torch.cat(parts) for parts in zip(*held))
        held.clear()
        scores = retrieval_scores(anchors, positives, domains, self.domain_names)
        self.log_dict({f"{split}/{name}": value for name, value in scores.items()}, prog_bar=False)

    def on_validation_epoch_start(self) -> None:
        self._held_out["val"].clear()

    def on_test_epoch_start(self) -> None:
        self._held_out["test"].clear()

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")
