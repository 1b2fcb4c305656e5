"""SciPrompt's label-word expansion: each class's seed words grow into many words with correlation scores.

You et al. 2024, "SciPrompt: Knowledge-augmented Prompting for Fine-grained Categorization of
Scientific Topics" (EMNLP; arXiv:2410.01946; repo zhiwenyou103/SciPrompt). The paper retrieves
candidate words for each class from a knowledge base and keeps those a sentence encoder finds close
to the class. Here the candidates are the task's own words instead (every word of its text seen at
least `min_count` times that the LM's tokenizer keeps as one token), scored by all-MiniLM-L6-v2's
cosine similarity to the class's nearest seed word; the `top_k` best above `threshold` stay, and a
word close to several classes stays only with the one it is closest to. The result is cached as JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch
from transformers import PreTrainedTokenizerBase

from .base import TaskConfigError

WORD = re.compile(r"[a-z]{3,}")  # lower-case alphabetic words; shorter ones are mostly function words


def vocabulary(texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, min_count: int = 5,
               prefix_space: bool = True) -> list[str]:
    """The candidate label words: lower-cased words of `texts` seen >= `min_count` times that encode to one token."""
    counts = Counter(word for text in texts for word in WORD.findall(str(text).lower()))
    space = " " if prefix_space else ""
    return sorted(word for word, count in counts.items()
                  if count >= min_count and len(tokenizer.encode(space + word, add_special_tokens=False)) == 1)


def _embed(encoder: str, words: list[str]) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    from ..zoo import resolve

    model = SentenceTransformer(resolve(encoder), device="cpu")
    return model.encode(words, convert_to_tensor=True, normalize_embeddings=True, batch_size=256).float().cpu()


def correlation_scores(seeds: dict[str, list[str]], candidates: list[str], encoder: str) -> torch.Tensor:
    """[classes, candidates]: the cosine similarity of each candidate to its class's nearest seed word."""
    seed_words = [word for words in seeds.values() for word in words]
    embeddings = _embed(encoder, seed_words + candidates)
    similarity = embeddings[len(seed_words):] @ embeddings[: len(seed_words)].T  # [candidates, seed words]
    owner = torch.tensor([index for index, words in enumerate(seeds.values()) for _ in words])
    return torch.stack([similarity[:, owner == c].max(-1).values for c in range(len(seeds))])


def select(seeds: dict[str, list[str]], candidates: list[str], scores: torch.Tensor, top_k: int, threshold: float,
           keep_seeds: bool = True) -> dict[str, dict[str, float]]:
    """Label -> {word: score}: per class the `top_k` candidates scoring >= `threshold`, each word with one class only.

    A word above the threshold for several classes goes to the class it scores highest for (ties: the
    first class). Seed words come first with score 1.0 (a word's cosine with itself) when `keep_seeds`.
    """
    best = scores.argmax(0)
    chosen: dict[str, dict[str, float]] = {}
    for index, (label, words) in enumerate(seeds.items()):
        row = scores[index].masked_fill(best != index, float("-inf"))
        order = [int(i) for i in row.argsort(descending=True) if float(row[i]) >= threshold]
        kept = {word: 1.0 for word in words} if keep_seeds else {}
        for i in order[:top_k]:
            kept.setdefault(candidates[i], round(float(row[i]), 6))
        chosen[label] = kept
    empty = [label for label, words in chosen.items() if not words]
    if empty:
        raise TaskConfigError(f"Label-word expansion left class {empty[0]!r} without words (none of its candidates reaches "
                              f"similarity {threshold}); lower the threshold, lower min_count, or keep the seed words.")
    return chosen


def expand_label_words(seeds: dict[str, list[str]], texts: Iterable[str], tokenizer: PreTrainedTokenizerBase,
                       cache_dir: str | Path, encoder: str = "minilm-l6", top_k: int = 50, threshold: float = 0.3,
                       min_count: int = 5, keep_seeds: bool = True, prefix_space: bool = True) -> dict[str, dict[str, float]]:
    """Each class's expanded label words with their correlation scores, read from `cache_dir` when computed before.

    The cache key covers the seeds, the candidate vocabulary, the encoder's name and the selection
    settings, so a change to any of them computes anew.
    """
    empty = [label for label, words in seeds.items() if not [word for word in words if str(word).strip()]]
    if empty:
        raise TaskConfigError(f"Class {empty[0]!r} has no seed words to expand; list at least one word for it in label_words.")
    candidates = [word for word in vocabulary(texts, tokenizer, min_count, prefix_space)
                  if word not in {seed for words in seeds.values() for seed in words}]
    key = json.dumps([seeds, candidates, encoder, top_k, threshold, keep_seeds], sort_keys=True)
    path = Path(cache_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    scores = correlation_scores(seeds, candidates, encoder) if candidates else torch.empty(len(seeds), 0)
    chosen = select(seeds, candidates, scores, top_k, threshold, keep_seeds)
    from ..atomic import write_file_atomically

    write_file_atomically(path, lambda target: target.write_text(json.dumps(chosen, indent=1)))
    return chosen
