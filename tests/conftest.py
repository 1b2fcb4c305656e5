import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_causal_lm(name: str = "tiny-llama"):
    from transformers import AutoModelForCausalLM

    from lightning_peft import zoo

    return AutoModelForCausalLM.from_pretrained(zoo.resolve(name))
