"""Diversity of several sampled answers per prompt, as torchmetrics `Metric`s.

Each `update` takes a batch of prompts' sample sets (`list[list[str]]`, one inner list of n >= 2
texts per prompt); each metric computes a per-prompt value and `compute` averages it over every
prompt seen (sums in the state, so DDP reduction is exact). These are the measures of
"Improving Linguistic Diversity of Large Language Models with Possibility Exploration Fine-Tuning"
(Mai et al. 2024, https://arxiv.org/abs/2412.03343), which reports distinct-n and pairwise
embedding distance over the n responses of a context:

- `DistinctN`: distinct-n (Li et al. 2016, arXiv:1510.03055) per prompt = unique n-grams / all
  n-grams over the prompt's samples together; higher is more diverse.
- `SelfBLEU`: self-BLEU (Zhu et al. 2018, Texygen, arXiv:1802.01886) per prompt = mean BLEU of
  each sample against the other samples as references; lower is more diverse.
- `PairwiseEmbeddingDistance`: mean `1 - cosine` over all pairs of a prompt's sample embeddings
  (the paper uses a sentence encoder; ours is `minilm-l6`, mean-pooled); higher is more diverse.

Words: lowercased `\\w+` runs and single punctuation marks (`words`), so "Hi." and "hi" share "hi".
"""

from __future__ import annotations

import re
from itertools import combinations
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.text import bleu_score

Samples = Sequence[Sequence[str]]
_WORD = re.compile(r"\w+|[^\w\s]")


class DiversityInputError(ValueError):
    """Samples a diversity metric cannot score (one sentence: what and how to fix)."""


def words(text: str) -> list[str]:
    """Lowercased words and punctuation marks of `text`, the unit of distinct-n and self-BLEU."""
    return _WORD.findall(text.lower())


def _check(samples: Samples) -> None:
    for number, group in enumerate(samples):
        if isinstance(group, str) or len(group) < 2:
            raise DiversityInputError(f"Prompt {number} has {1 if isinstance(group, str) else len(group)} sample(s); "
                                      "diversity needs a list of at least 2 sampled texts per prompt.")


class _PerPromptMean(Metric):
    """The mean over prompts of a per-prompt score (`score`), aggregated as (sum, count)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("prompts", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, group: Sequence[str]) -> float:
        raise NotImplementedError

    def update(self, samples: Samples) -> None:
        _check(samples)
        for group in samples:
            self.total += float(self.score(list(group)))
            self.prompts += 1

    def compute(self) -> torch.Tensor:
        return (self.total / self.prompts.clamp(min=1)).float()


class DistinctN(_PerPromptMean):
    """distinct-n: unique n-grams / all n-grams across one prompt's samples, averaged over prompts.

    Example::

        metric = DistinctN(2)
        metric.update([["a cat sat", "a cat ran"]])   # bigrams: a cat, cat sat, a cat, cat ran -> 3 / 4
        metric.compute()                              # tensor(0.75)

    Args:
        n: The n-gram order (1: distinct-1, 2: distinct-2).
    """

    higher_is_better = True

    def __init__(self, n: int = 2, **kwargs) -> None:
        if not isinstance(n, int) or n < 1:
            raise DiversityInputError(f"n must be a positive integer (1 or 2 for distinct-1/2), got {n!r}.")
        super().__init__(**kwargs)
        self.n = n

    def score(self, group: Sequence[str]) -> float:
        grams = [tuple(tokens[i:i + self.n]) for tokens in map(words, group) for i in range(len(tokens) - self.n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0


class SelfBLEU(_PerPromptMean):
    """Self-BLEU: each sample scored by BLEU against the prompt's other samples, averaged per prompt, then over prompts.

    BLEU is torchmetrics' `bleu_score` over `words` (joined by spaces); with short replies (dialogue) higher orders rarely
    match, so the default is BLEU-2 with add-one smoothing (`smooth`). Identical samples score 1.

    Args:
        n_gram: Highest n-gram order of BLEU.
        smooth: Lin & Och (2004) add-one smoothing of the n-gram precisions.
    """

    higher_is_better = False

    def __init__(self, n_gram: int = 2, smooth: bool = True, **kwargs) -> None:
        if not isinstance(n_gram, int) or n_gram < 1:
            raise DiversityInputError(f"n_gram must be a positive integer (e.g. 2 or 4), got {n_gram!r}.")
        super().__init__(**kwargs)
        self.n_gram, self.smooth = n_gram, smooth

    def score(self, group: Sequence[str]) -> float:
        texts = [" ".join(words(text)) for text in group]
        total = 0.0
        for index, sample in enumerate(texts):
            others = [text for other, text in enumerate(texts) if other != index]
            total += float(bleu_score([sample], [others], n_gram=self.n_gram, smooth=self.smooth))
        return total / len(texts)


Embed = Callable[[list[str]], torch.Tensor]


class SentenceEncoder:
    """Texts -> mean-pooled last hidden states of an encoder (how all-MiniLM-L6-v2 embeds a sentence).

    Args:
        model: A `transformers` encoder (e.g. `AutoModel.from_pretrained(zoo.resolve("minilm-l6"))`).
        tokenizer: Its tokenizer.
        max_length: Tokens per text (longer texts are cut).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_length: int = 128) -> None:
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        inputs = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(device)
        hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class PairwiseEmbeddingDistance(_PerPromptMean):
    """Mean `1 - cosine(e_i, e_j)` over all pairs of one prompt's sample embeddings, averaged over prompts.

    Args:
        embed: Texts -> `[texts, dim]` embeddings, e.g. `SentenceEncoder(model, tokenizer)` on `minilm-l6`.
    """

    higher_is_better = True

    def __init__(self, embed: Embed, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embed = embed

    def score(self, group: Sequence[str]) -> float:
        vectors = F.normalize(self.embed(list(group)).float(), dim=-1)
        pairs = list(combinations(range(len(group)), 2))
        return sum(1.0 - float(vectors[i] @ vectors[j]) for i, j in pairs) / len(pairs)
