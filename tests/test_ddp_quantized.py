"""configs/multi_gpu/int8_lora_ddp.yaml (int8 base, 8-bit AdamW, DDP) on 2 CPU processes (gloo) trains like 1 process at
the same global batch.

bitsandbytes 0.50.2 runs int8 (LLM.int8) layers and AdamW8bit on a CPU, so the recipe's settings run here with only the machine
keys changed (accelerator cpu, 2 devices, tiny-llama). The setup is test_ddp.py's: 8 training examples, one batch per
epoch, so each step sees the same 8 examples in 1 process x batch 8 and in 2 processes x batch 4, and DDP's averaged
gradient equals the one of the mean loss over all 8 up to float rounding in the reduction (dropout off: each process
draws its own masks; every example is cut to the same length, so neither run pads differently).

Measured on this machine (2026-11-29): the adapters after each of the 3 steps (a checkpoint every step) agree to
float rounding, at most 8e-7 apart with weights up to 0.15: the int8 forward is per example (row-wise quantization,
no statistics across the batch), the all-reduced gradient differs from the 1-process one by rounding only, and
8-bit AdamW quantizes its state per block deterministically. Asserted with test_ddp.py's tolerance (rtol 1e-4,
atol 1e-5). Precision is pinned to 32-true: bf16 autocast (the CLI's "auto" on a CPU with native bf16) rounds each
matmul output to 8 mantissa bits, and which rounding a row gets depends on the kernel chosen for the batch size.

An NF4 base behaves the same since `quantization.keep_4bit_layout` (measured once: within 1.3e-6 after 3 steps);
before it, bitsandbytes 0.50.2's CPU repacking moved the base at each checkpoint save and the runs differed by up
to lr after 2 steps. Only int8 runs here, to keep the suite's time down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_peft.cli import main
from lightning_peft.cli.launch_env import LAUNCH_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
RECIPE = [arg for name in ("quickstart", "optimizer/adamw8bit", "multi_gpu/int8_lora_ddp")
          for arg in ("--config", str(ROOT / "configs" / f"{name}.yaml"))]  # the recipe's first-line command
STEPS = 3
LR = 0.05
RUN_SECONDS = 400  # about 60 s on 2 busy cores; a busier machine can triple that


def _args(root: Path, devices: int, batch_size: int) -> list[str]:
    saver = {"trainer": {"callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {
        "dirpath": str(root / "ckpt"), "every_n_train_steps": 1, "save_top_k": -1, "filename": "{step}"}}]}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "saver.yaml").write_text(yaml.safe_dump(saver))
    return ["fit", *RECIPE, "--config", str(root / "saver.yaml"),
            "--model.init_args.backbone", "tiny-llama", "--model.init_args.method.init_args.dropout", "0.0",
            "--model.init_args.optimizer.init_args.lr", str(LR),
            # tiny-llama's LoRA matrices have 256-512 elements; AdamW8bit keeps tensors under min_8bit_size (4096) in 32 bit
            "--model.init_args.optimizer.init_args.min_8bit_size", "256",
            "--data.init_args.bucket_by_length", "false", "--data.init_args.max_train_examples", "8",
            "--data.init_args.max_eval_examples", "4", "--data.init_args.batch_size", str(batch_size),
            "--data.init_args.max_length", "10",  # every TREC question is longer: no padding, the same shapes per row
            "--trainer.max_steps", str(STEPS), "--trainer.val_check_interval", "1.0",
            "--trainer.check_val_every_n_epoch", "1", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
            "--trainer.precision", "32-true", *(["--trainer.strategy", "auto"] if devices == 1 else []),
            "--trainer.default_root_dir", str(root), "--test_before_fit", "false", "--test_after_fit", "false"]


def _checkpoint(root: Path, step: int) -> dict:
    return torch.load(root / "ckpt" / f"step={step}.ckpt", map_location="cpu", weights_only=True)


def _dtypes(state) -> set[torch.dtype]:
    """The dtypes of the tensors in one parameter's optimizer state (bitsandbytes nests its quantized ones)."""
    if isinstance(state, dict):
        return set().union(*map(_dtypes, state.values()))
    return {state.dtype} if isinstance(state, torch.Tensor) else set()


def _fit_two_processes(root: Path) -> None:
    # A fresh launch, as from a new shell: inherited LOCAL_RANK/WORLD_SIZE would make Lightning skip starting rank 1.
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    args = _args(root, 2, 4)
    with open(root / "output.log", "w") as log:  # own session: rank 0 and the rank 1 it starts are killed as one group
        process = subprocess.Popen([sys.executable, "-m", "lightning_peft.cli", *args], cwd=root, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = process.wait(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    assert code == 0, f"exit status {code} (-9: killed after {RUN_SECONDS} s):\n" + (root / "output.log").read_text()[-3000:]


def _assert_close(ddp: dict, single: dict, **tolerance) -> None:
    assert set(single["state_dict"]) == set(ddp["state_dict"])
    for name, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][name], value, **tolerance, msg=lambda m: f"{name}: {m}")


@pytest.mark.multiprocess
@pytest.mark.timeout(700)
def test_int8_base_with_8bit_adamw_on_two_ddp_processes_matches_one_process(tmp_path):
    _fit_two_processes(tmp_path / "ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each DDP rank (OMP_NUM_THREADS=1)
    try:
        main(_args(tmp_path / "single", 1, 8))  # in this process: one import of torch and Lightning fewer
    finally:
        torch.set_num_threads(threads)

    single, ddp = _checkpoint(tmp_path / "single", STEPS), _checkpoint(tmp_path / "ddp", STEPS)
    for ckpt in (single, ddp):
        assert ckpt["global_step"] == STEPS and ckpt["hyper_parameters"]["quantization"] == "int8"
        states = list(ckpt["optimizer_states"][0]["state"].values())
        assert states and all(torch.uint8 in _dtypes(state) for state in states)  # 8-bit AdamW state for every tensor
    assert len(ddp["rng_states_per_rank"]) == 2  # both ranks trained
    assert any("lora_B" in name and value.abs().max() > LR for name, value in single["state_dict"].items())  # trained

    for step in range(1, STEPS + 1):
        _assert_close(_checkpoint(tmp_path / "ddp", step), _checkpoint(tmp_path / "single", step), rtol=1e-4, atol=1e-5)
