"""Seeded synthetic errors for rewriting data: typos, dropped words and swapped neighbours.

The sources of the edit-span task (Kaneko & Okazaki 2023, "Reducing Sequence Length by Predicting
Edit Operations with Large Language Models", https://arxiv.org/abs/2305.11862; see `data/edits.py`)
are clean sentences with these errors added, the targets the clean sentences. How the noise is
made, exactly (each sentence gets its own `random.Random(f"{seed}:{index}")`, so a sentence's
noise depends only on the seed and its position, never on the other sentences):

1. The sentence is split into whitespace words. Left to right, each word is, with probability
   `drop` dropped (never the last remaining word); else with probability `swap` exchanged with the
   next word (which then is not touched again); else, if it has at least 3 characters, with
   probability `typo` given one typo.
2. A typo is one of four, equally likely, at a position drawn uniformly from all but the last character: delete a character,
   duplicate it, swap it with the next character, or replace it with a random lowercase letter.
3. The clean sentence is the target whether or not any error was drawn (a sentence without noise
   teaches the model to leave correct text alone).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    """Per-word error rates (see the module docstring for the procedure)."""

    typo: float = 0.08
    drop: float = 0.04
    swap: float = 0.04

    def __post_init__(self) -> None:
        for name, value in (("typo", self.typo), ("drop", self.drop), ("swap", self.swap)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"The {name} rate must be a probability in [0, 1], got {value!r}.")

    def __call__(self, sentence: str, seed: int, index: int) -> str:
        """`sentence` with errors drawn from `random.Random(f"{seed}:{index}")`."""
        rng = random.Random(f"{seed}:{index}")
        tokens = sentence.split()
        out: list[str] = []
        k = 0
        while k < len(tokens):
            word = tokens[k]
            remaining = len(out) + len(tokens) - k - 1
            draw = rng.random()
            if draw < self.drop and remaining > 0:
                k += 1
            elif draw < self.drop + self.swap and k + 1 < len(tokens):
                out += [tokens[k + 1], word]
                k += 2
            else:
                out.append(typo(word, rng) if len(word) >= 3 and rng.random() < self.typo else word)
                k += 1
        return " ".join(out)


def typo(word: str, rng: random.Random) -> str:
    """One character-level error in `word`: delete, duplicate, swap with the next, or replace a character."""
    position = rng.randrange(len(word) - 1)  # the last character is never the one swapped forward
    kind = rng.randrange(4)
    if kind == 0:
        return word[:position] + word[position + 1:]
    if kind == 1:
        return word[:position + 1] + word[position:]
    if kind == 2:
        return word[:position] + word[position + 1] + word[position] + word[position + 2:]
    return word[:position] + rng.choice(string.ascii_lowercase) + word[position + 1:]
