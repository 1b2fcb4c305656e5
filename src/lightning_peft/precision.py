"""Precision "auto": bf16 autocast where the device computes bfloat16 natively, else full fp32.

bf16 autocast (Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training",
https://arxiv.org/abs/1905.12322) keeps fp32 master weights and runs matmuls in bfloat16; its
8-bit exponent needs no loss scaling. It pays off only where the hardware has bf16 instructions:
on a CPU without them PyTorch emulates bf16 through fp32 conversions, which is slower than fp32,
so such a CPU never gets it. Native means:

- a CUDA GPU for which `torch.cuda.is_bf16_supported()` holds (Ampere and later);
- an x86 CPU with AVX512-BF16 (`avx512_bf16`) or AMX (`amx_bf16`) among the flags of
  /proc/cpuinfo (Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later). torch 2.13 has no
  public query for these (only private `torch.cpu._is_avx512_bf16_supported`), so the kernel's
  flags are read; where they cannot be read (not Linux), the CPU keeps fp32.

Anything else (Apple MPS, a custom accelerator object, ARM CPUs) keeps 32-true: auto only ever
picks bf16 where it was checked to be native. An explicit precision is never changed.

Without the CLI: `lightning.Trainer(precision=auto_precision())`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"
CPUINFO = Path("/proc/cpuinfo")  # module-level so tests can point it at a fake CPU
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The Trainer precision "auto" resolved to, and the reason in words (for the start-up line)."""

    precision: str
    reason: str

    def line(self) -> str:
        """The one line the CLI prints at start-up."""
        return (f"Precision: {self.precision} ({self.reason}); "
                "set --trainer.precision (e.g. 32-true or bf16-mixed) to choose another.")


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str] | None:
    """The CPU feature flags the kernel reports (the first `flags` line of /proc/cpuinfo), or None where unreadable."""
    path = CPUINFO if cpuinfo is None else cpuinfo
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def cpu_choice(cpuinfo: Path | None = None) -> PrecisionChoice:
    """bf16-mixed on a CPU with AVX512-BF16 or AMX, else 32-true, with the reason."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return PrecisionChoice(FP32, "CPU flags unreadable (no /proc/cpuinfo), so native bf16 is not known")
    native = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags]
    if native:
        return PrecisionChoice(BF16, f"this CPU computes bf16 natively: {', '.join(native)}")
    return PrecisionChoice(FP32, "this CPU has neither avx512_bf16 nor amx_bf16, so bf16 would be emulated and slower")


def cuda_choice() -> PrecisionChoice:
    """bf16-mixed on a CUDA GPU that supports bf16 (Ampere and later), else 32-true."""
    name = torch.cuda.get_device_name()
    if torch.cuda.is_bf16_supported():
        return PrecisionChoice(BF16, f"the GPU {name} supports bf16")
    return PrecisionChoice(FP32, f"the GPU {name} lacks native bf16 (use 16-mixed for fp16 autocast)")


def choose_precision(accelerator: str = "auto") -> PrecisionChoice:
    """What precision "auto" means on the device `accelerator` names (Lightning's accelerator names).

    "auto" and "gpu"/"cuda" take the CUDA GPU when there is one, as Lightning does; "cpu" the CPU;
    any other accelerator (mps, tpu, ...) keeps 32-true, since native bf16 was not checked there.
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return cuda_choice()
    if accelerator in ("auto", "cpu"):
        return cpu_choice()
    return PrecisionChoice(FP32, f"bf16 support is not checked for accelerator {accelerator!r}")


def auto_precision(accelerator: str = "auto") -> str:
    """The precision string for `lightning.Trainer(precision=...)`: "bf16-mixed" where native, else "32-true"."""
    return choose_precision(accelerator).precision
