"""DDP over 2 CPU processes (gloo) trains exactly like 1 process at the same global batch.

The equivalence that holds exactly: with 8 training examples, every optimizer step of
1 process x batch 8 and of 2 processes x batch 4 sees the same 8 examples (one batch per epoch),
and DDP averages the two ranks' mean losses' gradients, which equals the gradient of the mean
over all 8. So after the same number of AdamW steps the adapter weights agree up to float
rounding (reduction order), and so do the validation/test metrics, which torchmetrics and
`sync_dist` reduce across ranks. With more examples per epoch the two runs would batch
different examples together (DistributedSampler interleaves indices), so that is not asserted.
Dropout is off because each process draws its own masks. Checked for LoRA and for HFT (full
fine-tuning with the HalfFineTuning callback: both ranks must draw the same half at each stage).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_peft.cli.launch_env import LAUNCH_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
STEPS = {"lora": 3, "hft": 2}  # HFT: two stages of one step
RUN_SECONDS = 400  # a normal run takes 25-45 s on 2 cores; a busy machine can triple that


# HFT: full fine-tuning with the HalfFineTuning callback, one stage per epoch (one step per epoch
# here), on the quickstart's data and verbalizer task. Freeze mode needs DDP to tolerate the
# frozen half's missing gradients, hence the strategy.
HFT_OVERRIDE = """
trainer:
  max_epochs: 2
  callbacks:
    - class_path: lightning_peft.callbacks.HalfFineTuning
      init_args: {every_n_epochs: 1, mode: freeze, seed: 0}
model:
  class_path: lightning_peft.modules.SelectiveModule
  init_args:
    backbone: tiny-llama
    method: lightning_peft.methods.FullFineTuning
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.001, weight_decay: 0.0}
"""
CASES = {
    "lora": (["--model.init_args.method.init_args.dropout", "0.0", "--model.init_args.optimizer.init_args.lr", "0.05"],
             "ddp", "lora_B"),
    "hft": ([], "ddp_find_unused_parameters_true", "_proj.weight"),
}


def _fit(root: Path, devices: int, batch_size: int, case: str) -> subprocess.Popen:
    overrides, strategy, _ = CASES[case]
    configs = ["--config", str(ROOT / "configs/quickstart.yaml")]
    if case == "hft":
        (root / "hft.yaml").write_text(HFT_OVERRIDE)
        configs += ["--config", str(root / "hft.yaml")]
    args = [
        sys.executable, "-m", "lightning_peft.cli", "fit", *configs,
        "--model.init_args.backbone", "tiny-llama", *overrides,
        "--data.init_args.bucket_by_length", "false",
        "--data.init_args.max_train_examples", "8",
        "--data.init_args.max_eval_examples", "16",
        "--data.init_args.batch_size", str(batch_size),
        "--data.init_args.eval_batch_size", "4",
        "--trainer.max_steps", str(STEPS[case]), "--trainer.val_check_interval", "1.0",
        "--trainer.check_val_every_n_epoch", "1",  # the recipe counts steps; here: validate at each epoch end
        "--trainer.limit_val_batches", "1.0", "--trainer.enable_progress_bar", "false",
        "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        # fp32: gradient averaging over 2 x 4 equals one batch of 8 only up to rounding, which bf16 autocast
        # (the "auto" default on a CPU with avx512_bf16) makes larger than this test's tolerance
        "--trainer.precision", "32-true",
        "--trainer.default_root_dir", str(root), "--test_before_fit", "false",
    ]
    if devices > 1:
        args += ["--trainer.strategy", strategy]  # Lightning picks gloo on CPU
    # A fresh launch, as from a new shell: inherited LOCAL_RANK/WORLD_SIZE would make Lightning skip
    # starting rank 1 (an outside launcher is assumed), and the CLI refuses that mismatch.
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    with open(root / "output.log", "w") as log:  # a file, not a pipe: the two runs go concurrently
        # Own session: a run that does not end (rank 0 plus the rank 1 it launched) is killed as one group.
        return subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(process: subprocess.Popen, root: Path) -> tuple[dict, dict]:
    """(metrics.json, the checkpoint) of a finished run."""
    try:
        process.wait(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the run did not finish in {RUN_SECONDS} s:\n" + (root / "output.log").read_text()[-3000:])
    assert process.returncode == 0, (root / "output.log").read_text()[-3000:]
    run = root / "lightning_logs" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    (ckpt,) = (run / "checkpoints").glob("last.ckpt")
    return metrics, torch.load(ckpt, map_location="cpu", weights_only=True)


def _trained(name: str, value: torch.Tensor, case: str, base: dict[str, torch.Tensor]) -> bool:
    if case == "lora":
        return bool(value.abs().max() > 1e-3)  # lora_B starts at zero
    return not torch.equal(value, base[name.removeprefix("model.")])


@pytest.mark.multiprocess
@pytest.mark.timeout(700)
@pytest.mark.parametrize("case", ["lora", "hft"])
def test_ddp_two_cpu_processes_match_one_process(tmp_path, case):
    single_root, ddp_root = tmp_path / "single", tmp_path / "ddp"
    single_root.mkdir(), ddp_root.mkdir()
    processes = [_fit(single_root, 1, 8, case), _fit(ddp_root, 2, 4, case)]
    single_metrics, single_ckpt = _finish(processes[0], single_root)
    ddp_metrics, ddp_ckpt = _finish(processes[1], ddp_root)
    single_state, ddp_state = single_ckpt["state_dict"], ddp_ckpt["state_dict"]
    # each rank's generator state is saved, so a resumed rank 1 draws its own dropout masks, not rank 0's
    assert "rng_states_per_rank" not in single_ckpt and len(ddp_ckpt["rng_states_per_rank"]) == 2

    assert single_metrics["fit"]["global_step"] == ddp_metrics["fit"]["global_step"] == STEPS[case]
    marker = CASES[case][2]
    assert set(single_state) == set(ddp_state) and any(marker in k for k in single_state)
    base = {}
    if case == "hft":
        from transformers import AutoModelForCausalLM

        from lightning_peft import zoo

        base = AutoModelForCausalLM.from_pretrained(zoo.resolve("tiny-llama")).state_dict()
    trained = [name for name, value in single_state.items() if marker in name and _trained(name, value, case, base)]
    assert trained, f"no {marker} weight trained; the comparison would be vacuous"
    for name, value in single_state.items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    for stage in ("fit", "test"):
        for key, value in single_metrics[stage].items():
            if key.startswith(("val/", "test/")):
                assert ddp_metrics[stage][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (stage, key)
