"""n-gram style prior in logit space, as a `transformers` `LogitsProcessor`.

Paper: "Limits of n-gram Style Control for LLMs via Logit-Space Injection" (2025). A small n-gram
model of a style corpus, counted on the LM's own tokenizer, is added to the LM's logits at every
step: logits' = logits + lambda * sum_{n=1..N} log p_n(token | context). The paper's finding: a
small lambda (about 0.1) moves the text toward the corpus; larger values collapse fluency.

Our choices (the paper fixes neither): p_1 is the add-one unigram; p_n (n >= 2) interpolates the
order-n maximum-likelihood estimate with p_{n-1} by Witten-Bell weights, so every p_n is a proper
distribution over the vocabulary with no zero. Counts are sparse (one row per seen context) and
cached on disk, keyed by the corpus' fingerprint, the tokenizer's vocabulary and the order.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from ..atomic import write_file_atomically
from ..zoo import cache_root
from .style_corpus import corpus_text
from .errors import GenerationError

ORDERS = (1, 2, 3, 4, 5)  # the highest n-gram orders we count (the paper: 3)


@dataclass
class NgramCounts:
    """Counts of a corpus' n-grams, n = 1..order.

    Args:
        unigram: Count of each token id (dense, length = the tokenizer's vocabulary).
        rows: For n >= 2, `rows[n]` maps a context (n-1 token ids) to (next token ids, their counts).
        order: The highest n.
    """

    unigram: torch.Tensor
    rows: dict[int, dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]]]
    order: int

    @classmethod
    def count(cls, token_ids: list[int], vocab_size: int, order: int) -> "NgramCounts":
        unigram = torch.bincount(torch.tensor(token_ids, dtype=torch.long), minlength=vocab_size).double()
        rows = {}
        for n in range(2, order + 1):
            grams = Counter(tuple(token_ids[i:i + n]) for i in range(len(token_ids) - n + 1))
            rows[n] = _group(grams)
        return cls(unigram, rows, order)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors: `grams{n}` (M x n token ids) and `counts{n}` per order."""
        flat = {"unigram": self.unigram}
        for n, table in self.rows.items():
            grams = [(*context, int(t)) for context, (tokens, _) in table.items() for t in tokens]
            flat[f"grams{n}"] = torch.tensor(grams, dtype=torch.long).reshape(-1, n)
            flat[f"counts{n}"] = torch.cat([counts for _, counts in table.values()]) if table else torch.zeros(0)
        return flat

    @classmethod
    def from_tensors(cls, flat: dict[str, torch.Tensor], order: int) -> "NgramCounts":
        rows = {}
        for n in range(2, order + 1):
            grams = Counter({tuple(g): float(c) for g, c in zip(flat[f"grams{n}"].tolist(), flat[f"counts{n}"].tolist())})
            rows[n] = _group(grams)
        return cls(flat["unigram"].double(), rows, order)


def _group(grams: Counter) -> dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]]:
    by_context: dict[tuple[int, ...], list[tuple[int, float]]] = defaultdict(list)
    for gram, count in grams.items():
        by_context[gram[:-1]].append((gram[-1], count))
    return {context: (torch.tensor([t for t, _ in pairs], dtype=torch.long),
                      torch.tensor([c for _, c in pairs], dtype=torch.float64))
            for context, pairs in by_context.items()}


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the vocabulary (token -> id): the same ids mean the same tokens."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocab.encode()).hexdigest()[:16]


def check_order(order: int) -> None:
    if order not in ORDERS:
        raise GenerationError(f"The style prior's n-gram order must be one of {ORDERS} (the paper: 3), got {order!r}.")


