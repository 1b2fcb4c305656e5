"""The CLI's Trainer: Lightning's, with `precision` defaulting to "auto" (see `lightning_peft.precision`)."""

from __future__ import annotations

import sys
from typing import Literal

import lightning as L
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.accelerators import Accelerator

from ..precision import AUTO, choose_precision


@rank_zero_only
def _say(line: str) -> None:
    print(line, file=sys.stderr)


class Trainer(L.Trainer):
    """`lightning.Trainer` whose precision may be "auto", the default.

    Args:
        accelerator: as in `lightning.Trainer` ("cpu", "gpu", "mps", "auto" or an `Accelerator`); also the
            device whose bf16 support "auto" precision checks.
        precision: "auto" (default): bf16-mixed where the device computes bfloat16 natively (a CUDA
            GPU with bf16 support, a CPU with avx512_bf16 or amx_bf16), else 32-true; the choice and
            its reason are printed once at start-up. Any Lightning precision (32-true, bf16-mixed,
            16-mixed, bf16-true, ...) is used as given.
    """

    def __init__(self, *, accelerator: str | Accelerator = "auto",
                 precision: _PRECISION_INPUT | Literal["auto"] | None = AUTO, **kwargs) -> None:
        if precision == AUTO:
            # an Accelerator object (rather than a name) is not checked for bf16: it keeps 32-true
            choice = choose_precision(accelerator if isinstance(accelerator, str) else type(accelerator).__name__)
            _say(choice.line())
            precision = choice.precision
        super().__init__(accelerator=accelerator, precision=precision, **kwargs)
