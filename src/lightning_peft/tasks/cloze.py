"""Cloze classification with several, possibly multi-token, label words per class (PET's verbalizers).

Schick & Schuetze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL; arXiv:2001.07676): a pattern turns the input into a cloze question, a
verbalizer maps each class to words, and the class score is the LM's score of its words in the
answer slot; training is cross-entropy over the class scores. Several words per class and words
of several tokens follow PET's and OpenPrompt's manual verbalizers (as SciPrompt uses them, You et
al. 2024): a word scores the mean log-probability of its tokens, a class the mean over its words.

The slot is the next token after the prompt for a causal LM, and the mask token in the pattern
(e.g. "{text} Topic: [MASK].") for a masked LM. The pattern itself is the data's `template`;
`template_for` turns a PET pattern written with the `{mask}` slot into that template for either LM.
`lm_loss` is PET's auxiliary language-model term on unlabelled text (its section 3.1). `fill_slot`
writes the text PCP continues pre-training on (Shi & Lipani 2023, "Don't Stop Pretraining? Make
Prompt-based Fine-tuning Powerful Learner", NeurIPS): the pattern with a pseudo-label's word in the slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..constants import IGNORE_INDEX
from .base import TaskConfigError, TaskOutput
from .classification import _Classification, left_align

AUTO_CLASSES = {"causal": "AutoModelForCausalLM", "masked": "AutoModelForMaskedLM"}
ANSWER_SLOT = "{mask}"  # where a PET pattern puts the label word
MLM_PROBABILITY = 0.15  # BERT's (and PET's) share of masked tokens for the masked-LM loss


def word_log_probs(token_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each word's score: the mean of its tokens' log-probabilities.

    `token_log_probs`, `mask`: [batch, words, longest word]; `mask` is 1 on a word's own tokens.
    """
    return token_log_probs.masked_fill(mask == 0, 0.0).sum(-1) / mask.sum(-1)


def refuse_unknown_labels(named: Iterable[str], label_names: list[str]) -> None:
    """One sentence for label words given to a class the data does not have (usually a misspelt label)."""
    unknown = sorted(set(named) - set(label_names))
    if unknown:
        raise TaskConfigError(
            f"label_words names labels {unknown} that are not in the data's labels {label_names}; fix the spelling.")


