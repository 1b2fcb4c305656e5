"""benchmarks/ppo.py: TRL's arm must run the very network ours does (checked on the first prompt's logits)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_peft import zoo
from tests.benchmarks.harness import load_script


def test_the_trl_arm_is_stopped_when_its_model_gives_other_logits(monkeypatch):
    harness = load_script("ppo.py", monkeypatch)
    path, prompt = str(zoo.resolve("tiny-llama")), [5, 17, 42, 9, 3]
    ours = {"model": path, "rows": [{"prompts": [prompt]}]}
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)(input_ids=torch.tensor([prompt])).logits[0, -1]
    assert harness.same_network(ours, logits.tolist()) < 1e-5
    shifted = logits.clone()
    shifted[7] += 0.01  # e.g. another RoPE base moves SmolLM2-135M's logits by up to 1.2
    with pytest.raises(SystemExit, match="TRL's model gives logits up to 0.01 away from ours"):
        harness.same_network(ours, shifted.tolist())
