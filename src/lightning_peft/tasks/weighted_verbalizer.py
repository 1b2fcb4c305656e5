"""SciPrompt's weighted verbalizer: many label words per class, each weighted by a trainable score.

You et al. 2024, "SciPrompt: Knowledge-augmented Prompting for Fine-grained Categorization of
Scientific Topics" (EMNLP; arXiv:2410.01946; repo zhiwenyou103/SciPrompt, `WeightedVerbalizer`).
Every label word w gets log p(w): a softmax over all label words' scores at the answer slot (a
word's score is the mean log-prob of its tokens, as in `ClozeClassification`). Optionally the
probabilities are calibrated: divided by each word's prior on a support set, after dropping the
bottom half of each class's words by prior (KPT's contextual calibration, Hu et al. 2022). A class
scores the weighted sum

    score(c) = sum_{w in c} softmax_c(s)_w * log p(w)

with the weights s trainable, initialised from the words' correlation scores. The soft variant
scores the classes with a linear head on the slot's hidden state instead, each class's row initialised
as the score-weighted mean of its words' LM-head rows (the reference's `SoftVerbalizer`).

The weights (or the soft head) are submodules of the loaded model (`VERBALIZER_NAME`, `SOFT_HEAD_NAME`),
declared in `head_modules`: every method trains them in full and every checkpoint keeps them.
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .base import TaskConfigError
from .classification import left_align
from .cloze import ClozeClassification, refuse_unknown_labels, word_log_probs
from .label_word_expansion import expand_label_words

TRAINING_SPLIT = "train"  # expand_from: the training split of the data the module trains on
VERBALIZER_NAME = "weighted_verbalizer"  # the LM's submodule holding the word weights s
SOFT_HEAD_NAME = "soft_verbalizer_head"  # the LM's submodule holding the soft variant's head


class WordWeights(nn.Module):
    """The trainable weights s [words]; `forward` turns word log-probs into class scores.

    score(c) = sum_{w in c, kept} softmax_c(s)_w * log p(w)   (the softmax runs over the class's kept words)
    """

    def __init__(self, scores: torch.Tensor, word_class: torch.Tensor, classes: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(scores.float().clone())
        self.register_buffer("word_class", word_class.clone(), persistent=False)
        self.classes = classes

    def forward(self, log_probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(self.word_class, self.classes).T.bool() & keep.unsqueeze(0)  # [classes, words]
        weights = self.weights.unsqueeze(0).masked_fill(~one_hot, float("-inf")).softmax(-1)
        return log_probs.masked_fill(~keep, 0.0) @ weights.T.to(log_probs.dtype)


class _LMWithVerbalizer:
    """What `auto_class()` returns: the task's LM auto class, with the word weights (or the soft head) attached."""

    def __init__(self, task: WeightedVerbalizerClassification) -> None:
        self.task = task

    def from_pretrained(self, path: str, **kwargs) -> nn.Module:
        import transformers

        task = self.task
        if task.awaits_expansion:
            raise TaskConfigError(f"The label words are to be expanded from {task.expand_from!r} first: call "
                                  "task.expand(texts) with its texts (WeightedVerbalizerModule does), or pass word_scores.")
        model = getattr(transformers, task.auto_class_name).from_pretrained(path, **kwargs)
        if not task.soft:
            model.add_module(VERBALIZER_NAME, WordWeights(task.word_scores, task.word_class, len(task.label_names)))
            return model
        rows = soft_head_rows(model.get_output_embeddings().weight.detach(), task.word_ids, task.word_mask,
                              task.word_scores, task.word_class, len(task.label_names))
        head = nn.Linear(rows.shape[1], rows.shape[0], bias=False, dtype=rows.dtype)
        head.weight.data.copy_(rows)
        model.add_module(SOFT_HEAD_NAME, head)
        return model


def soft_head_rows(lm_head: torch.Tensor, word_ids: torch.Tensor, word_mask: torch.Tensor, scores: torch.Tensor,
                   word_class: torch.Tensor, classes: int) -> torch.Tensor:
    """[classes, hidden]: the soft head's initial rows, row_c = (1/|c|) sum_{w in c} s_w * mean_{t in w} E_t.

    E is the LM head's weight (one row per token); a word of several tokens takes the mean of its rows.
    """
    mask = word_mask.unsqueeze(-1).to(lm_head.dtype)
    words = (lm_head[word_ids] * mask).sum(1) / mask.sum(1)  # [words, hidden]
    weighted = words * scores.to(lm_head.dtype).unsqueeze(-1)
    return torch.stack([weighted[word_class == c].mean(0) for c in range(classes)])


class WeightedVerbalizerClassification(ClozeClassification):
    """Classify by a score-weighted sum of many label words' log-probs (SciPrompt), optionally expanded and calibrated.

    Args:
        label_words: Label -> seed words (one or a list); every label needs at least one.
        word_scores: Label -> {word: correlation score} to use as given (e.g. a JSON that `expand_label_words`
            wrote); replaces `label_words` and the expansion.
        expand_from: Texts to expand the seed words from, read by `WeightedVerbalizerModule` and handed to
            `expand` (labels unused). "train": the training split of the data the module trains on, labelled and
            unlabelled examples, never validation or test. A catalog dataset name or a local data file: all of its
            records' `text` column, every split included (a corpus other than the task's). None: the seed words
            alone, each with score 1. A checkpoint records the expanded words as `word_scores`, so rebuilding the
            module from it reads no texts.
        expansion: Settings of `expand_label_words` (encoder, top_k, threshold, min_count, keep_seeds).
        cache_dir: Where expansions are cached (default: the lightning-peft cache folder).
        calibrate: Contextual calibration: divide each word's probability by its prior on a support set and
            drop the bottom half of each class's words by prior (the module computes the prior from the
            data's unlabelled pool; `set_prior`).
        soft: Score the classes with a trainable linear head on the slot's hidden state, class c's row starting at
            (1/|c|) sum_{w in c} s_w * (w's LM-head row; the mean of its tokens' rows) (causal LMs; `soft_head_rows`).
        lm, prefix_space: As in `ClozeClassification`.
    """

    def __init__(
        self,
        label_words: dict[str, list[str] | str] | None = None,
        word_scores: dict[str, dict[str, float]] | None = None,
        expand_from: str | None = None,
        expansion: dict | None = None,
        cache_dir: str | None = None,
        calibrate: bool = False,
        soft: bool = False,
        lm: Literal["causal", "masked"] = "causal",
        prefix_space: bool = True,
    ) -> None:
        super().__init__(label_words, lm=lm, prefix_space=prefix_space)
        if soft and lm != "causal":
            raise TaskConfigError("soft=True reads the hidden state before a causal LM's head; use lm='causal' or soft: false.")
        if soft and calibrate:
            raise TaskConfigError("calibrate=True divides label-word probabilities, which soft=True does not use; set one of them false.")
        unknown = sorted(set(expansion or {}) - {"encoder", "top_k", "threshold", "min_count", "keep_seeds"})
        if unknown:
            raise TaskConfigError(f"expansion has unknown settings {unknown}; use encoder, top_k, threshold, min_count, keep_seeds.")
        self.seeds = dict(self.label_words)  # the constructor's words; `bind` replaces label_words with the scored ones
        self.given_scores = {label: dict(words) for label, words in (word_scores or {}).items()}
        self.expand_from, self.expansion, self.cache_dir = expand_from, dict(expansion or {}), cache_dir
        self.calibrate, self.soft = calibrate, soft
        self.log_prior: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None

    def auto_class(self):
        return _LMWithVerbalizer(self)

    def head_modules(self, model: nn.Module) -> list[str]:
        return [SOFT_HEAD_NAME if self.soft else VERBALIZER_NAME]

    def bind(self, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None) -> None:
        """Check and tokenize the seed words (or the given `word_scores`); the expansion waits for `expand`."""
        names = list(label_names or [])
        refuse_unknown_labels(self.given_scores or self.seeds, names)
        seeds = {label: self.seeds.get(label, [label]) for label in names}
        empty = [label for label, words in seeds.items() if not [word for word in words if str(word).strip()]]
        if empty and not self.given_scores:
            raise TaskConfigError(f"Class {empty[0]!r} has no seed words; list at least one word for it in label_words.")
        self.expanded = bool(self.given_scores) or self.expand_from is None
        self._bind_words(tokenizer, label_names, self.given_scores or {label: {word: 1.0 for word in words}
                                                                       for label, words in seeds.items()})

    @property
    def awaits_expansion(self) -> bool:
        """True until `expand` has run, where `expand_from` names texts to expand the seed words from."""
        return not self.expanded

    def expand(self, texts: list[str]) -> None:
        """Expand the seed words from `texts`, the `text` column of `expand_from` (cached; see `expand_label_words`).

        The caller reads `expand_from` (`WeightedVerbalizerModule` does, when it builds the model), so a
        parsed-but-not-run config pays neither for the sentence encoder nor for reading the dataset.
        """
        if self.expanded:
            return
        from ..zoo import cache_root

        seeds = {label: self.seeds.get(label, [label]) for label in self.label_names}
        cache = self.cache_dir or cache_root() / "label_words"
        scored = expand_label_words(seeds, texts, self.tokenizer, cache, prefix_space=self.prefix_space, **self.expansion)
        self._bind_words(self.tokenizer, self.label_names, scored)
        self.expanded = True

    def _bind_words(self, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None,
                    scored: dict[str, dict[str, float]]) -> None:
        self.label_words = {label: list(words) for label, words in scored.items()}
        super().bind(tokenizer, label_names)
        self.word_scores = torch.tensor([float(scored.get(label, {label: 1.0})[word])
                                         for label, words in zip(self.label_names, self.words) for word in words])
        self.keep, self.log_prior = torch.ones(len(self.word_scores), dtype=torch.bool), None

    # -- calibration ------------------------------------------------------------------------

    def set_prior(self, prior: torch.Tensor) -> None:
        """Calibrate with each word's prior probability [words]: keep each class's top half by prior, divide by it."""
        keep = torch.zeros(len(prior), dtype=torch.bool)
        for c in range(len(self.label_names)):
            members = (self.word_class == c).nonzero().squeeze(-1)
            top = prior[members].argsort(descending=True)[: (len(members) + 1) // 2]
            keep[members[top]] = True
        self.log_prior, self.keep = prior.clamp(min=1e-12).log().float(), keep

    @torch.no_grad()
    def word_prior(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Each label word's mean probability (softmax over all label words) over the support inputs `batches`."""
        total, count = 0.0, 0
        device = next(model.parameters()).device
        for batch in batches:
            probs = self.word_log_probs(model, batch["input_ids"].to(device), batch["attention_mask"].to(device)).exp()
            total, count = total + probs.sum(0), count + probs.shape[0]
        if count == 0:
            raise TaskConfigError("calibrate=True needs a support set of inputs, but it is empty; give the data unlabelled examples.")
        return (total / count).cpu()

    # -- scoring ----------------------------------------------------------------------------

    def word_log_probs(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, words]: log p(w), a log-softmax over the (kept) label words' slot scores, calibrated when a prior is set."""
        ids, mask = self.word_ids.to(input_ids.device), self.word_mask.to(input_ids.device)
        token = self._causal_token_log_probs if self.lm == "causal" else self._masked_token_log_probs
        scores = word_log_probs(token(model, input_ids, attention_mask, ids, mask), mask)
        if keep is None:
            return scores.log_softmax(-1)
        scores = scores.masked_fill(~keep, float("-inf")).log_softmax(-1)
        if self.log_prior is not None:  # p(w) / prior(w), renormalised over the kept words
            scores = (scores - self.log_prior.to(scores.device)).masked_fill(~keep, float("-inf")).log_softmax(-1)
        return scores.masked_fill(~keep, 0.0)

    def _soft_scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The soft head's class logits on the hidden state that the LM head reads at the slot."""
        captured: list[torch.Tensor] = []
        hook = model.get_output_embeddings().register_forward_hook(lambda module, args, out: captured.append(args[0]))
        try:
            input_ids, attention_mask = left_align(input_ids, attention_mask)
            model(input_ids=input_ids, attention_mask=attention_mask,
                  position_ids=(attention_mask.cumsum(1) - 1).clamp(min=0), logits_to_keep=1)
        finally:
            hook.remove()
        return getattr(model, SOFT_HEAD_NAME)(captured[-1][:, -1]).float()

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class scores [B, classes]: sum over each class's kept words of softmax_c(s)_w * log p(w) (soft: the head's logits)."""
        if self.soft:
            return self._soft_scores(model, input_ids, attention_mask)
        keep = self.keep.to(input_ids.device)
        log_probs = self.word_log_probs(model, input_ids, attention_mask, keep)
        return getattr(model, VERBALIZER_NAME)(log_probs, keep)

    def expanded_words(self) -> dict[str, dict[str, float]]:
        """Label -> {word: correlation score} as bound (after expansion), e.g. to write next to a run."""
        return {label: {word: float(score) for word, score in zip(words, self.word_scores[self.word_class == c].tolist())}
                for c, (label, words) in enumerate(zip(self.label_names, self.words))}

