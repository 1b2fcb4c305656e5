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
later steps reuse it. The memory is not returned between steps, and the peak can rise a little
(3-4% in the benchmark) because a reused heap fragments. When the stage ends it returns the free
memory to the kernel (`malloc_trim`) and restores glibc's default settings.

Only glibc (Linux) has these controls; elsewhere the callback warns once and changes nothing.
The same is possible for a whole process with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1` or
by preloading jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

# glibc's mallopt parameters (malloc.h) and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (no mmap'd blocks, no trimming); False where there is no glibc."""
    libc = _glibc()
    return bool(libc) and libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1


def release_freed_memory() -> bool:
    """Return free heap memory to the kernel and restore glibc's default mmap and trim settings."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD) == 1


class CpuAllocatorCache(L.Callback):
    """Keep memory freed by CPU training steps in the process (glibc), so the next step reuses it without page faults.

    Applies from `setup` to `teardown` of each stage whose root device is a CPU; on a GPU it does
    nothing (PyTorch caches GPU memory itself). `lightning-peft fit` adds it (`cpu_allocator.enabled`).

    Args:
        enabled: Keep freed memory while a stage runs on a CPU. Off: glibc's defaults, which return
            freed blocks to the kernel and fault them in again on the next step.

    Example::

        trainer = Trainer(accelerator="cpu", callbacks=[CpuAllocatorCache()])
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or trainer.strategy.root_device.type != "cpu" or self.active:
            return
        self.active = keep_freed_memory()
        if not self.active:
            rank_zero_warn("CpuAllocatorCache: this C library is not glibc or refused its mallopt settings, so freed "
                           "CPU memory is returned to the system as usual; drop the callback (lightning-peft fit: "
                           "--cpu_allocator.enabled false) to silence this.")
            self.enabled = False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.active:
            release_freed_memory()
            self.active = False
