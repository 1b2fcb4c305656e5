import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _isolate_launch_state():
    """Undo what an in-process Lightning run leaves behind for later tests.

    A `Trainer(strategy="ddp")` exports LOCAL_RANK/WORLD_SIZE/MASTER_PORT into os.environ and keeps
    its process group (and the store listening on MASTER_PORT). A later test's subprocess that
    inherited them would skip launching its ranks, or race for that port.
    """
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def tiny_causal_lm(name: str = "tiny-llama"):
    from transformers import AutoModelForCausalLM

    from lightning_peft import zoo

    return AutoModelForCausalLM.from_pretrained(zoo.resolve(name))


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`), the tests that start several processes talking over local
    ports run one after another on one worker, never beside each other."""
    for item in items:
        if item.get_closest_marker("multiprocess"):
            item.add_marker(pytest.mark.xdist_group("multiprocess"))
