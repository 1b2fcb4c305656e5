"""Silence the named third-party notices that every `lightning-peft` command used to start with.

None of these says anything about the user's run, and each one hid the lines that do:

- bitsandbytes, on a CPU with AVX512-BF16, logs at import (peft imports it) that it could not load
  an optional kernel from the `kernels` package; it then uses its own CPU kernel.
- Lightning warns that `tensorboardX` is no longer its dependency whenever `logger=True` falls
  back to the CSV logger, and logs two "💡 Tip" adverts (litlogger, litmodels) on every run.
- Lightning's model summary warns under `bf16-mixed` (precision `auto` on a bf16 CPU or GPU) that
  it does not know the precision and counts 32 bits per parameter, which is right for mixed
  precision: its weights stay fp32.
- Deprecations inside the libraries, not in our calls: peft reads transformers'
  `is_gradient_checkpointing` (FutureWarning) and Lightning builds torch's `LeafSpec`
  (FutureWarning); the user can do nothing about either.

Each is matched by its exact logger and message prefix (log records) or message and category
(warnings), so the same libraries' other messages, our own warnings and every error still show.
`silence_third_party_noise` must run before those libraries are imported (a logger's filter is
attached to the logger object, which `logging.getLogger` creates before its module asks for it).
`LIGHTNING_PEFT_DEBUG=1` (any non-empty value) leaves everything visible.
"""

from __future__ import annotations

import logging
import os
import warnings

DEBUG_VARIABLE = "LIGHTNING_PEFT_DEBUG"

# (logger name, message prefix): log records dropped. Lightning's rank_zero_info logs through the
# logger of whichever of its rank_zero modules was imported last, so both are listed.
LOG_NOISE: tuple[tuple[str, str], ...] = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud"),
    ("lightning.fabric.utilities.rank_zero", "💡 Tip: For seamless cloud"),
)

# (message regex matched at the start of the warning's text, category): warnings ignored.
WARNING_NOISE: tuple[tuple[str, type[Warning]], ...] = (
    (r"Starting from v1\.9\.0, `tensorboardX` has been removed as a dependency", UserWarning),
    (r"`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"Precision bf16-mixed is not supported by the model summary", UserWarning),
)


class _DropByPrefix(logging.Filter):
    """Drops the records of one logger whose formatted message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


_installed = False


def silence_third_party_noise() -> None:
    """Install the log filters and warning filters above, once per process (no-op under LIGHTNING_PEFT_DEBUG)."""
    global _installed
    if _installed or os.environ.get(DEBUG_VARIABLE):
        return
    _installed = True
    for logger_name, prefix in LOG_NOISE:
        logging.getLogger(logger_name).addFilter(_DropByPrefix(prefix))
    for message, category in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
