"""Rewards parsed from a generated answer, for PPO on classification and regression data.

The seed paper ("Improving the Language Understanding Capabilities of Large Language Models Using
Reinforcement Learning", coder-qicao/RL4GLUE) scores each generated answer against the gold label:
+1 when it names the right class, -1 when it names another class, -3 when no class can be read
from it; for a regression task (STS-B) 2.5 - |prediction - gold|, and -3 when no number can be read.

Any callable with `RewardFunction`'s signature can replace them (`model.init_args.reward` in a recipe).
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence, runtime_checkable

_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


@runtime_checkable
class RewardFunction(Protocol):
    """Scores generated answers.

    Args (of the call):
        answers: The generated text of each rollout (the new tokens alone, special tokens removed).
        golds: The gold answer of each rollout, as text (the label's word; for regression, the number).
        choices: Every answer word the task knows, in label order (empty for regression).

    Returns one float per answer.
    """

    def __call__(self, answers: Sequence[str], golds: Sequence[str], choices: Sequence[str]) -> list[float]: ...


def parse_choice(answer: str, choices: Sequence[str]) -> str | None:
    """The first of `choices` the answer names as a whole word (case-insensitive), or None.

    Our choice: the paper's prompts end with "Answer:" and read the first answer word; a small model
    often starts with a filler ("The answer is location"), so the first word that is a choice counts.
    """
    known = {choice.lower(): choice for choice in choices}
    for word in _WORD.findall(answer.lower()):
        if word in known:
            return known[word]
    return None


def parse_number(answer: str) -> float | None:
    """The first number in the answer, or None."""
    found = _NUMBER.search(answer)
    return float(found.group()) if found else None


class LabelReward:
    """The paper's classification reward: `correct` when the answer names the gold class, `wrong` when it names
    another, `unparsable` when it names none.

    Args:
        correct: Reward for the gold class (paper: +1).
        wrong: Reward for another class (paper: -1).
        unparsable: Reward when no class can be read (paper: -3).
    """

    def __init__(self, correct: float = 1.0, wrong: float = -1.0, unparsable: float = -3.0) -> None:
        self.correct, self.wrong, self.unparsable = correct, wrong, unparsable

    def __call__(self, answers: Sequence[str], golds: Sequence[str], choices: Sequence[str]) -> list[float]:
        scores = []
        for answer, gold in zip(answers, golds):
            named = parse_choice(answer, choices)
            scores.append(self.unparsable if named is None else self.correct if named.lower() == gold.lower() else self.wrong)
        return scores


class RegressionReward:
    """The paper's regression reward (STS-B): `offset - |prediction - gold|`, `unparsable` without a number.

    Args:
        offset: The reward of an exact prediction (paper: 2.5, half of STS-B's 0-5 range).
        unparsable: Reward when the answer holds no number (paper: -3).
    """

    def __init__(self, offset: float = 2.5, unparsable: float = -3.0) -> None:
        self.offset, self.unparsable = offset, unparsable

    def __call__(self, answers: Sequence[str], golds: Sequence[str], choices: Sequence[str]) -> list[float]:
        scores = []
        for answer, gold in zip(answers, golds):
            predicted = parse_number(answer)
            scores.append(self.unparsable if predicted is None else self.offset - abs(predicted - float(gold)))
        return scores
