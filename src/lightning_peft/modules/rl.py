"""The RL family's LightningModule: PPO with LoRA on answers the policy writes itself.

"Improving the Language Understanding Capabilities of Large Language Models Using Reinforcement
Learning" (2024; reference code coder-qicao/RL4GLUE). A classification task is asked as a
question; the policy (the LM with a LoRA adapter and a small value head) generates an answer, a reward
function scores it against the gold label (+1 / -1 / -3 unparsable), and PPO (Schulman et al. 2017)
raises the reward while a KL penalty with an adaptive coefficient keeps the policy near the reference
model. The reference is the same model with its adapter turned off (`Method.disabled`), so there is no
second copy of the weights.

Each training step is one PPO iteration: generate one rollout per prompt of the batch (KV cache, left
padding), score it, compute per-token rewards, GAE advantages and returns, then `ppo.ppo_epochs` passes
of clipped policy and value updates over it (manual optimisation). A step finishes its rollout before
it returns, so a checkpoint never holds half a rollout; what carries over between steps (the KL
coefficient, the RNG that samples rollouts, optimizer state) is in the checkpoint. The maths is in
`lightning_peft.tasks.ppo`, the rewards in `lightning_peft.tasks.rewards`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..methods import Adapted, Lora, MethodConfigError, PeftMethod
from ..tasks import Task, VerbalizerClassification, left_align
from ..tasks import ppo as P
from ..tasks.rewards import LabelReward, RewardFunction, parse_choice
from .base import FineTuneModule
from .defaults import lazy_default

VALUE_GROUP = "value_head"


@dataclass
class Rollout:
    """One batch of generated answers and what PPO needs from the moment they were generated."""

    sequences: torch.Tensor  # prompt + answer token ids [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]: prompt padding and tokens after the end of sequence are 0
    mask: torch.Tensor  # [B, T] float: the answer tokens that count
    logprobs: torch.Tensor  # [B, T] under the policy that generated them
    values: torch.Tensor  # [B, T]
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor  # [B, T]
    scores: torch.Tensor  # [B] task reward
    kl: torch.Tensor  # [B] summed log pi - log pi_ref over each answer

    @property
    def answer_length(self) -> int:
        return self.mask.shape[1]


def answer_mask(answer: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1.0 on each generated token up to and including the first end of sequence, 0.0 after it."""
    is_eos = (answer == eos_token_id).long()
    return ((is_eos.cumsum(dim=1) - is_eos) == 0).float()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(token) under the sampling distribution (logits / temperature), per position."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class PPOModule(FineTuneModule):
    """PPO with a peft adapter (rsLoRA r 16, alpha 32 by default) and a value head on generated answers.

    Example::

        lightning-peft fit --config configs/rl/ppo_lora_trec6.yaml

    Args:
        task: Supplies the label words the answers are compared with (`verbalizer_words`) and the metrics;
            the policy must be a causal LM (`VerbalizerClassification`).
        method: The adapter trained: lightning_peft.methods.Lora or any PeftMethod (its disabled adapter is
            the reference model).
        reward: Scores generated answers (`lightning_peft.tasks.rewards.RewardFunction`): LabelReward
            (+1 / -1 / -3, the paper's; the default), RegressionReward (2.5 - |prediction - gold|), or your own.
        ppo: PPO settings (`lightning_peft.tasks.ppo.PPOSettings`): epochs, clip ranges, GAE, KL controller,
            answer length, sampling temperature.
        max_grad_norm: Clip the gradient norm of every PPO update to this (null: no clipping); the trainer's
            gradient_clip_val does not apply under manual optimisation.
        **kwargs: Everything else of `FineTuneModule` (backbone, optimizer, group_lr, ...).
    """

    def __init__(
        self,
        task: Task = lazy_default(VerbalizerClassification),
        method: PeftMethod = lazy_default(Lora, r=16, alpha=32.0, dropout=0.0, variant="rslora"),
        reward: RewardFunction | None = None,
        ppo: P.PPOSettings = P.PPOSettings(),
        max_grad_norm: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        if task is not None and task.auto_class_name != "AutoModelForCausalLM":
            raise MethodConfigError(
                f"PPOModule generates answers, so the policy needs a language-model head, but {type(task).__name__} loads "
                f"an {task.auto_class_name}; use lightning_peft.tasks.VerbalizerClassification.")
        if method is not None and not method.capabilities.disable:
            raise MethodConfigError(
                f"PPOModule's reference model is the policy with its adapter turned off, which {type(method).__name__} "
                "cannot do in place; use a PeftMethod such as lightning_peft.methods.Lora.")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise MethodConfigError(f"max_grad_norm must be > 0 or null (no clipping), got {max_grad_norm!r}.")
        super().__init__(task=task, method=method, **kwargs)
        self.automatic_optimization = False  # several PPO updates per rollout batch
        # not a lazy_instance default: jsonargparse's lazy wrapper of a callable cannot be deep-copied
        self.reward = LabelReward() if reward is None else reward
        self.settings, self.max_grad_norm = ppo, max_grad_norm
        words = self.task.verbalizer_words()
        self.choices = [words[name] for name in self.task.label_names] if words else list(self.task.label_names)
        self._check_reward()
        self.kl = P.AdaptiveKLController(ppo.kl_coef, ppo.kl_target, ppo.kl_horizon)
        self.value_head: nn.Linear | None = None

    # -- building -------------------------------------------------------------------------

    def _check_reward(self) -> None:
        """Call the reward once on a correct answer, so a broken one fails here and not after the first rollout."""
        name, sample = type(self.reward).__name__, self.choices[0]
        try:
            scores = self.reward([sample], [sample], self.choices)
        except Exception as error:
            raise MethodConfigError(f"The reward function {name} raised {type(error).__name__} ({error}) when scoring the "
                                    f"answer {sample!r} against the gold {sample!r}; fix it or choose another reward.") from error
        self._check_scores(scores, 1)

    def _check_scores(self, scores: Any, count: int) -> None:
        if not isinstance(scores, list | tuple) or len(scores) != count or not all(isinstance(s, int | float) for s in scores):
            raise MethodConfigError(f"The reward function {type(self.reward).__name__} must return a list of {count} "
                                    f"float(s), one per answer, but returned {scores!r:.80}.")

    def adapt(self, base: nn.Module) -> Adapted:
        """The adapted policy plus the value head, trained as its own group (`value_head`)."""
        if not base.can_generate():
            raise MethodConfigError(f"PPOModule generates answers, but {type(base).__name__} has no generation head; "
                                    "choose a causal LM backbone.")
        adapted = super().adapt(base)
        # Read from the last hidden state, as TRL's value head; initialised small so early values are near 0.
        self.value_head = nn.Linear(base.config.hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1e-3)
        nn.init.zeros_(self.value_head.bias)
        adapted.groups[VALUE_GROUP] = dict(self.value_head.named_parameters())
        return adapted

    def trainable_parameter_names(self) -> set[str]:
        """The method's groups under `model.`, the value head under `value_head.`."""
        return ({f"model.{name}" for group, params in self.groups.items() if group != VALUE_GROUP for name in params}
                | {f"{VALUE_GROUP}.{name}" for name in self.groups.get(VALUE_GROUP, {})})

    # -- rollouts -------------------------------------------------------------------------

    def _policy(self, sequences: torch.Tensor, attention_mask: torch.Tensor, answer_length: int,
                with_values: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits predicting each answer token [B, T, V] and the value of the state before it [B, T]."""
        positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding: count from each row's first token
        out = self.model(input_ids=sequences, attention_mask=attention_mask, position_ids=positions,
                         output_hidden_states=with_values)
        window = slice(-answer_length - 1, -1)  # position t predicts token t + 1
        values = self.value_head(out.hidden_states[-1][:, window].float()).squeeze(-1) if with_values else None
        return out.logits[:, window], values

    def _generate(self, batch: dict[str, torch.Tensor], sample: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Prompt + answer ids, their attention mask, and the prompt's length; in eval mode, without gradients."""
        prompt_ids, prompt_mask = left_align(batch["input_ids"], batch["attention_mask"])
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        options = dict(do_sample=True, temperature=self.settings.temperature, top_k=0, top_p=1.0) if sample else \
            dict(do_sample=False, temperature=None, top_k=None, top_p=None)
        sequences = self.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True,
                                        max_new_tokens=self.settings.max_new_tokens, eos_token_id=eos,
                                        pad_token_id=pad if pad is not None else eos, **options)
        answer = sequences[:, prompt_ids.shape[1]:]
        return sequences, torch.cat([prompt_mask, answer_mask(answer, eos).long()], dim=1), prompt_ids.shape[1]

    def _answers(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> list[str]:
        rows = [row[prompt_length:][keep[prompt_length:].bool()] for row, keep in zip(sequences, attention_mask)]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    def _scores(self, answers: list[str], labels: torch.Tensor) -> torch.Tensor:
        scores = self.reward(answers, [self.choices[i] for i in labels.tolist()], self.choices)
        self._check_scores(scores, len(answers))
        return torch.tensor(scores, dtype=torch.float32, device=labels.device)

    @torch.no_grad()
    def _rollout(self, batch: dict[str, torch.Tensor]) -> Rollout:
        settings = self.settings
        self.model.eval()  # no dropout: the first PPO pass must see ratio 1
        try:
            sequences, attention, prompt_length = self._generate(batch, sample=True)
            length = sequences.shape[1] - prompt_length
            answer, mask = sequences[:, prompt_length:], attention[:, prompt_length:].float()
            logits, values = self._policy(sequences, attention, length)
            logprobs = token_logprobs(logits, answer, settings.temperature)
            with self.method.disabled(self.model):
                ref_logits, _ = self._policy(sequences, attention, length, with_values=False)
            ref_logprobs = token_logprobs(ref_logits, answer, settings.temperature)
        finally:
            self.model.train()
        scores = self._scores(self._answers(sequences, attention, prompt_length), batch["labels"])
        rewards = P.token_rewards(scores, logprobs, ref_logprobs, mask, self.kl.value)
        advantages, returns = P.gae(rewards, values, mask, settings.gamma, settings.lam)
        if settings.whiten_advantages:
            advantages = P.masked_whiten(advantages, mask)
        return Rollout(sequences, attention, mask, logprobs, values * mask, advantages, returns, scores,
                       ((logprobs - ref_logprobs) * mask).sum(dim=1))

    # -- updates --------------------------------------------------------------------------

    def _update(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """`ppo_epochs` passes of clipped policy + value updates over the rollout; the mean of each statistic."""
        optimizer, settings = self.optimizers(), self.settings
        count = rollout.scores.shape[0]
        size = settings.mini_batch_size or count
        totals: dict[str, torch.Tensor] = {}
        updates = 0
        for _ in range(settings.ppo_epochs):
            for rows in torch.randperm(count, device=rollout.scores.device).split(size):
                logits, values = self._policy(rollout.sequences[rows], rollout.attention_mask[rows], rollout.answer_length)
                answer, mask = rollout.sequences[rows, -rollout.answer_length:], rollout.mask[rows]
                logprobs = token_logprobs(logits, answer, settings.temperature)
                pg_loss, clip_fraction = P.policy_loss(logprobs, rollout.logprobs[rows], rollout.advantages[rows], mask,
                                                       settings.clip_range)
                vf_loss = P.value_loss(values, rollout.values[rows], rollout.returns[rows], mask, settings.value_clip_range)
                optimizer.zero_grad()
                self.manual_backward(pg_loss + settings.value_coef * vf_loss)
                if self.max_grad_norm is not None:
                    self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
                optimizer.step()
                stats = {"policy_loss": pg_loss, "value_loss": vf_loss, "clip_fraction": clip_fraction,
                         "entropy": P.entropy(logits.detach() / settings.temperature, mask)}
                totals = {k: totals.get(k, 0) + v.detach() for k, v in stats.items()}
                updates += 1
        return {k: v / updates for k, v in totals.items()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        rollout = self._rollout(batch)
        stats = self._update(rollout)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        kl_coef = self.kl.value  # the coefficient this rollout was penalised with
        # Every rank moves the coefficient by the mean KL over all ranks, so the coefficients stay equal.
        kl = self.trainer.strategy.reduce(rollout.kl.mean(), reduce_op="mean")
        self.kl.update(float(kl), rollout.scores.shape[0] * self.trainer.world_size)
        size = rollout.scores.shape[0]
        self.log("train/reward", rollout.scores.mean(), prog_bar=True, batch_size=size, sync_dist=True)
        self.log_dict({"train/kl": kl, "train/kl_coef": torch.tensor(kl_coef, device=self.device),
                       "train/answer_tokens": rollout.mask.sum(dim=1).mean(),
                       **{f"train/{k}": v for k, v in stats.items()}}, batch_size=size, sync_dist=True)

    # -- evaluation: accuracy of the greedy answer ----------------------------------------

    @torch.no_grad()
    def _evaluate(self, batch: dict[str, torch.Tensor], split: str, dataloader_idx: int) -> None:
        metrics = self.eval_metrics[self._eval_keys[split][dataloader_idx]]
        was_training = self.model.training
        self.model.eval()
        try:
            sequences, attention, prompt_length = self._generate(batch, sample=False)
        finally:
            self.model.train(was_training)
        answers, labels = self._answers(sequences, attention, prompt_length), batch["labels"]
        named = [parse_choice(answer, self.choices) for answer in answers]
        # An answer that names no class counts as wrong: score it as the class after the gold one.
        preds = [self.choices.index(n) if n is not None else (gold + 1) % len(self.choices)
                 for n, gold in zip(named, labels.tolist())]
        metrics.update(torch.tensor(preds, device=labels.device), labels)
        size = labels.shape[0]
        self.log(f"{metrics.prefix}reward", self._scores(answers, labels).mean(), sync_dist=True, batch_size=size,
                 add_dataloader_idx=False)
        unparsable = torch.tensor(sum(n is None for n in named) / size, device=self.device)
        self.log(f"{metrics.prefix}unparsable", unparsable, sync_dist=True, batch_size=size, add_dataloader_idx=False)
        self.log_dict(metrics, prog_bar=True, batch_size=size, add_dataloader_idx=False)

    # -- checkpoints: the KL controller travels with the adapter and value head ------------

    def on_save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        super().on_save_checkpoint(ckpt)
        ckpt["ppo"] = {"kl_controller": self.kl.state_dict()}

    def on_load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        super().on_load_checkpoint(ckpt)
        self.kl.load_state_dict(ckpt["ppo"]["kl_controller"])
