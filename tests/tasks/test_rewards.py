"""The paper's rewards parsed from generated answers: +1 / -1 / -3, and 2.5 - |prediction - gold| for regression."""

from __future__ import annotations

import pytest

from lightning_peft.tasks.rewards import LabelReward, RegressionReward, RewardFunction

CHOICES = ["abbreviation", "description", "entity", "person", "location", "number"]


@pytest.mark.parametrize(("answer", "expected"), [
    (" location", 1.0),                      # correct
    (" Location.\nQuestion:", 1.0),          # case and punctuation do not matter
    (" The answer is location", 1.0),        # the first word that names a class counts
    (" number", -1.0),                       # wrong class
    (" person or location", -1.0),           # the first class named is the answer
    (" a place", -3.0),                      # no class named: unparsable
    ("", -3.0),
    (" locations", -3.0),                    # whole words only
])
def test_label_reward(answer, expected):
    assert LabelReward()([answer], ["location"], CHOICES) == [expected]


def test_label_reward_values_are_settable():
    assert LabelReward(correct=2.0, wrong=0.0, unparsable=-1.0)([" entity", " human", " xyz"], ["entity"] * 3,
                                                               CHOICES) == [2.0, -1.0, -1.0]


@pytest.mark.parametrize(("answer", "expected"), [(" 3.5", 2.0), (" about 1", 0.5), (" -1", -1.5), (" 3", 2.5),
                                                  (" five", -3.0)])
def test_regression_reward(answer, expected):
    assert RegressionReward()([answer], ["3"], []) == [pytest.approx(expected)]


def test_both_rewards_meet_the_protocol():
    assert isinstance(LabelReward(), RewardFunction) and isinstance(RegressionReward(), RewardFunction)
