"""Conjugate prompting and the ICL-versus-instruction-following suite.

Kotha, Springer, Raghunathan, "Understanding Catastrophic Forgetting in Language Models via
Implicit Inference", ICLR 2024 (arXiv:2309.10105, github.com/kothasuhas/understanding-forgetting).
Fine-tuning skews a model's implicit task inference toward the fine-tuning distribution. A
conjugate prompt transforms the input (leetspeak, Pig Latin, another language) so the task stays
the same but the prompt looks unlike fine-tuning data; the output is mapped back by the inverse.

The suite: an in-context task ("Repeat the input." / "Capitalize every character.") shown by 2
demonstrations, then a query that is itself an instruction ("what is 7 plus 12?"). A model that
follows the context repeats or capitalizes the query; one skewed toward instruction following
answers it. Greedy decoding of 10 new tokens.
"""

from __future__ import annotations

import codecs
import random
import re
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .probes import keep_last


@runtime_checkable
class PromptTransform(Protocol):
    """A prompt-side transform and its output-side inverse (`inverse(forward(x)) == x` on its domain)."""

    name: str

    def forward(self, text: str) -> str: ...

    def inverse(self, text: str) -> str: ...


class Identity:
    name = "original"

    def forward(self, text: str) -> str:
        return text

    def inverse(self, text: str) -> str:
        return text


class Leetspeak:
    """a->4 e->3 i->1 o->0 s->5 t->7 (either case). Round-trips on lowercase text without those digits."""

    name = "leetspeak"
    _to = str.maketrans("aeiostAEIOST", "431057431057")
    _back = str.maketrans("431057", "aeiost")

    def forward(self, text: str) -> str:
        return text.translate(self._to)

    def inverse(self, text: str) -> str:
        return text.translate(self._back)


class PigLatin:
    """Each word's leading consonants move behind a hyphen plus "ay": "hello" -> "ello-hay", "apple" -> "apple-ay".

    The hyphen makes it invertible (classic Pig Latin is not: "ellohay" could be "hello" or "lloheay");
    round-trips on text without hyphens.
    """

    name = "pig_latin"
    _word = re.compile(r"[A-Za-z]+")
    _pig = re.compile(r"([A-Za-z]*)-([A-Za-z]*?)ay\b")

    def forward(self, text: str) -> str:
        def pig(match: re.Match) -> str:
            word = match.group(0)
            cut = next((i for i, c in enumerate(word) if c.lower() in "aeiou"), len(word))
            return f"{word[cut:]}-{word[:cut]}ay"

        return self._word.sub(pig, text)

    def inverse(self, text: str) -> str:
        return self._pig.sub(lambda m: m.group(2) + m.group(1), text)


class Rot13:
    name = "rot13"

    def forward(self, text: str) -> str:
        return codecs.encode(text, "rot13")

    def inverse(self, text: str) -> str:
        return codecs.decode(text, "rot13")


class Translation:
    """Translation through a user-supplied word table (inverted for the output side) or two callables.

    Example::

        Translation("es", table={"repeat": "repite", "the": "la", "input": "entrada"})
        Translation("fr", forward=my_translate_to_fr, inverse=my_translate_from_fr)
    """

    _token = re.compile(r"(?:[^\W\d_]|')+")  # letters of any script: "Tür", "canción" are one word

    def __init__(self, name: str, table: dict[str, str] | None = None,
                 forward: Callable[[str], str] | None = None, inverse: Callable[[str], str] | None = None) -> None:
        if (table is None) == (forward is None or inverse is None):
            raise ValueError("Translation needs either a word table or both forward and inverse callables.")
        self.name = name
        if table is not None:
            back = {v.lower(): k for k, v in table.items()}
            if len(back) != len(table):
                raise ValueError(f"Translation table {name!r} maps two words to one, so it cannot be inverted.")
            forward, inverse = self._by_table({k.lower(): v for k, v in table.items()}), self._by_table(back)
        self._forward, self._inverse = forward, inverse

    @classmethod
    def _by_table(cls, table: dict[str, str]) -> Callable[[str], str]:
        def swap(match: re.Match) -> str:
            word = match.group(0)
            out = table.get(word.lower(), word)
            return out.upper() if word.isupper() and len(word) > 1 else out

        return lambda text: cls._token.sub(swap, text)

    def forward(self, text: str) -> str:
        return self._forward(text)

    def inverse(self, text: str) -> str:
        return self._inverse(text)


def _german() -> PromptTransform:
    from .translate import DictionaryTranslation  # on use: translate.py builds on this module

    return DictionaryTranslation("german")


