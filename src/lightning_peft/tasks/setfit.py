"""SetFit's objectives: a cosine-similarity loss on sentence-embedding pairs, then a linear head on the embeddings.

Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", arXiv:2209.11055. A sentence
encoder (e.g. all-MiniLM-L6-v2) embeds a text as the mean of its last hidden states over real tokens,
L2-normalised, as the encoder was trained (its sentence-transformers `modules.json`: Transformer ->
mean Pooling -> Normalize). The body learns from pairs with sentence-transformers' CosineSimilarityLoss;
the head is a linear classifier on the embeddings, trained with cross-entropy: a multinomial logistic
regression fitted by gradient steps (setfit's "differentiable head") instead of sklearn's solver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import TaskConfigError, TaskOutput
from .classification import _Classification

HEAD_NAME = "setfit_head"  # the linear head's attribute on the encoder (a module name peft can save)
Pooling = Literal["mean", "cls"]


class EncoderWithHead:
    """What `SetFitClassification.auto_class()` returns: `AutoModel` (the bare encoder) with a linear head attached.

    The head is a submodule named `HEAD_NAME`, so the task declares it in `head_modules` like a
    sequence classifier's `classifier`: it is left out of the base's fingerprint and trained in full
    (peft's `modules_to_save` when the body trains through LoRA). A folder written by
    `lightning-peft merge` holds the trained head beside the encoder's weights; `AutoModel` ignores
    those keys, so they are read back here (a plain encoder folder has none: the head starts random).
    """

    @staticmethod
    def from_pretrained(path: str, num_labels: int, **kwargs) -> nn.Module:
        encoder = load_encoder(path, **kwargs)
        head = nn.Linear(encoder.config.hidden_size, num_labels)
        saved = saved_head(path)
        if saved is not None:
            head.load_state_dict(saved)
        encoder.add_module(HEAD_NAME, head.to(encoder.dtype))
        return encoder


def load_encoder(path: str, **kwargs) -> nn.Module:
    """`AutoModel.from_pretrained(path)` without a BERT-style [CLS] pooler: sentence embeddings do not use it, and it
    is random when the folder has none (a masked-LM checkpoint), which would change the base's fingerprint at every load."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(path, **kwargs)
    if "pooler" in dict(encoder.named_children()):
        encoder.pooler = None  # what `add_pooling_layer=False` builds
    return encoder


def saved_head(folder: str) -> dict[str, torch.Tensor] | None:
    """The `HEAD_NAME.*` tensors of a merged folder's safetensors files, without the prefix; None when there are none."""
    from safetensors import safe_open

    prefix = HEAD_NAME + "."
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), "pt") as weights:
            names = [name for name in weights.keys() if name.startswith(prefix)]
            if names:
                return {name[len(prefix):]: weights.get_tensor(name) for name in names}
    return None


def sentence_embeddings(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling, normalize: bool) -> torch.Tensor:
    """[B, d] embeddings from last hidden states [B, T, d]: mean over real tokens sum_t m_t h_t / sum_t m_t
    (or the first token's state), then h / ||h|| when `normalize`."""
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1) if normalize else pooled


def cosine_similarity_loss(first: torch.Tensor, second: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' CosineSimilarityLoss: mean over pairs of (cos(u, v) - y)^2, y in {0, 1} for SetFit."""
    return F.mse_loss(F.cosine_similarity(first.float(), second.float(), dim=-1), similarity.float())


class SetFitClassification(_Classification):
    """Classify with a linear head on a sentence encoder's embeddings; train the encoder on pairs first.

    Three steps, one per kind of batch (`data/setfit.py` marks training batches with their phase):
    `pair_step` (body: cosine-similarity loss on pairs), `head_step` (head: cross-entropy on the
    embeddings of the shots, computed without gradient so the body stays as it is), and `step`
    (validation/test: cross-entropy and predictions, as every classification task).

    Args:
        pooling: "mean" over real tokens (all-MiniLM-L6-v2, most sentence-transformers) or "cls".
        normalize: L2-normalise embeddings (all-MiniLM-L6-v2 ends with a Normalize module).
    """

    auto_class_name = "AutoModel"

    def __init__(self, pooling: Pooling = "mean", normalize: bool = True) -> None:
        if pooling not in ("mean", "cls"):
            raise TaskConfigError(f"pooling={pooling!r} is not 'mean' or 'cls'; use the pooling the encoder was trained with.")
        self.pooling, self.normalize = pooling, normalize

    def auto_class(self):
        return EncoderWithHead

    def model_kwargs(self) -> dict:
        return {"num_labels": len(self.label_names)}

    def head_modules(self, model: nn.Module) -> list[str]:
        return [HEAD_NAME]

    def embed(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, d] of right-padded inputs."""
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return sentence_embeddings(hidden, attention_mask, self.pooling, self.normalize)

    @staticmethod
    def head(model: nn.Module) -> nn.Module:
        # A PeftModel forwards attribute reads to the model it wraps, so this is the head (peft's
        # modules_to_save wrapper, which runs the trained copy) with and without LoRA.
        return getattr(model, HEAD_NAME)

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class scores [B, classes]: the head's logits on the sentence embeddings."""
        return self.head(model)(self.embed(model, input_ids, attention_mask))

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        return self._output(self.scores(model, batch["input_ids"], batch["attention_mask"]), batch["labels"])

    def pair_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """Body phase: B pairs arrive as 2B texts (all first texts, then all second texts)."""
        first, second = self.embed(model, batch["input_ids"], batch["attention_mask"]).chunk(2)
        return TaskOutput(loss=cosine_similarity_loss(first, second, batch["similarity"]))

    def fit_logistic_regression(self, model: nn.Module, batch: dict[str, torch.Tensor], c: float = 1.0,
                                max_iter: int = 100) -> TaskOutput:
        """Head phase, SetFit's default head: fit the head to convergence on the batch's embeddings (body frozen).

        scikit-learn's `LogisticRegression()` objective, minimised with L-BFGS (its default solver,
        `max_iter=100`): C * sum_i CE(W x_i + b, y_i) + ||W||^2 / 2, the bias not penalised. For two
        classes scikit-learn fits one vector w with ||w||^2 / 2; our two rows w0, w1 reach the same
        optimum (w1 = -w0 = w / 2) when their penalty is ||W||^2, so that is the weight used there.
        Warm-starts from the head's current weights; the gradients it leaves are cleared.
        """
        with torch.no_grad():
            embeddings = self.embed(model, batch["input_ids"], batch["attention_mask"]).float()
        head = self.head(model)
        trained = [parameter for parameter in head.parameters() if parameter.requires_grad]
        weights = [parameter for parameter in trained if parameter.dim() > 1]
        penalty = 1.0 if len(self.label_names) == 2 else 0.5
        solver = torch.optim.LBFGS(trained, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            solver.zero_grad()
            loss = c * F.cross_entropy(head(embeddings), batch["labels"], reduction="sum")
            loss = loss + penalty * sum((weight.float() ** 2).sum() for weight in weights)
            loss.backward()
            return loss

        solver.step(objective)
        solver.zero_grad(set_to_none=True)
        with torch.no_grad():
            return self._output(head(embeddings), batch["labels"])

    def head_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """Head phase: cross-entropy of the head on embeddings of the frozen body (no gradient reaches it)."""
        with torch.no_grad():
            embeddings = self.embed(model, batch["input_ids"], batch["attention_mask"])
        return self._output(self.head(model)(embeddings), batch["labels"])
