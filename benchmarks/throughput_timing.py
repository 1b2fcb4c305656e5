"""One definition of tokens/s and peak memory for both arms of `benchmarks/throughput.py`.

Imports only torch, so the Hugging Face arm does not load Lightning (its peak RSS stays its own).

Definition: tokens/s = non-padding tokens of the batches trained in steps `warmup+1 .. last`
divided by the wall time from the end of step `warmup` to the end of the last step (the CUDA
queue drained at both ends). Everything a training loop does between those two moments counts:
data loading, collation, forward, backward, clipping, the optimizer, the loop's own bookkeeping.
Model loading, tokenization and the warm-up steps do not. Per step, tokens and losses are kept as
tensors and read once at the end, so measuring adds no device synchronisation.

Peak memory of training: when training starts, the process's RSS high-water mark (Linux
`/proc/self/clear_refs`) and CUDA's peak statistics are reset, so the peaks reported are those of
training (weights, optimizer state, activations, logits), not of loading a checkpoint (which maps
the file and copies it, briefly doubling the model's footprint); the loading peak is kept apart.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from throughput_profile import StepProfile


def batch_tokens(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Non-padding tokens of a batch: `attention_mask.sum()`, or every position of a packed batch (no mask)."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return mask.sum()
    return torch.tensor(batch["input_ids"].numel())


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepTimes:
    """Per-step records of one training run; `step_started(batch)` then `step_ended(loss)` for every optimizer step."""

    def __init__(self, warmup_steps: int, max_steps: int, profile_steps: int = 0) -> None:
        if not 1 <= warmup_steps < max_steps:
            raise ValueError(f"warmup_steps={warmup_steps} must be >= 1 and below the number of steps ({max_steps}).")
        if profile_steps and warmup_steps + profile_steps + 1 > max_steps:
            raise ValueError(f"profile_steps={profile_steps} needs {warmup_steps + profile_steps + 1} steps "
                             f"(warm-up, profiled, dtype census), not {max_steps}.")
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        # the first timed steps under torch.profiler, then a dtype census (see throughput_profile.py)
        self.profile = StepProfile(warmup_steps + 1, profile_steps) if profile_steps else None
        self.tokens: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.ends: list[float] = []
        self.usage: list[resource.struct_rusage] = []  # at the two ends of the timed window
        self.load_peak_rss: int | None = None

    def training_started(self) -> None:
        """Call once when training starts: from here on peak memory is that of training."""
        self.load_peak_rss = peak_rss_bytes()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the RSS high-water mark to the current RSS
        except OSError:
            pass  # not Linux: the peak then includes loading
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def step_started(self, batch: Mapping[str, torch.Tensor]) -> None:
        self.tokens.append(batch_tokens(batch).detach())
        if self.profile is not None:
            self.profile.step_started(len(self.ends) + 1)

    def step_ended(self, loss: torch.Tensor | None) -> None:
        step = len(self.ends) + 1
        if step in (self.warmup_steps, self.max_steps):
            _sync()  # only at the two ends of the timed window
            self.usage.append(resource.getrusage(resource.RUSAGE_SELF))
        self.ends.append(time.perf_counter())
        if loss is not None:
            self.losses.append(loss.detach())
        if self.profile is not None:
            self.profile.step_ended(step)

    def summary(self) -> dict[str, Any]:
        steps = len(self.ends)
        if steps <= self.warmup_steps:
            raise RuntimeError(f"Only {steps} steps ran, not more than the {self.warmup_steps} warm-up steps.")
        seconds = self.ends[-1] - self.ends[self.warmup_steps - 1]
        tokens = [int(t) for t in self.tokens[:steps]]
        timed = sum(tokens[self.warmup_steps:])
        return {"steps": steps, "timed_steps": steps - self.warmup_steps, "timed_tokens": timed,
                "timed_seconds": seconds, "tokens_per_sec": timed / seconds, "tokens_per_step": tokens,
                "losses": [float(loss) for loss in self.losses], "load_peak_rss_bytes": self.load_peak_rss,
                **self._cpu_usage(), **peak_memory(), **({"profile": self.profile.summary()} if self.profile else {})}

    def _cpu_usage(self) -> dict[str, float]:
        """What the process spent in the timed window: CPU seconds (user, kernel) and minor page faults.

        Kernel time and page faults show allocator churn (memory handed back to the OS and faulted in
        again every step), which costs the same whichever training loop runs.
        """
        if len(self.usage) < 2:
            return {}
        start, end = self.usage[0], self.usage[-1]
        return {"timed_user_seconds": end.ru_utime - start.ru_utime, "timed_system_seconds": end.ru_stime - start.ru_stime,
                "timed_minor_faults": end.ru_minflt - start.ru_minflt}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started.

    Read from `/proc/self/status` (VmHWM) on Linux: `getrusage(...).ru_maxrss` survives `exec`, so in a
    process started by a large parent (this driver holds torch and the tokenized data) it reports the
    parent's size at fork time instead of the child's own peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def peak_memory() -> dict[str, float]:
    """Peak resident set size of this process (bytes) and, on a GPU, the peak of allocated CUDA memory."""
    memory = {"peak_rss_bytes": float(peak_rss_bytes())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        memory["cuda_max_allocated_bytes"] = float(torch.cuda.max_memory_allocated())
    return memory


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=1))
