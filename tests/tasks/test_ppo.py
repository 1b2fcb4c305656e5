"""The PPO maths (tasks/ppo.py) against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_peft.tasks import TaskConfigError
from lightning_peft.tasks.ppo import AdaptiveKLController, PPOSettings, gae, masked_whiten, policy_loss, token_rewards, value_loss


def test_gae_matches_the_recursion_worked_by_hand():
    # gamma 1, lambda 0.5: delta = (-0.1, -0.1, 0.7); A2 = 0.7, A1 = -0.1 + 0.5 * 0.7, A0 = -0.1 + 0.5 * 0.25
    advantages, returns = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.4, 0.3]]), torch.ones(1, 3), 1.0, 0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.025, 0.25, 0.7]]))
    torch.testing.assert_close(returns, torch.tensor([[0.525, 0.65, 1.0]]))


def test_gae_ignores_what_comes_after_the_end_of_an_answer():
    # the third token is padding: its reward (9) and value (5) must not leak into the others
    advantages, returns = gae(torch.tensor([[0.0, 2.0, 9.0]]), torch.tensor([[1.0, 1.0, 5.0]]),
                              torch.tensor([[1.0, 1.0, 0.0]]), 0.9, 1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.8, 1.0, 0.0]]))  # A0 = 0 + 0.9 * 1 - 1 + 0.9 * 1
    torch.testing.assert_close(returns, torch.tensor([[1.8, 2.0, 0.0]]))


def test_clipped_policy_loss_takes_the_pessimistic_term():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 1.5, 0.5]]))
    advantages = torch.tensor([[1.0, -1.0, 1.0]])
    loss, clip_fraction = policy_loss(new, old, advantages, torch.ones(1, 3), clip_range=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: max(1.5, 1.2) = 1.5; token 3: max(-0.5, -0.8) = -0.5
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5) / 3)
    assert clip_fraction.item() == pytest.approx(1 / 3)


def test_clipped_value_loss():
    loss = value_loss(torch.tensor([[2.0, 0.1]]), torch.zeros(1, 2), torch.tensor([[3.0, 0.0]]), torch.ones(1, 2), 0.2)
    # token 1: max((2 - 3)^2, (0.2 - 3)^2) = 7.84; token 2: max(0.01, 0.01)
    assert loss.item() == pytest.approx(0.5 * (7.84 + 0.01) / 2)


def test_token_rewards_penalise_kl_and_add_the_score_on_the_last_answer_token():
    rewards = token_rewards(torch.tensor([1.0]), torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -2.0, -2.0]]),
                            torch.tensor([[1.0, 1.0, 0.0]]), kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.25, 1.0, 0.0]]))


def test_whitened_advantages_have_mean_zero_and_unit_std_over_the_mask():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    whitened = masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), mask)
    torch.testing.assert_close(whitened, torch.tensor([[-math.sqrt(1.5), 0.0, math.sqrt(1.5), 0.0]]), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("kl", "expected"), [(12.0, 0.2 * 1.002), (3.0, 0.2 * 0.998), (6.6, 0.2 * 1.001), (6.0, 0.2)])
def test_adaptive_kl_controller_moves_towards_the_target(kl, expected):
    controller = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert controller.update(kl, n_rollouts=100) == pytest.approx(expected)  # error clipped to +-0.2


def test_kl_controller_state_round_trips_and_a_fixed_one_stays():
    controller = AdaptiveKLController(0.2, target=6.0, horizon=100)
    controller.update(50.0, 10)
    restored = AdaptiveKLController(0.2, target=6.0, horizon=100)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value == pytest.approx(0.204)
    assert AdaptiveKLController(0.2, target=None, horizon=100).update(50.0, 10) == 0.2


@pytest.mark.parametrize(("setting", "message"), [
    ({"clip_range": 0.0}, "ppo.clip_range must be > 0"),
    ({"value_clip_range": -1.0}, "ppo.value_clip_range must be > 0"),
    ({"gamma": 1.5}, r"ppo.gamma must be in \[0, 1\]"),
    ({"lam": -0.1}, r"ppo.lam must be in \[0, 1\]"),
    ({"ppo_epochs": 0}, "ppo.ppo_epochs must be a positive integer"),
    ({"mini_batch_size": 0}, "ppo.mini_batch_size must be a positive integer"),
    ({"kl_target": 0.0}, "ppo.kl_target must be > 0"),
    ({"kl_coef": -0.2}, "ppo.value_coef and ppo.kl_coef must be >= 0"),
])
def test_bad_ppo_settings_are_one_sentence(setting, message):
    with pytest.raises(TaskConfigError, match=message):
        PPOSettings(**setting)