class ClozeClassification(_Classification):
    """Classify by the LM's probability of each class's label words in the answer slot.

    Args:
        label_words: Label name -> one word or a list of words. Labels not listed use their own name.
            A word of several tokens scores the mean log-probability of its tokens (teacher-forced after
            the prompt for a causal LM; one mask per token, predicted together, for a masked LM).
        lm: "causal" (the slot is the next token after the prompt) or "masked" (the slot is the mask token
            the data's template holds, e.g. "{text} It was [MASK]."; loads `AutoModelForMaskedLM`).
        class_score: How a class's words make its score: "mean" of their log-probs, or "logsumexp" (the log
            of the words' summed probability: a class is likely if any of its words is). PET averages the
            logits of a label's (single-token) words (timoschick/pet, `pet/pvp.py`); for single-token words
            "mean" differs from that by one normaliser per input, so it gives the same ranking and loss.
        prefix_space: Prepend a space to each word before tokenizing it (the word follows the prompt).

    With one single-token word per class the ranking is `VerbalizerClassification`'s: log-probs differ
    from logits by the same normaliser for every class, so the loss is the same too.

    Example::

        task = ClozeClassification({"sport": ["sport", "football"], "tech": "technology"})
        # with FewShotClassificationData(template="{text}\\nTopic:", shots_per_class=10)
    """

    def __init__(
        self,
        label_words: dict[str, list[str] | str] | None = None,
        lm: Literal["causal", "masked"] = "causal",
        class_score: Literal["mean", "logsumexp"] = "mean",
        prefix_space: bool = True,
    ) -> None:
        if lm not in AUTO_CLASSES:
            raise TaskConfigError(f"lm={lm!r} is not a kind of language model here; use 'causal' or 'masked'.")
        if class_score not in ("mean", "logsumexp"):
            raise TaskConfigError(f"class_score={class_score!r} is not a reduction here; use 'mean' or 'logsumexp'.")
        self.label_words = {label: [words] if isinstance(words, str) else list(words)
                            for label, words in dict(label_words or {}).items()}
        self.lm, self.class_score, self.prefix_space = lm, class_score, prefix_space
        self.auto_class_name = AUTO_CLASSES[lm]

    def bind(self, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None) -> None:
        super().bind(tokenizer, label_names)
        refuse_unknown_labels(self.label_words, self.label_names)
        empty = [label for label, words in self.label_words.items() if not words]
        if empty:
            raise TaskConfigError(f"label_words gives class {empty[0]!r} no words; list at least one word for it.")
        if self.lm == "masked" and tokenizer.mask_token_id is None:
            raise TaskConfigError("lm='masked' needs a tokenizer with a mask token; use lm='causal' for this backbone.")
        self.words = [self.label_words.get(label, [label]) for label in self.label_names]
        self._tokenize_words(tokenizer)

    def _tokenize_words(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Every word's token ids as `word_ids` [words, longest] (0-padded) with `word_mask`, and `word_class`."""
        ids, owner, seen = [], [], {}
        for index, (label, words) in enumerate(zip(self.label_names, self.words)):
            for word in words:
                tokens = tokenizer.encode((" " if self.prefix_space else "") + str(word), add_special_tokens=False)
                if not str(word).strip() or not tokens:
                    raise TaskConfigError(f"The label word {word!r} of class {label!r} tokenizes to nothing; give a non-empty word.")
                if tuple(tokens) in seen and seen[tuple(tokens)] != label:
                    raise TaskConfigError(f"The label word {word!r} is given to both {seen[tuple(tokens)]!r} and {label!r}; "
                                          "give each word to one class.")
                seen[tuple(tokens)] = label
                ids.append(tokens)
                owner.append(index)
        longest = max(len(tokens) for tokens in ids)
        self.word_ids = torch.tensor([tokens + [0] * (longest - len(tokens)) for tokens in ids])
        self.word_mask = torch.tensor([[1] * len(tokens) + [0] * (longest - len(tokens)) for tokens in ids])
        self.word_class = torch.tensor(owner)

    def template_for(self, pattern: str) -> str:
        """The data template of a PET pattern whose answer slot is written `{mask}` (after `bind`).

        A causal LM answers with the next token, so its slot must end the pattern and is cut off
        ("{text} Topic: {mask}" -> "{text} Topic:"); for a masked LM it becomes the mask token.
        """
        if not isinstance(pattern, str) or pattern.count(ANSWER_SLOT) != 1:
            count = pattern.count(ANSWER_SLOT) if isinstance(pattern, str) else 0
            raise TaskConfigError(f"The pattern {pattern!r} has {count} answer slots; write {ANSWER_SLOT} exactly once where "
                                  "the label word goes (e.g. '{text} Topic: {mask}').")
        if self.lm == "masked":
            return pattern.replace(ANSWER_SLOT, self.tokenizer.mask_token.replace("{", "{{").replace("}", "}}"))
        head = pattern.rstrip()
        if not head.endswith(ANSWER_SLOT):
            raise TaskConfigError(f"The pattern {pattern!r} puts {ANSWER_SLOT} before its end, but a causal LM answers with "
                                  f"the next token; end the pattern with {ANSWER_SLOT} (e.g. '{{text}} Topic: {ANSWER_SLOT}').")
        head = head[: -len(ANSWER_SLOT)]
        return head.rstrip(" ") if self.prefix_space else head  # the words carry their own leading space

    def fill_slot(self, input_ids: list[int], label: int) -> list[int]:
        """An input's token ids with the answer slot filled by class `label`'s first label word (after `bind`).

        PCP's continued pre-training text (Shi & Lipani 2023): the pattern-wrapped input with the
        (pseudo-)label word in the slot. For a causal LM the word's tokens follow the prompt, which is
        the very sequence `scores` rates; for a masked LM they replace the input's one mask token.
        """
        first = int((self.word_class == label).nonzero()[0])
        word = self.word_ids[first][self.word_mask[first].bool()].tolist()
        if self.lm == "causal":
            return [*input_ids, *word]
        mask_id = self.tokenizer.mask_token_id
        if input_ids.count(mask_id) != 1:
            raise TaskConfigError(
                f"lm='masked' fills the one {self.tokenizer.mask_token} of each input, but an input has "
                f"{input_ids.count(mask_id)}; put it once in the data's template, e.g. '{{text}} It was {self.tokenizer.mask_token}.'")
        at = input_ids.index(mask_id)
        return [*input_ids[:at], *word, *input_ids[at + 1:]]

    def lm_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """PET's auxiliary language-model loss on an unlabelled batch (`input_ids`, `attention_mask`).

        A causal LM: the next-token loss over the text. A masked LM: the MLM loss with 15% of the tokens
        chosen (80% of them replaced by the mask token, 10% by a random token, 10% kept: transformers'
        `DataCollatorForLanguageModeling`, as PET does), padding and special tokens never chosen. A draw
        that chooses no token (short texts, small batches) has nothing to predict: its loss is 0 with a
        zero gradient, still on the model's graph (transformers' mean over no tokens would be NaN, and
        NaN would reach the logs; PCP's pre-training backpropagates this loss alone).
        """
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if self.lm == "causal":
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        else:
            from transformers import DataCollatorForLanguageModeling

            special = (attention_mask == 0) | torch.isin(input_ids, torch.tensor(self.tokenizer.all_special_ids,
                                                                                  device=input_ids.device))
            masking = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=MLM_PROBABILITY)
            input_ids, labels = masking.torch_mask_tokens(input_ids.clone().cpu(), special_tokens_mask=special.cpu())
            input_ids, labels = input_ids.to(attention_mask.device), labels.to(attention_mask.device)
            if labels.eq(IGNORE_INDEX).all():
                return model(input_ids=input_ids, attention_mask=attention_mask).logits.sum() * 0.0
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

    def verbalizer_words(self) -> dict[str, str]:
        """Each label's first word (what single-word consumers such as the robustness probe score)."""
        return {label: words[0] for label, words in zip(self.label_names, self.words)}

    def scores(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class scores [B, classes]: `class_score` over each class's words of the mean log-prob of their tokens."""
        ids, mask = self.word_ids.to(input_ids.device), self.word_mask.to(input_ids.device)
        if self.lm == "causal":
            token_log_probs = self._causal_token_log_probs(model, input_ids, attention_mask, ids, mask)
        else:
            token_log_probs = self._masked_token_log_probs(model, input_ids, attention_mask, ids, mask)
        per_word = word_log_probs(token_log_probs, mask)  # [B, words]
        return torch.stack([self._reduce(per_word[:, self.word_class.to(per_word.device) == c])
                            for c in range(len(self.label_names))], dim=-1)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """Cross-entropy over the class scores (PET's L_CE)."""
        return self._output(self.scores(model, batch["input_ids"], batch["attention_mask"]), batch["labels"])

    def _reduce(self, word_scores: torch.Tensor) -> torch.Tensor:
        if self.class_score == "mean":
            return word_scores.mean(-1)
        return word_scores.logsumexp(-1)

    def _causal_token_log_probs(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, words, longest]: log p(token_j | prompt, tokens_<j), teacher-forced.

        One pass over the prompts scores every word's first token at the last position; words of
        several tokens get a second pass over (prompt + their tokens but the last), one row per
        prompt and such word (single-token words need none: a verbalizer of many words stays cheap),
        whose last positions predict their remaining tokens.
        """
        input_ids, attention_mask = left_align(input_ids, attention_mask)
        batch, words, longest = input_ids.shape[0], ids.shape[0], ids.shape[1]
        first = model(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=(attention_mask.cumsum(1) - 1).clamp(min=0), logits_to_keep=1).logits[:, -1]
        out = torch.zeros(batch, words, longest, dtype=torch.float32, device=input_ids.device)
        out[:, :, 0] = first.float().log_softmax(-1)[:, ids[:, 0]]
        several = mask[:, 1:].any(1).nonzero().squeeze(-1)  # the words of more than one token
        if several.numel() == 0:
            return out
        ids, mask, words = ids[several], mask[several], len(several)
        # rows = (prompt, word); continuation = the word's tokens but its last, right-padded
        rows_ids = torch.cat([input_ids.repeat_interleave(words, 0), ids[:, :-1].repeat(batch, 1)], dim=1)
        rows_mask = torch.cat([attention_mask.repeat_interleave(words, 0), mask[:, 1:].repeat(batch, 1)], dim=1)
        logits = model(input_ids=rows_ids, attention_mask=rows_mask,
                       position_ids=(rows_mask.cumsum(1) - 1).clamp(min=0), logits_to_keep=longest - 1).logits
        following = logits.float().log_softmax(-1).gather(-1, ids[:, 1:].repeat(batch, 1).unsqueeze(-1)).squeeze(-1)
        out[:, several, 1:] = following.view(batch, words, longest - 1)
        return out

    def _masked_token_log_probs(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, words, longest]: log p(token_j) at the j-th of n mask tokens, for a pattern widened to n masks.

        Each input must hold exactly one mask token; a word of n tokens is scored on the input with
        that mask repeated n times, all its tokens predicted in one pass (not PET's one-at-a-time
        decoding of several masks).
        """
        mask_id = self.tokenizer.mask_token_id
        counts = (input_ids.eq(mask_id) & attention_mask.bool()).sum(1)
        if not bool(counts.eq(1).all()):
            raise TaskConfigError(
                f"lm='masked' needs exactly one {self.tokenizer.mask_token} in each input, but an input has "
                f"{int(counts[counts.ne(1)][0])}; put it once in the data's template, e.g. '{{text}} It was {self.tokenizer.mask_token}.'")
        batch, words, longest = input_ids.shape[0], ids.shape[0], ids.shape[1]
        out = torch.zeros(batch, words, longest, dtype=torch.float32, device=input_ids.device)
        lengths = mask.sum(1)
        for n in sorted(set(lengths.tolist())):
            widened, widened_mask, slots = _widen_mask(input_ids, attention_mask, mask_id, n)
            logits = model(input_ids=widened, attention_mask=widened_mask).logits
            at_slots = logits.gather(1, slots.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float().log_softmax(-1)
            chosen = lengths.eq(n)  # the words of n tokens
            picked = at_slots.gather(-1, ids[chosen, :n].T.unsqueeze(0).expand(batch, -1, -1))  # [B, n, words_n]
            out[:, chosen, :n] = picked.transpose(1, 2)
        return out


def _widen_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_id: int,
                n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded inputs with each row's one mask token repeated `n` times, and the [B, n] positions of those masks."""
    if n == 1:
        return input_ids, attention_mask, input_ids.eq(mask_id).long().argmax(1, keepdim=True)
    at = input_ids.eq(mask_id).long().argmax(1)  # the first mask of each row (each has one)
    extra = torch.full((input_ids.shape[0], n - 1), mask_id, dtype=input_ids.dtype, device=input_ids.device)
    rows, masks = [], []
    for row in range(input_ids.shape[0]):
        cut = int(at[row]) + 1
        rows.append(torch.cat([input_ids[row, :cut], extra[row], input_ids[row, cut:]]))
        masks.append(torch.cat([attention_mask[row, :cut], torch.ones_like(extra[row]).to(attention_mask.dtype),
                                attention_mask[row, cut:]]))
    slots = at.unsqueeze(1) + torch.arange(n, device=input_ids.device).unsqueeze(0)
    return torch.stack(rows), torch.stack(masks), slots