def ngram_counts(corpus: str, tokenizer: PreTrainedTokenizerBase, order: int = 3,
                 cache_dir: Path | None = None) -> NgramCounts:
    """The n-gram counts of `corpus` (a text file or catalog name) on `tokenizer`, counted once and cached.

    The cache key is the corpus text's sha256, the tokenizer's vocabulary fingerprint and the order.
    """
    check_order(order)
    text = corpus_text(corpus)
    key = hashlib.sha256(f"{hashlib.sha256(text.encode()).hexdigest()}|{tokenizer_fingerprint(tokenizer)}|{order}"
                         .encode()).hexdigest()[:24]
    path = (cache_dir or cache_root() / "ngram") / f"{key}.safetensors"
    if path.exists():
        return NgramCounts.from_tensors(load_file(str(path)), order)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    counts = NgramCounts.count(ids, len(tokenizer), order)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, lambda tmp: save_file(counts.tensors(), str(tmp)))
    return counts


class NgramPrior:
    """Interpolated n-gram probabilities p_1..p_N over the whole vocabulary, one context at a time.

    p_1(w) = (c(w) + 1) / (T + V)                                   (add-one unigram)
    p_n(w | h) = lam_h * c(h, w) / c(h) + (1 - lam_h) * p_{n-1}(w | h')  with lam_h = c(h) / (c(h) + types(h))
    (Witten-Bell; h' is h without its first token; an unseen h gives p_n = p_{n-1}).
    """

    def __init__(self, counts: NgramCounts, vocab_size: int) -> None:
        self.counts = counts
        unigram = torch.zeros(vocab_size, dtype=torch.float64)
        known = min(vocab_size, counts.unigram.numel())
        unigram[:known] = counts.unigram[:known]
        self.unigram = (unigram + 1) / (unigram.sum() + vocab_size)

    def distributions(self, context: list[int]) -> list[torch.Tensor]:
        """[p_1, ..., p_N] over the vocabulary for the next token after `context` (a list of token ids)."""
        found = [self.unigram]
        for n in range(2, self.counts.order + 1):
            history = tuple(context[len(context) - n + 1:]) if len(context) >= n - 1 else None
            row = self.counts.rows[n].get(history) if history is not None else None
            if row is None:
                found.append(found[-1])
                continue
            tokens, counts = row
            total, types = counts.sum(), counts.numel()
            weight = total / (total + types)
            maximum_likelihood = torch.zeros_like(self.unigram).index_add_(0, tokens[tokens < self.unigram.numel()],
                                                                            counts[tokens < self.unigram.numel()])
            found.append(weight * maximum_likelihood / total + (1 - weight) * found[-1])
        return found

    def log_prior(self, context: list[int]) -> torch.Tensor:
        """sum_n log p_n(token | context) for every token of the vocabulary."""
        return torch.stack(self.distributions(context)).log().sum(0)


class NgramPriorProcessor(LogitsProcessor):
    """logits' = logits + lambda * sum_n log p_n(token | context): the style prior, for `model.generate`.

    Example::

        prior = NgramPriorProcessor(ngram_counts("lee_news", tokenizer), style_lambda=0.1)
        model.generate(**inputs, logits_processor=LogitsProcessorList([prior]))
    """

    def __init__(self, counts: NgramCounts, style_lambda: float) -> None:
        if not style_lambda >= 0:
            raise GenerationError(f"The style prior's lambda must be >= 0 (the paper: about 0.1), got {style_lambda!r}.")
        self.counts, self.style_lambda = counts, style_lambda
        self._priors: dict[int, NgramPrior] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.style_lambda == 0:
            return scores
        vocab = scores.shape[-1]
        if vocab not in self._priors:  # the model's logits may be wider than the tokenizer's vocabulary
            self._priors[vocab] = NgramPrior(self.counts, vocab)
        prior = self._priors[vocab]
        context = self.counts.order - 1
        tails = input_ids[:, max(0, input_ids.shape[1] - context):].tolist() if context else [[] for _ in range(len(scores))]
        bias = torch.stack([prior.log_prior(tail) for tail in tails]).to(scores.dtype).to(scores.device)
        return scores + self.style_lambda * bias
