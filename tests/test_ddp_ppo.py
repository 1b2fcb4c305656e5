"""PPOModule under DDP on 2 CPU processes (gloo): every PPO update's gradients are averaged across ranks.

Each rank generates rollouts for its own prompts, so the ranks' losses differ; the adapter, value head
and KL coefficient stay identical only if every one of the several `manual_backward` calls per step
is synchronised (Lightning re-arms DDP's reducer before each) and the KL fed to the controller is the
mean over ranks. The script saves each rank's trained weights; the test compares them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lightning_peft.cli.launch_env import LAUNCH_VARIABLES

SCRIPT = """
import json, sys
from functools import partial
import lightning as L, torch
from lightning_peft.checkpoint import trainable_state
from lightning_peft.data import ClassificationData
from lightning_peft.methods import Lora
from lightning_peft.modules import PPOModule
from lightning_peft.tasks.ppo import PPOSettings

out = sys.argv[1]
L.seed_everything(0)
module = PPOModule(backbone="tiny-llama", label_names=["alpha", "beta"], optimizer=partial(torch.optim.AdamW, lr=1e-2),
                   method=Lora(r=4, alpha=8, target_modules=["q_proj", "v_proj"], dropout=0.0),
                   ppo=PPOSettings(max_new_tokens=3, ppo_epochs=2, mini_batch_size=2, kl_target=1e-3, kl_horizon=10))
data = ClassificationData(out + "/data.jsonl", tokenizer="tiny-llama", label_names=["alpha", "beta"], val_size=0,
                          test_size=0, batch_size=4, max_length=16)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=8, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0, default_root_dir=out)
trainer.fit(module, datamodule=data)
torch.save({"weights": trainable_state(module.state_dict(), module.trainable_parameter_names()),
            "kl_coef": module.kl.value, "reward": float(trainer.callback_metrics["train/reward"])},
           f"{out}/rank{trainer.global_rank}.pt")
"""


@pytest.mark.multiprocess
@pytest.mark.timeout(700)
def test_ppo_under_ddp_keeps_both_ranks_identical(tmp_path):
    rows = ({"text": "word " * (1 + i % 5) + str(i), "label": ["alpha", "beta"][i % 2]} for i in range(16))
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in (0, 1)]
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"] != 0.2  # moved, and equally on both ranks
    assert set(ranks[0]["weights"]) == set(ranks[1]["weights"])
    assert any(name.startswith("value_head.") for name in ranks[0]["weights"])
    for name, weight in ranks[0]["weights"].items():
        torch.testing.assert_close(weight, ranks[1]["weights"][name], rtol=0, atol=1e-6)
        if "lora_B" in name:
            assert weight.abs().max() > 1e-4  # trained (lora_B starts at zero)