TRANSFORMS: dict[str, Callable[[], PromptTransform]] = {
    "original": Identity, "leetspeak": Leetspeak, "pig_latin": PigLatin, "rot13": Rot13, "german": _german,
}


def get_transform(name: str) -> PromptTransform:
    if name not in TRANSFORMS:
        raise ValueError(f"Unknown transform {name!r}; pick from {', '.join(TRANSFORMS)} or pass a Translation.")
    return TRANSFORMS[name]()


# -- the ICL-versus-instruction suite -------------------------------------------------------

ICL_TASKS = {"repeat": ("Repeat the input.", str), "capitalize": ("Capitalize every character.", str.upper)}
DEMO_INPUTS = (
    "the cat sat on the mat", "we went to the market", "my brother plays the piano", "the river runs to the sea",
    "she reads a book every night", "birds fly south in winter", "the door was left open", "he paints old houses",
)
NUMBER_WORDS = ("plus", "minus", "times")


@dataclass(frozen=True)
class IclPrompt:
    """One suite item: the in-context task, its demonstrations, the instruction query and the ICL answer."""

    task: str
    demos: tuple[str, str]
    query: str

    @property
    def answer(self) -> str:
        return ICL_TASKS[self.task][1](self.query)

    def render(self, transform: PromptTransform) -> str:
        instruction, apply = ICL_TASKS[self.task]
        lines = [instruction] + [f"Input: {d}\nOutput: {apply(d)}" for d in self.demos] + [f"Input: {self.query}\nOutput:"]
        return transform.forward("\n".join(lines))


def icl_suite(num_prompts: int = 20, seed: int = 0) -> list[IclPrompt]:
    """Deterministic suite: tasks alternate, demonstrations and arithmetic queries are seeded draws."""
    rng = random.Random(seed)
    prompts = []
    for i in range(num_prompts):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        demos = tuple(rng.sample(DEMO_INPUTS, 2))
        prompts.append(IclPrompt(list(ICL_TASKS)[i % len(ICL_TASKS)], demos, f"what is {a} {rng.choice(NUMBER_WORDS)} {b}?"))
    return prompts


def is_in_context_answer(output: str, prompt: IclPrompt, transform: PromptTransform, words: int = 2) -> bool:
    """True when the inverse-transformed output starts with the in-context answer's first `words` words.

    Only the first words are compared because 10 new tokens rarely cover a whole transformed
    answer; they already separate repeating/capitalizing ("WHAT IS") from answering ("19").
    The expected answer goes through forward and inverse too, so lossy transforms compare alike.
    """
    first_line = output.strip().split("\n", 1)[0]
    got = transform.inverse(first_line).split()[:words]
    expected = transform.inverse(transform.forward(prompt.answer)).split()[:words]
    return bool(got) and got == expected


@torch.no_grad()
def greedy_outputs(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                   max_new_tokens: int = 10, batch_size: int = 8, max_tokens: int | None = None) -> list[str]:
    """Greedy continuations (new text only), batched with left padding; prompts longer than the model's
    input limit `max_tokens` keep their last `max_tokens` tokens."""
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(prompts), batch_size):
        rows = [keep_last(tokenizer.encode(p), max_tokens) for p in prompts[start: start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        outputs += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
    return outputs


def icl_accuracy(model: nn.Module, tokenizer: PreTrainedTokenizerBase, suite: list[IclPrompt],
                 transforms: list[PromptTransform], max_new_tokens: int = 10,
                 max_tokens: int | None = None) -> dict[str, float]:
    """Share of suite prompts answered in context, per transform name (`max_tokens`: the model's input limit)."""
    result = {}
    for transform in transforms:
        prompts = [p.render(transform) for p in suite]
        outputs = greedy_outputs(model, tokenizer, prompts, max_new_tokens, max_tokens=max_tokens)
        result[transform.name] = sum(is_in_context_answer(o, p, transform) for o, p in zip(outputs, suite)) / len(suite)
    return result


def conjugate_report(base: dict[str, float], tuned: dict[str, float], original: str = "original") -> dict[str, float]:
    """Per transform: drop from base to fine-tuned, and the share of the original prompt's drop recovered.

    recovered[T] = (tuned[T] - tuned[original]) / (base[original] - tuned[original]); reported only
    when the original prompt lost accuracy (otherwise there is nothing to recover).
    """
    report, drop = {}, base[original] - tuned[original]
    for name in tuned:
        report[f"{name}/base"], report[f"{name}/tuned"] = base[name], tuned[name]
        report[f"{name}/drop"] = base[name] - tuned[name]
        if name != original and drop > 0:
            report[f"{name}/recovered"] = (tuned[name] - tuned[original]) / drop
    return report
