"""PPOModule: rollouts, updates of the adapter and value head only, KL controller resume, refusals at setup."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_peft.checkpoint import trainable_state
from lightning_peft.methods import Lora, MethodConfigError
from lightning_peft.modules import PPOModule
from lightning_peft.tasks import HeadClassification
from lightning_peft.tasks.ppo import PPOSettings
from tests import helpers
from tests.conftest import tiny_causal_lm


def _module(**settings) -> PPOModule:
    # a tiny KL target and horizon make the coefficient move visibly at every rollout
    ppo = PPOSettings(max_new_tokens=4, ppo_epochs=2, mini_batch_size=2, kl_target=1e-3, kl_horizon=10,
                      **settings)
    return PPOModule(backbone="tiny-llama", method=Lora(r=4, alpha=8, target_modules=["q_proj", "v_proj"], dropout=0.0),
                     label_names=helpers.LABELS, ppo=ppo, optimizer=partial(torch.optim.AdamW, lr=1e-2))


class Logged(L.Callback):
    """The train/ metrics after every training step, and the KL coefficient the module holds then."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({**{k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")},
                           "coef_after": pl_module.kl.value})


def test_fit_changes_only_the_adapter_and_the_value_head_and_logs_ppo_statistics(tmp_path):
    module, logged = _module(), Logged()
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    # 3 rollouts of 4 prompts x 2 epochs x 2 mini-batches = 12 optimizer steps (max_steps counts those)
    helpers.trainer(tmp_path, 12, callbacks=[logged], limit_val_batches=0).fit(module, datamodule=data)
    assert len(logged.steps) == 3
    assert {"train/reward", "train/kl", "train/kl_coef", "train/entropy", "train/clip_fraction", "train/value_loss",
            "train/policy_loss"} <= set(logged.steps[-1])
    assert logged.steps[0]["train/kl"] == pytest.approx(0.0, abs=1e-6)  # lora_B starts at zero: policy == reference
    assert logged.steps[-1]["train/kl"] != 0.0
    assert logged.steps[-1]["train/entropy"] > 0
    base = tiny_causal_lm().state_dict()
    trained = trainable_state(module.state_dict(), module.trainable_parameter_names())
    assert {name.split(".")[0] for name in trained} == {"model", "value_head"}
    assert all("lora_" in name for name in trained if name.startswith("model."))
    assert all(not torch.equal(value, torch.zeros_like(value)) for name, value in trained.items() if "lora_B" in name)
    for name, value in module.model.get_base_model().state_dict().items():
        if "lora_" not in name:
            torch.testing.assert_close(value, base[name.replace(".base_layer", "")], rtol=0, atol=0)
    assert module.value_head.weight.std() > 1e-3  # moved from its 1e-3 initialisation


def test_resume_restores_the_kl_controller_and_continues_exactly(tmp_path):
    data_file = helpers.write_jsonl(tmp_path / "data.jsonl")
    L.seed_everything(3)
    first, logged = _module(), Logged()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    helpers.trainer(tmp_path / "a", 12, callbacks=[saver, logged], limit_val_batches=0).fit(
        first, datamodule=helpers.classification_data(data_file))
    assert logged.steps[0]["coef_after"] != 0.2  # the controller moved, so resuming without its state would show
    saved = torch.load(tmp_path / "ckpt" / "step=4.ckpt", weights_only=True)
    assert saved["ppo"]["kl_controller"]["value"] == pytest.approx(logged.steps[0]["coef_after"])
    assert {k.split(".")[0] for k in saved["state_dict"]} == {"model", "value_head"}

    L.seed_everything(99)  # the checkpoint must restore the RNG that samples the rollouts
    resumed, relogged = _module(), Logged()
    helpers.trainer(tmp_path / "b", 12, callbacks=[relogged], limit_val_batches=0).fit(
        resumed, datamodule=helpers.classification_data(data_file), ckpt_path=str(tmp_path / "ckpt" / "step=4.ckpt"))
    assert [s["coef_after"] for s in relogged.steps] == pytest.approx([s["coef_after"] for s in logged.steps[1:]], rel=1e-9)
    assert [s["train/reward"] for s in relogged.steps] == [s["train/reward"] for s in logged.steps[1:]]
    for name, weight in trainable_state(resumed.state_dict(), resumed.trainable_parameter_names()).items():
        torch.testing.assert_close(weight, first.state_dict()[name])


