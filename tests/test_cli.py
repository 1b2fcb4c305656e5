"""CLI behaviour around quantization, strategies and 8-bit optimizers (CPU-only machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_peft import quantization as quant
from lightning_peft.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def _args(root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", QUICKSTART, "--model.init_args.backbone", "tiny-llama",
            "--data.init_args.max_train_examples", "8", "--data.init_args.max_eval_examples", "8",
            "--data.init_args.batch_size", "4", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
            "--trainer.enable_progress_bar", "false", "--test_before_fit", "false", "--test_after_fit", "false",
            "--trainer.default_root_dir", str(root), *extra]


def _error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")][-1]


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_stage_2", "lightning.pytorch.strategies.FSDPStrategy"])
def test_quantized_base_with_sharding_strategy_fails_at_parse_time(capsys, tmp_path, strategy):
    message = _error(capsys, _args(tmp_path, "--trainer.strategy", strategy, "--model.init_args.quantization", "int8"))
    assert "int8-quantized base cannot be sharded" in message and "use strategy 'ddp'" in message
    assert not list(tmp_path.rglob("*"))  # not even a config.yaml: nothing was instantiated


def test_strategy_conflict_is_reported_before_missing_support(capsys, tmp_path, monkeypatch):
    # Both problems present: the strategy conflict is the one that holds on every machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(quant, "_bitsandbytes_version", lambda: (0, 45))
    message = _error(capsys, _args(tmp_path, "--trainer.strategy", "fsdp", "--model.init_args.quantization", "nf4"))
    assert "cannot be sharded" in message


def test_quantization_without_cuda_needs_a_cpu_capable_bitsandbytes(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(quant, "_bitsandbytes_version", lambda: (0, 45))
    message = _error(capsys, _args(tmp_path, "--model.init_args.quantization", "nf4"))
    assert "without a CUDA GPU needs bitsandbytes>=0.50 (installed: 0.45)" in message and "upgrade bitsandbytes" in message
    monkeypatch.setattr(quant, "_bitsandbytes_version", lambda: None)
    assert "pip install bitsandbytes" in _error(capsys, _args(tmp_path, "--model.init_args.quantization", "nf4"))


def test_fsdp_without_quantization_on_cpu_gets_lightnings_message(capsys, tmp_path):
    # No conflict of ours: Lightning's own (one-sentence) check about the accelerator applies, printed as our error line.
    assert "requires a GPU accelerator" in _error(capsys, _args(tmp_path, "--trainer.strategy", "fsdp"))


def test_setup_rejects_sharding_strategy_outside_the_cli():
    with pytest.raises(quant.QuantizationError, match="cannot be sharded by strategy 'DeepSpeedStrategy'"):
        quant.check_strategy("nf4", "DeepSpeedStrategy")  # what FineTuneModule.setup passes
    quant.check_strategy("nf4", "DDPStrategy")
    quant.check_strategy(None, "FSDPStrategy")
    assert quant.strategy_name({"class_path": "lightning.pytorch.strategies.FSDPStrategy"}) == "FSDPStrategy"


def _adapter_only(root: Path) -> dict[str, torch.Tensor]:
    (ckpt,) = root.rglob("last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state), sorted(state)[:5]
    return state


def _tensors(value):
    """Every tensor in a (nested) optimizer state entry."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_quantized_base_trains_on_cpu(tmp_path, kind):
    """bitsandbytes 0.50 runs int8/nf4 on a CPU; the checkpoint still holds the adapter only."""
    main(_args(tmp_path, "--config", str(ROOT / f"configs/quantization/{kind}.yaml")))
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["fit"]["global_step"] == 2
    state = _adapter_only(tmp_path)
    assert any(v.abs().max() > 0 for k, v in state.items() if "lora_B" in k)  # B starts at zero: it trained


def test_adamw8bit_trains_on_cpu(tmp_path):
    """bitsandbytes 0.50's AdamW8bit steps on a CPU (8-bit state); the recipe snippet works as is."""
    # bitsandbytes keeps 32-bit state for tensors under min_8bit_size (4096); tiny-llama's LoRA tensors are 512.
    main(_args(tmp_path, "--config", str(ROOT / "configs/optimizer/adamw8bit.yaml"),
               "--model.init_args.optimizer.init_args.min_8bit_size", "256"))
    (ckpt,) = tmp_path.rglob("last.ckpt")
    optimizer_state = torch.load(ckpt, map_location="cpu", weights_only=True)["optimizer_states"][0]["state"]
    tensors = [t for s in optimizer_state.values() for t in _tensors(s)]
    assert any(t.dtype == torch.uint8 for t in tensors), {t.dtype for t in tensors}
    _adapter_only(tmp_path)


def test_top_level_optimizer_is_refused_with_the_option_that_works(capsys, tmp_path):
    with pytest.raises(SystemExit) as error:
        main(_args(tmp_path, "--optimizer", "torch.optim.AdamW"))
    assert "use --model.optimizer" in str(error.value) and not list(tmp_path.rglob("*"))


def test_bare_optimizer_and_scheduler_names_mean_torchs(capsys, tmp_path):
    with pytest.raises(SystemExit):  # --print_config prints and exits
        main(_args(tmp_path, "--model.optimizer", "AdamW", "--model.optimizer.lr", "0.01",
                   "--model.lr_scheduler=StepLR", "--model.lr_scheduler.step_size", "1", "--print_config"))
    printed = capsys.readouterr().out
    assert "class_path: torch.optim.AdamW" in printed and "class_path: torch.optim.lr_scheduler.StepLR" in printed
    assert "lr: 0.01" in printed


def test_backbone_of_the_wrong_architecture_gets_one_sentence(capsys, tmp_path):
    message = _error(capsys, _args(tmp_path, "--model.init_args.backbone", "tiny-t5"))
    assert "is a t5 model" in message and "AutoModelForCausalLM" in message and "tiny-llama" in message
