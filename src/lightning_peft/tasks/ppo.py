"""The PPO objective as plain torch functions: per-token rewards with a KL penalty, GAE, clipped losses.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347), with GAE from
Schulman et al. 2016 (arXiv:1506.02438) and the adaptive KL coefficient of Ziegler et al. 2019,
"Fine-Tuning Language Models from Human Preferences" (arXiv:1909.08593), as used by the seed paper
"Improving the Language Understanding Capabilities of Large Language Models Using Reinforcement
Learning" (coder-qicao/RL4GLUE, through TRL's PPO). Every tensor here is [batch, response tokens]
with a 0/1 `mask` marking the generated tokens up to and including the end of sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TaskConfigError


@dataclass(frozen=True)
class PPOSettings:
    """How each rollout batch is turned into updates.

    Args:
        ppo_epochs: Passes over each rollout batch (the paper, through TRL: 4).
        mini_batch_size: Rollouts per optimizer step within a pass (must divide the batch size; default: the whole batch).
        clip_range: epsilon of the clipped ratio, min(r A, clip(r, 1 - eps, 1 + eps) A).
        value_clip_range: How far a new value may move from the rollout's value before its loss is clipped.
        value_coef: Weight of the value loss against the policy loss.
        gamma: Discount of GAE (1: the reward at the end counts fully for every token).
        lam: lambda of GAE (bias/variance trade-off of the advantage).
        kl_coef: Initial coefficient of the KL penalty to the reference (the paper: 0.2).
        kl_target: KL (summed over an answer, in nats) the adaptive controller steers towards; null: a fixed coefficient.
        kl_horizon: Controller horizon in rollouts: how fast the coefficient adapts.
        max_new_tokens: Longest generated answer.
        temperature: Sampling temperature of the rollouts (> 0).
        whiten_advantages: Normalise advantages over the batch's answer tokens (mean 0, std 1).
    """

    ppo_epochs: int = 4
    mini_batch_size: int | None = None
    clip_range: float = 0.2
    value_clip_range: float = 0.2
    value_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.2
    kl_target: float | None = 6.0
    kl_horizon: int = 10000
    max_new_tokens: int = 8
    temperature: float = 1.0
    whiten_advantages: bool = True

    def __post_init__(self) -> None:
        for name in ("ppo_epochs", "max_new_tokens", "kl_horizon"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise TaskConfigError(f"ppo.{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.mini_batch_size is not None and (not isinstance(self.mini_batch_size, int) or self.mini_batch_size < 1):
            raise TaskConfigError(f"ppo.mini_batch_size must be a positive integer or null (the whole batch), got {self.mini_batch_size!r}.")
        for name in ("clip_range", "value_clip_range", "temperature"):
            if not getattr(self, name) > 0:
                raise TaskConfigError(f"ppo.{name} must be > 0 (PPO uses 0.2 for the clip ranges, 1.0 for temperature), "
                                      f"got {getattr(self, name)!r}.")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise TaskConfigError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)!r}.")
        if self.value_coef < 0 or self.kl_coef < 0:
            raise TaskConfigError(f"ppo.value_coef and ppo.kl_coef must be >= 0, got {self.value_coef!r} and {self.kl_coef!r}.")
        if self.kl_target is not None and not self.kl_target > 0:
            raise TaskConfigError(f"ppo.kl_target must be > 0 (nats per answer) or null for a fixed coefficient, got {self.kl_target!r}.")


class AdaptiveKLController:
    """The KL coefficient beta, moved towards a target KL (Ziegler et al. 2019, eq. 2).

        e = clip(KL / target - 1, -0.2, 0.2);   beta <- beta * (1 + e * n / horizon)

    where n is the number of rollouts the KL was measured on. With `target` None beta stays fixed.
    """

    def __init__(self, init: float, target: float | None, horizon: int) -> None:
        self.value, self.target, self.horizon = float(init), target, horizon

    def update(self, kl: float, n_rollouts: int) -> float:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_rollouts / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(values - mean) / std over the masked entries; masked-out entries become 0."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + 1e-8) * mask


def token_rewards(score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> torch.Tensor:
    """r_t = -beta * (log pi(y_t) - log pi_ref(y_t)) per answer token, plus the task's `score` [batch] on the last one."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = (mask.cumsum(dim=1) * mask).argmax(dim=1)  # index of each row's last counted token
    return rewards.scatter_add(1, last.unsqueeze(1), score.to(rewards.dtype).unsqueeze(1))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16): advantages and returns.

        delta_t = r_t + gamma * V_{t+1} - V_t;   A_t = delta_t + gamma * lam * A_{t+1};   R_t = A_t + V_t

    with V and A zero after the last counted token of each row.
    """
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), negated for minimisation, and the clip fraction.

        L = -mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t),   rho_t = exp(log pi - log pi_old)
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float) -> torch.Tensor:
    """0.5 * mean_t max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2), the clipped value loss of PPO2 / TRL."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the policy's next-token distribution over the answer tokens."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(logp.exp() * logp).sum(dim=-1), mask)