def test_validation_scores_the_greedy_answer(tmp_path):
    module = _module()
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    trainer = helpers.trainer(tmp_path, 1, limit_val_batches=1)
    trainer.validate(module, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"val/acc", "val/reward", "val/unparsable"} <= set(metrics)
    # the random tiny model names no label: every answer is unparsable, scores -3 and counts as wrong
    assert metrics["val/unparsable"] == 1.0 and metrics["val/reward"] == -3.0 and metrics["val/acc"] == 0.0


def test_a_reward_function_that_raises_is_named_at_setup():
    class Broken:
        def __call__(self, answers, golds, choices):
            raise KeyError("gold")

    with pytest.raises(MethodConfigError, match=r"The reward function Broken raised KeyError \('gold'\) when scoring"):
        PPOModule(backbone="tiny-llama", label_names=helpers.LABELS, reward=Broken())


def test_a_reward_function_with_the_wrong_shape_is_named_at_setup():
    with pytest.raises(MethodConfigError, match="must return a list of 1 float"):
        PPOModule(backbone="tiny-llama", label_names=helpers.LABELS, reward=lambda answers, golds, choices: 1.0)


def test_a_policy_without_a_generation_head_is_refused():
    with pytest.raises(MethodConfigError, match="needs a language-model head, but HeadClassification loads an "
                                                "AutoModelForSequenceClassification"):
        PPOModule(backbone="tiny-llama", task=HeadClassification(), label_names=helpers.LABELS)


def test_bad_settings_are_refused_before_weights_load():
    with pytest.raises(MethodConfigError, match="max_grad_norm must be > 0"):
        PPOModule(backbone="tiny-llama", label_names=helpers.LABELS, max_grad_norm=0.0)


def test_defaults_are_the_papers():
    module = PPOModule(backbone="tiny-llama", label_names=helpers.LABELS)
    lora = module.method
    assert (lora.r, lora.alpha, lora.variant) == (16, 32.0, "rslora")
    assert module.kl.value == 0.2
    assert (module.reward([" alpha"], ["alpha"], ["alpha", "beta"]), module.reward([" beta"], ["alpha"], ["alpha", "beta"]),
            module.reward([" gamma"], ["alpha"], ["alpha", "beta"])) == ([1.0], [-1.0], [-3.0])


def test_the_recipe_runs_with_fast_dev_run_on_a_tiny_model(tmp_path):
    from lightning_peft.cli import main

    root = Path(__file__).resolve().parents[2]
    main(["fit", "--config", str(root / "configs/rl/ppo_lora_trec6.yaml"), "--model.init_args.backbone", "tiny-llama",
          "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path),
          "--model.init_args.ppo.max_new_tokens", "2", "--data.init_args.batch_size", "2",
          "--data.init_args.eval_batch_size", "2", "--trainer.logger", "false"])


def test_ppo_starts_from_the_exported_supervised_adapter_of_the_sft_recipe(tmp_path):
    """The issue's "briefly supervised policy": the SFT recipe's adapter, exported, is PPO's starting point."""
    from lightning_peft.cli import main

    root = Path(__file__).resolve().parents[2]
    tiny = ["--model.init_args.backbone", "tiny-llama", "--data.init_args.batch_size", "2",
            "--data.init_args.eval_batch_size", "2", "--trainer.logger", "false"]
    main(["fit", "--config", str(root / "configs/rl/sft_lora_trec6.yaml"), *tiny, "--trainer.max_steps", "2",
          "--trainer.default_root_dir", str(tmp_path / "sft"), "--test_after_fit", "false"])
    main(["export", "--ckpt_path", str(tmp_path / "sft" / "checkpoints" / "last.ckpt"),
          "--output_dir", str(tmp_path / "adapter")])
    sft_method = Lora(r=16, alpha=32, variant="rslora", dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    module = PPOModule(backbone="tiny-llama", method=Lora(
        r=16, alpha=32, variant="rslora", dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_from=str(tmp_path / "adapter")), label_names=helpers.LABELS, ppo=PPOSettings(max_new_tokens=2))
    module.configure_model()
    exported = sft_method.load(tiny_causal_lm(), tmp_path / "adapter")
    ids = torch.randint(0, 1000, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(module.model(input_ids=ids).logits, exported(input_ids=ids).logits)
        with module.method.disabled(module.model):  # the reference stays the base: PPO's KL starts above zero
            assert not torch.allclose(module.model(input_ids=ids).logits, exported(input_ids=ids).logits)
