"""Precision "auto" (issue 22): bf16-mixed only where the device computes bf16 natively, explicit precision wins."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from lightning_peft import precision
from lightning_peft.cli import LightningPeftCLI, main
from lightning_peft.cli.trainer import Trainer
from lightning_peft.modules import FineTuneModule

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
FP32_SNIPPET = str(ROOT / "configs" / "trainer" / "fp32.yaml")

# The flags line of a real /proc/cpuinfo, trimmed: an AVX-512 CPU without bf16 (Skylake-SP), and the same with it.
SKYLAKE = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512vl\n"
COOPER_LAKE = SKYLAKE.replace("avx512vl", "avx512vl avx512_bf16")
SAPPHIRE_RAPIDS = SKYLAKE.replace("avx512vl", "avx512vl amx_bf16 amx_tile")


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    """Point the detection at a cpuinfo text of our choosing, on a machine without a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def use(text: str | None) -> None:
        path = tmp_path / "cpuinfo"
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", path)  # a missing file when text is None

    return use


def test_cpu_without_native_bf16_keeps_fp32(fake_cpu):
    fake_cpu(SKYLAKE)
    choice = precision.choose_precision()
    assert choice.precision == "32-true" and "neither avx512_bf16 nor amx_bf16" in choice.reason


@pytest.mark.parametrize("cpuinfo, flag", [(COOPER_LAKE, "avx512_bf16"), (SAPPHIRE_RAPIDS, "amx_bf16")])
def test_cpu_with_native_bf16_gets_bf16_mixed(fake_cpu, cpuinfo, flag):
    fake_cpu(cpuinfo)
    choice = precision.choose_precision("cpu")
    assert choice.precision == "bf16-mixed" and flag in choice.reason
    assert precision.auto_precision() == "bf16-mixed"


def test_unreadable_cpu_flags_and_unchecked_accelerators_keep_fp32(fake_cpu):
    fake_cpu(None)
    assert precision.choose_precision().precision == "32-true"
    fake_cpu(COOPER_LAKE)
    assert precision.choose_precision("mps").precision == "32-true"
    assert precision.choose_precision("gpu").precision == "32-true"  # no GPU here: nothing was checked


def test_cuda_gpu_follows_torch_bf16_support(monkeypatch, fake_cpu):
    fake_cpu(SKYLAKE)  # the CPU must not matter once a GPU is there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Fake A100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert precision.choose_precision().precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert precision.choose_precision("cuda").precision == "32-true"


def _trainer(**kwargs) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_trainer_auto_on_a_cpu_without_bf16_is_full_precision_and_says_so(fake_cpu, capsys):
    fake_cpu(SKYLAKE)
    trainer = _trainer()
    assert type(trainer.precision_plugin) is Precision and trainer.precision == "32-true"
    err = capsys.readouterr().err
    assert err.count("Precision: 32-true (this CPU has neither avx512_bf16 nor amx_bf16") == 1


def test_trainer_auto_on_a_bf16_cpu_autocasts_in_bf16(fake_cpu, capsys):
    fake_cpu(COOPER_LAKE)
    trainer = _trainer(precision="auto")
    assert isinstance(trainer.precision_plugin, MixedPrecision) and trainer.precision == "bf16-mixed"
    assert "Precision: bf16-mixed (this CPU computes bf16 natively: avx512_bf16)" in capsys.readouterr().err


def test_explicit_precision_wins_silently(fake_cpu, capsys):
    fake_cpu(COOPER_LAKE)
    assert _trainer(precision="32-true").precision == "32-true"
    fake_cpu(SKYLAKE)
    assert _trainer(precision="bf16-mixed").precision == "bf16-mixed"  # the user asked: no second-guessing
    assert "Precision:" not in capsys.readouterr().err


def _cli(root: Path, *args: str) -> LightningPeftCLI:
    """The quickstart on tiny-llama as `lightning-peft fit` builds it (our Trainer), without running it."""
    return LightningPeftCLI(FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                            trainer_class=Trainer, run=False,
                            args=["--config", QUICKSTART, *args, "--model.init_args.backbone", "tiny-llama",
                                  "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)])


def test_cli_default_is_auto_and_a_yaml_pin_wins(fake_cpu, capsys, tmp_path):
    fake_cpu(SKYLAKE)
    assert _cli(tmp_path).trainer.precision == "32-true"
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Precision:")]
    assert lines == ["Precision: 32-true (this CPU has neither avx512_bf16 nor amx_bf16, so bf16 would be emulated "
                     "and slower); set --trainer.precision (e.g. 32-true or bf16-mixed) to choose another."]
    fake_cpu(COOPER_LAKE)
    assert _cli(tmp_path).trainer.precision == "bf16-mixed"
    assert _cli(tmp_path, "--config", FP32_SNIPPET).trainer.precision == "32-true"  # configs/trainer/fp32.yaml pins it
    assert capsys.readouterr().err.count("Precision:") == 1  # the auto run only
    # "auto" on the command line over a YAML pin
    assert _cli(tmp_path, "--config", FP32_SNIPPET, "--trainer.precision", "auto").trainer.precision == "bf16-mixed"


def test_help_documents_auto(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert '--trainer.precision PRECISION "auto" (default): bf16-mixed where the device computes bfloat16 natively' in help_text
    assert "default: auto" in help_text
