"""CpuAllocatorCache: CPU steps stop faulting their buffers in again, and the process is left as it was found.

The measurement runs in a child process, so the allocator settings under test never touch pytest's own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from lightning_peft.callbacks import cpu_allocator
from lightning_peft.callbacks.cpu_allocator import CpuAllocatorCache

GLIBC = cpu_allocator._glibc() is not None

# A module whose every step allocates, touches and frees 64 MiB buffers (16,384 pages of 4 KiB each;
# the forward and backward passes make several), as a language model's logits do; a callback counts
# the minor page faults of each step.
CHILD = textwrap.dedent('''
    import json, resource, sys
    import lightning as L, torch
    from lightning_peft.callbacks import CpuAllocatorCache

    class Buffers(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
        def training_step(self, batch, batch_idx):
            return (torch.ones(16 * 2**20) * self.w).mean()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)
        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.zeros(12, 1), batch_size=1)

    class Faults(L.Callback):
        def __init__(self):
            self.steps = []
        def on_train_batch_start(self, *args):
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        def on_train_batch_end(self, *args):
            self.steps.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.start)

    def resident_mib():
        with open("/proc/self/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0]) / 1024

    faults = Faults()
    callbacks = [faults] + ([CpuAllocatorCache()] if sys.argv[1] == "on" else [])
    trainer = L.Trainer(accelerator="cpu", max_steps=12, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(Buffers())
    print(json.dumps({"steps": faults.steps, "resident_after_fit_mib": resident_mib()}))
''')


def _faults(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt is what the callback sets; this C library has none")
def test_steps_reuse_freed_memory_and_it_is_returned_after_fit():
    on, off = _faults("on"), _faults("off")
    pages = 64 * 2**20 // 4096
    # Without the callback glibc maps each 64 MiB buffer afresh: its pages fault in again, every step.
    assert statistics.median(off["steps"][2:]) >= pages
    # With it, steps reuse what the previous step freed. Some steps still grow the heap by a buffer or
    # more, when small allocations have settled in the freed block (seen in up to half the steps), so
    # the check is on the total: at most a third of the faults.
    assert min(on["steps"][2:]) < pages * 0.05
    assert sum(on["steps"][2:]) < sum(off["steps"][2:]) / 3
    # Teardown hands the kept memory back: the process is no larger after fit than without the callback.
    assert on["resident_after_fit_mib"] < off["resident_after_fit_mib"] + 32


class _Recorder:
    def __init__(self):
        self.calls = []

    def keep(self):
        self.calls.append("keep")
        return True

    def release(self):
        self.calls.append("release")
        return True


def _trainer(device: str):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


@pytest.fixture
def recorder(monkeypatch):
    calls = _Recorder()
    monkeypatch.setattr(cpu_allocator, "keep_freed_memory", calls.keep)
    monkeypatch.setattr(cpu_allocator, "release_freed_memory", calls.release)
    return calls


def test_applies_from_setup_to_teardown_on_cpu_only(recorder):
    callback = CpuAllocatorCache()
    callback.setup(_trainer("meta"), None, "fit")  # not a CPU (a GPU caches its own memory)
    assert recorder.calls == []
    callback.setup(_trainer("cpu"), None, "fit")
    callback.setup(_trainer("cpu"), None, "fit")  # applied once
    assert recorder.calls == ["keep"]
    callback.teardown(_trainer("cpu"), None, "fit")
    callback.teardown(_trainer("cpu"), None, "fit")
    assert recorder.calls == ["keep", "release"]


def test_a_failed_stage_gives_the_memory_back(recorder):
    callback = CpuAllocatorCache()
    callback.setup(_trainer("cpu"), None, "fit")
    callback.on_exception(_trainer("cpu"), None, RuntimeError("step failed"))  # Lightning skips teardown then
    assert recorder.calls == ["keep", "release"]


def test_failing_fit_releases_through_lightning(recorder, tmp_path):
    class Failing(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_idx):
            raise RuntimeError("step failed")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.zeros(2, 1))

    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[CpuAllocatorCache()])
    with pytest.raises(RuntimeError, match="step failed"):
        trainer.fit(Failing())
    assert recorder.calls == ["keep", "release"]


def test_malloc_settings_from_the_environment_are_left_alone(recorder, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # a malloc setting the callback does not touch
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "-1")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
    callback = CpuAllocatorCache()
    callback.setup(_trainer("cpu"), None, "fit")
    callback.teardown(_trainer("cpu"), None, "fit")
    assert recorder.calls == [] and cpu_allocator.malloc_set_by_environment() == ["GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_"]


def test_disabled_changes_nothing(recorder):
    callback = CpuAllocatorCache(enabled=False)
    callback.setup(_trainer("cpu"), None, "fit")
    callback.teardown(_trainer("cpu"), None, "fit")
    assert recorder.calls == []


def test_without_glibc_it_says_so_once_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(cpu_allocator, "_glibc", lambda: None)
    callback = CpuAllocatorCache()
    with pytest.warns(UserWarning, match="not glibc or refused"):
        callback.setup(_trainer("cpu"), None, "fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.setup(_trainer("cpu"), None, "validate")  # no second warning: the callback switched itself off
    callback.teardown(_trainer("cpu"), None, "fit")
    assert not callback.enabled and not callback.active
