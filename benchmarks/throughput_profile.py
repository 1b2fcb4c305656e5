"""Where a training step's CPU time goes, the same way in both arms of `benchmarks/throughput.py --profile-steps N`.

Imports only torch (the peer arm must not load Lightning). `StepTimes` drives it: the first N timed
steps run under `torch.profiler` (operator counts and self CPU time, as `key_averages()` reports
them), and the step after them under a dispatch mode that records each operator's output dtype and
size (below autocast, so the casts autocast inserts show as `aten::_to_copy`). The profiler's own
overhead makes these runs useless for tokens/s: profile in a separate invocation from timing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operators reported by name even when they are not among the most expensive: matmuls, the casts, the loss.
WATCHED = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::to", "aten::_to_copy",
           "aten::copy_", "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
           "aten::cross_entropy_loss", "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::mul", "aten::add")
# Views and aliases allocate nothing and compute nothing: left out of the dtype census.
VIEWS = frozenset({"view", "_unsafe_view", "detach", "t", "reshape", "alias", "expand", "permute", "transpose",
                   "as_strided", "slice", "select", "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind",
                   "narrow", "chunk"})


class DtypeCensus(TorchDispatchMode):
    """Count each operator's calls and output elements by output dtype (one step's worth)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.elements: Counter[tuple[str, str]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, tuple | list) and out else out
        if isinstance(first, torch.Tensor) and func.overloadpacket.__name__ not in VIEWS:
            key = (str(func.overloadpacket.__name__), str(first.dtype).replace("torch.", ""))
            self.calls[key] += 1
            self.elements[key] += first.numel()
        return out

    def summary(self, top: int = 25) -> list[dict[str, Any]]:
        return [{"op": op, "dtype": dtype, "calls": self.calls[op, dtype], "elements": elements}
                for (op, dtype), elements in self.elements.most_common(top)]


class StepProfile:
    """Profile steps `first .. first + steps - 1` (1-based), then take a dtype census of the next step."""

    def __init__(self, first: int, steps: int) -> None:
        self.first, self.last = first, first + steps - 1
        self.profiler: torch.profiler.profile | None = None
        self.census: DtypeCensus | None = None
        self.result: dict[str, Any] = {}

    def step_started(self, step: int) -> None:
        if step == self.first:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.start()
        elif step == self.last + 1:
            self.census = DtypeCensus()
            self.census.__enter__()

    def step_ended(self, step: int) -> None:
        if step == self.last and self.profiler is not None:
            self.profiler.stop()
            self.result["operators"] = _operators(self.profiler, self.last - self.first + 1)
        elif step == self.last + 1 and self.census is not None:
            self.census.__exit__(None, None, None)
            self.result["dtype_census"] = self.census.summary()

    def summary(self) -> dict[str, Any]:
        return self.result


def _operators(profiler: torch.profiler.profile, steps: int, top: int = 25) -> dict[str, Any]:
    """Per profiled step: the total self CPU time, the most expensive operators and the watched ones."""
    events = [e for e in profiler.key_averages() if e.key.startswith("aten::")]

    def row(event) -> dict[str, Any]:
        return {"op": event.key, "calls_per_step": event.count / steps,
                "self_cpu_ms_per_step": event.self_cpu_time_total / 1000 / steps}

    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {"self_cpu_ms_per_step": sum(e.self_cpu_time_total for e in events) / 1000 / steps,
            "top": [row(e) for e in ranked[:top]], "watched": [row(e) for e in events if e.key in WATCHED]}


def format_profile(title: str, profile: dict[str, Any], top: int = 12) -> str:
    """A run's profile as text: self CPU per step, the costliest operators, the casts, the fp32 outputs."""
    operators = profile.get("operators", {})
    lines = [f"{title}: {operators.get('self_cpu_ms_per_step', 0):.0f} ms self CPU per step (aten operators)"]
    for row in operators.get("top", [])[:top]:
        lines.append(f"  {row['op']:<50s} {row['calls_per_step']:8.1f} calls {row['self_cpu_ms_per_step']:9.1f} ms")
    casts = [r for r in operators.get("watched", []) if r["op"] in ("aten::to", "aten::_to_copy", "aten::copy_")]
    lines.append("  casts: " + ", ".join(f"{r['op']} {r['calls_per_step']:.0f} calls {r['self_cpu_ms_per_step']:.1f} ms"
                                         for r in casts))
    census = profile.get("dtype_census", [])
    lines.append("  largest outputs by dtype (one step): " + ", ".join(
        f"{r['op']}[{r['dtype']}] {r['calls']}x {r['elements'] / 1e6:.1f}M" for r in census[:10]))
    return "\n".join(lines)
