"""Reuse freed memory across CPU training steps instead of faulting it in from the kernel every step.

Every training step allocates and frees the same large buffers: activations, logits and their
gradients. On Linux, glibc's `malloc` hands a freed block back to the kernel when it was mapped on
its own (blocks above the mmap threshold: 128 KiB, rising with use to at most 32 MiB) or when the
free top of the heap grows past the trim threshold. The next step asks again, and the kernel
zero-fills and maps every 4 KiB page on first touch: a minor page fault each. With SmolLM2-135M,
LoRA and batches of 8 that is 340,000-880,000 faults in 8 steps (`docs/performance.md`), paid by
the kernel and by the memory-bound operators that write fresh buffers (`mul`, `add`, `fill_`, `silu`).

`CpuAllocatorCache` does on a CPU what PyTorch's caching allocator does on a GPU: while a stage
runs on a CPU it tells glibc to keep freed memory (no separately mapped blocks, no trimming), so
later steps reuse it. The memory is not returned between steps, and the peak can rise because a
reused heap fragments: 3-4% in the SmolLM2 benchmark, 1.44x where memory is almost all logits of
very differently sized batches (tiny-llama on long_sft; `docs/performance.md`, "GPU"). When the
stage ends, or fails, it returns the free memory to the kernel (`malloc_trim`) and sets glibc's
default values back (glibc then keeps its mmap threshold fixed instead of adjusting it).

Only glibc (Linux) has these controls; elsewhere the callback warns once and changes nothing.
The same is possible for a whole process with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1`
(`KEEP_FREED_ENV`) or by preloading jemalloc or tcmalloc; where the environment already sets
when glibc returns memory (`MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_`, ... or `GLIBC_TUNABLES`),
the callback leaves it alone.
"""

from __future__ import annotations

import ctypes
import os

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

# glibc's mallopt parameters (malloc.h) and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
# the same settings for a whole process, through the environment
KEEP_FREED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "-1"}


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_SETTINGS = ("mmap_max", "trim_threshold", "mmap_threshold", "top_pad")  # what decides when memory goes back


def malloc_set_by_environment() -> list[str]:
    """The environment variables that already decide when glibc's malloc returns memory in this process."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return sorted([f"MALLOC_{name.upper()}_" for name in _SETTINGS if f"MALLOC_{name.upper()}_" in os.environ]
                  + (["GLIBC_TUNABLES"] if any(f"glibc.malloc.{name}=" in tunables for name in _SETTINGS) else []))


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (no mmap'd blocks, no trimming); False where it cannot."""
    libc = _glibc()
    if libc is None:
        return False
    if libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1:
        return True
    release_freed_memory()  # one setting taken and the other refused: undo it
    return False


def release_freed_memory() -> bool:
    """Return free heap memory to the kernel and set glibc's default mmap and trim values back."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD) == 1


class CpuAllocatorCache(L.Callback):
    """Keep memory freed by CPU training steps in the process (glibc), so the next step reuses it without page faults.

    Applies from `setup` to `teardown` (or a failure) of each stage whose root device is a CPU. On a
    GPU it does nothing (PyTorch caches GPU memory itself), nor where the environment already sets
    glibc's malloc. `lightning-peft` adds it to every subcommand (`--cpu_allocator.enabled`).

    Args:
        enabled: Keep freed memory while a stage runs on a CPU: faster steps, but a higher peak RSS
            where batch sizes vary widely (the kept heap fragments). Off: glibc's defaults, which
            return freed blocks to the kernel and fault them in again on the next step.

    Example::

        trainer = Trainer(accelerator="cpu", callbacks=[CpuAllocatorCache()])
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or trainer.strategy.root_device.type != "cpu" or self.active:
            return
        preset = malloc_set_by_environment()
        if preset:
            rank_zero_info(f"CpuAllocatorCache: the environment sets glibc's malloc ({', '.join(preset)}); left as it is.")
            self.enabled = False
            return
        self.active = keep_freed_memory()
        if not self.active:
            rank_zero_warn("CpuAllocatorCache: this C library is not glibc or refused its mallopt settings, so freed "
                           "CPU memory is returned to the system as usual; drop the callback (lightning-peft: "
                           "--cpu_allocator.enabled false) to silence this.")
            self.enabled = False

    def _release(self) -> None:
        if self.active:
            release_freed_memory()
            self.active = False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release()  # Lightning does not call teardown when a stage fails
