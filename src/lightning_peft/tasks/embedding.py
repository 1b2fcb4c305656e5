"""Embedding training with the multiple-negatives-ranking loss, and its evaluation by retrieval.

Hallee, Kapur, Patel, Gleghorn 2024, "Contrastive Learning and Mixture of Experts Enables Precise
Vector Embeddings", arXiv:2401.15713, train sentence embeddings on (anchor, positive) pairs with the
multiple-negatives-ranking loss (Henderson et al. 2017, arXiv:1705.00652; sentence-transformers'
`MultipleNegativesRankingLoss`): every other positive in the batch is a negative for an anchor. They
score the embeddings by retrieval: each anchor must find its own positive among all positives.

Sentence embeddings are the encoder's pooled last hidden states (`tasks/setfit.py`'s
`sentence_embeddings`: mean over real tokens, L2-normalised, as all-MiniLM-L6-v2 was trained).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.retrieval import RetrievalMRR, RetrievalRecall

from .base import Task, TaskConfigError, TaskOutput
from .setfit import Pooling, load_encoder, sentence_embeddings

MNR_SCALE = 20.0  # sentence-transformers' default, the paper's


def mnr_loss(anchors: torch.Tensor, positives: torch.Tensor, scale: float = MNR_SCALE) -> torch.Tensor:
    """Multiple-negatives-ranking loss of B (anchor, positive) pairs of embeddings [B, d]:

        S_ij = scale * cos(a_i, p_j),   L = -1/B sum_i log( exp(S_ii) / sum_j exp(S_ij) )

    i.e. cross-entropy over each row of S with the diagonal as the targets.
    """
    similarity = scale * F.normalize(anchors.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T
    return F.cross_entropy(similarity, torch.arange(similarity.shape[0], device=similarity.device))


def retrieval_metrics() -> MetricCollection:
    """Recall@1, recall@10 and MRR over queries (torchmetrics.retrieval: one query per `indexes` value)."""
    return MetricCollection({"recall@1": RetrievalRecall(top_k=1), "recall@10": RetrievalRecall(top_k=10),
                             "mrr": RetrievalMRR()})


def retrieval_scores(queries: torch.Tensor, documents: torch.Tensor, domains: torch.Tensor,
                     domain_names: Sequence[str]) -> dict[str, float]:
    """Retrieval of document i by query i (embeddings [N, d], cosine similarity), overall and per domain.

    Overall: each query ranks all N documents. Per domain d (keys "<d>/recall@1", ...): each query of
    domain d ranks the documents of domain d only. Domains without examples are left out.
    """
    groups = [("", torch.ones_like(domains, dtype=torch.bool))]
    groups += [(f"{name}/", domains == index) for index, name in enumerate(domain_names)]
    scores: dict[str, float] = {}
    for prefix, rows in groups:
        count = int(rows.sum())
        if count == 0:
            continue
        similarity = F.normalize(queries[rows].float(), dim=-1) @ F.normalize(documents[rows].float(), dim=-1).T
        metrics = retrieval_metrics().to(similarity.device)
        # torchmetrics (1.9) counts a document scored <= 0 as not retrieved at all, and a cosine can be negative:
        # exp keeps the order and makes every score positive.
        metrics.update(similarity.exp().flatten(), torch.eye(count, dtype=torch.bool, device=similarity.device).flatten(),
                       indexes=torch.arange(count, device=similarity.device).repeat_interleave(count))
        scores.update({prefix + name: float(value) for name, value in metrics.compute().items()})
    return scores


class Encoder:
    """What `MNREmbedding.auto_class()` returns: the bare encoder (`AutoModel`) without a [CLS] pooler."""

    from_pretrained = staticmethod(load_encoder)


class MNREmbedding(Task):
    """Train sentence embeddings on (anchor, positive) pairs with the multiple-negatives-ranking loss.

    Batches (`data/embedding_pairs.py`) hold 2B texts: the B anchors, then their B positives.

    Args:
        pooling: "mean" over real tokens (all-MiniLM-L6-v2, most sentence-transformers) or "cls".
        normalize: L2-normalise embeddings (all-MiniLM-L6-v2 ends with a Normalize module); the loss and the
            retrieval use cosine similarity either way.
        scale: The inverse temperature of the in-batch softmax (20: the paper's and sentence-transformers').
    """

    auto_class_name = "AutoModel"

    def __init__(self, pooling: Pooling = "mean", normalize: bool = True, scale: float = MNR_SCALE) -> None:
        if pooling not in ("mean", "cls"):
            raise TaskConfigError(f"pooling={pooling!r} is not 'mean' or 'cls'; use the pooling the encoder was trained with.")
        if not scale > 0:
            raise TaskConfigError(f"scale={scale} must be positive (the paper and sentence-transformers use 20).")
        self.pooling, self.normalize, self.scale = pooling, normalize, float(scale)

    def auto_class(self):
        return Encoder

    def embed(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, d] of right-padded inputs."""
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return sentence_embeddings(hidden, attention_mask, self.pooling, self.normalize)

    def pair_embeddings(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchors, positives), [B, d] each, of a batch of 2B texts embedded in one forward pass."""
        anchors, positives = self.embed(model, batch["input_ids"], batch["attention_mask"]).chunk(2)
        return anchors, positives

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        return TaskOutput(loss=mnr_loss(*self.pair_embeddings(model, batch), scale=self.scale))

    def metrics(self) -> MetricCollection:
        return retrieval_metrics()
