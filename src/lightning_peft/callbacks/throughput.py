"""`Throughput`: non-padding tokens/s, step time, peak memory and MFU for any LightningModule.

MFU (model FLOPs utilisation) follows Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with
Pathways", arXiv:2204.02311, Appendix B, with the frozen-weight accounting of `flops.py` (a
parameter-efficient step costs `4N + 2N_trainable` FLOPs per token plus attention, not `6N`).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from .flops import attention_shape, count_parameters, device_peak_flops, matmul_precision, training_flops_per_token


class ThroughputConfigError(ValueError):
    """A `Throughput` setting is out of range, or a batch holds no countable tokens (one sentence)."""


def count_tokens(batch: Any) -> int:
    """Non-padding tokens of a dict batch: `attention_mask.sum()`, else `input_ids.numel()`."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() <= 2:
            return int(mask.sum())
        ids = batch.get("input_ids")
        if isinstance(ids, torch.Tensor):
            return ids.numel()
    raise ThroughputConfigError(
        f"Throughput counts tokens from the attention_mask or input_ids of a dict batch, but got a "
        f"{type(batch).__name__}; pass tokens_fn=<function(batch) -> number of tokens>.")


def batch_width(batch: Any) -> int | None:
    """Sequence length of a dict batch (width of input_ids or attention_mask), or None."""
    if isinstance(batch, Mapping):
        for key in ("input_ids", "attention_mask"):
            if isinstance(batch.get(key), torch.Tensor) and batch[key].dim() >= 2:
                return int(batch[key].shape[-1])
    return None


def attention_context(batch: Any) -> float | None:
    """The context length T of the attention term for a dict batch.

    A padded batch attends over its width. A packed batch (`position_ids` restarting at 0 for each
    example, no `attention_mask`) attends within each example only, so T is the token-weighted
    mean example length, sum(n^2) / sum(n): then tokens x T is the batch's exact attention work.
    """
    if isinstance(batch, Mapping) and batch.get("attention_mask") is None:
        positions = batch.get("position_ids")
        if isinstance(positions, torch.Tensor) and positions.numel():
            flat = positions.reshape(-1)
            # an example starts wherever the position is not the previous one plus 1
            starts = torch.nonzero(torch.cat([flat.new_ones(1, dtype=torch.bool), flat[1:] != flat[:-1] + 1]))
            bounds = torch.cat([starts.reshape(-1), flat.new_tensor([flat.numel()])])
            lengths = (bounds[1:] - bounds[:-1]).double()
            return float((lengths * lengths).sum() / lengths.sum())
    return batch_width(batch)


def peak_memory_gb(device: torch.device) -> tuple[float, str]:
    """(peak memory in GB of 1e9 bytes, what was measured): CUDA tensors' peak, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9, "cuda_max_allocated"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss * (1 if sys.platform == "darwin" else 1024) / 1e9, "process_peak_rss"


class Throughput(L.Callback):
    """Log `throughput/tokens_per_sec`, `throughput/step_time`, `throughput/peak_memory_gb` and `throughput/mfu`.

    Per optimizer step it measures the wall time of its micro-batches (from each
    `on_train_batch_start` to `on_train_batch_end`: forward, backward and the update, CUDA
    synchronised; data loading between batches, validation and checkpointing are not counted) and
    their non-padding tokens, summed over DDP ranks for a global rate. The first `warmup_steps`
    steps of every fit (compilation, allocator and cache warm-up) are not measured. The logged
    tokens/s, step time and MFU are over the last `window` measured steps (written at the trainer's
    `log_every_n_steps`); `summary()` gives medians over all measured steps, for benchmarks, and
    is stored in the checkpoint by `state_dict`.

    Peak memory is `torch.cuda.max_memory_allocated` (reset at fit start) on a GPU, and the
    process's peak resident set size (`ru_maxrss`, which includes Python and every library) on a
    CPU; `summary()["peak_memory_kind"]` says which. Units: GB of 1e9 bytes.

    MFU = global training FLOP/s / (device peak FLOP/s x number of devices). FLOPs per token are
    `4N + 2N_trainable + 12·L·T·W` (see `flops.py`): N counts every parameter of the
    LightningModule that multiplies activations (not input embedding tables), trainable by
    `requires_grad`; L and W (layers, attention width) come from the first `transformers` config
    found in the module, T is each batch's width (for a packed batch without an attention mask,
    the token-weighted mean length of its examples, which attend only within themselves). The
    device peak is the dense datasheet figure at the precision the matmuls run in
    (`trainer.precision`), from Lightning's `get_available_flops` or, for the GPUs it lacks or
    counts otherwise (H200, L40S, A10), `flops.PEAK_FLOPS`; on a CPU or an unlisted GPU, MFU is
    logged only when `peak_flops` is given. Under FSDP or DeepSpeed ZeRO-3 the parameters are sharded: pass
    `flops_per_token`. Positions a model adds to the batch (soft-prompt tokens) are neither
    counted as tokens nor in T; `tokens_fn` can add them.
    `summary()["n_params"]`/`["n_trainable"]` are the formula's N and N_trainable, so a trained
    prompt table (a lookup) is not in them.

    Example::

        trainer = Trainer(callbacks=[Throughput(window=20)])
        trainer.fit(module, data)
        print(trainer.callbacks[0].summary()["tokens_per_sec"])

    Args:
        tokens_fn: Function of a batch returning its number of (non-padding) tokens; default:
            `attention_mask.sum()` of a dict batch, else `input_ids.numel()`.
        window: Steps averaged in each logged value.
        warmup_steps: Steps at the start of each fit left out of every number.
        peak_flops: Peak FLOP/s of one device (overrides the table; needed for MFU on a CPU).
        flops_per_token: Training FLOPs per token (overrides the formula, attention included).
        include_embeddings: Also count input embedding tables in N (they do no matmul).
        n_layers: Transformer layers for the attention term (default: from the model's config).
        attention_width: Heads x head dim for the attention term (default: from the model's config).
        seq_len: Sequence length for the attention term (default: each batch's width, or its mean
            example length when packed).
    """

    def __init__(
        self,
        tokens_fn: Callable[[Any], int] | None = None,
        window: int = 20,
        warmup_steps: int = 2,
        peak_flops: float | None = None,
        flops_per_token: float | None = None,
        include_embeddings: bool = False,
        n_layers: int | None = None,
        attention_width: int | None = None,
        seq_len: int | None = None,
    ) -> None:
        if window < 1:
            raise ThroughputConfigError(f"Throughput window={window} must be at least 1 step.")
        if warmup_steps < 0:
            raise ThroughputConfigError(f"Throughput warmup_steps={warmup_steps} must be 0 or more.")
        for name, value in {"peak_flops": peak_flops, "flops_per_token": flops_per_token, "n_layers": n_layers,
                            "attention_width": attention_width, "seq_len": seq_len}.items():
            if value is not None and not value > 0:
                raise ThroughputConfigError(f"Throughput {name}={value} must be positive (or left unset).")
        self.tokens_fn = tokens_fn or count_tokens
        self.window, self.warmup_steps = window, warmup_steps
        self.peak_flops_override, self.flops_per_token = peak_flops, flops_per_token
        self.include_embeddings, self.seq_len = include_embeddings, seq_len
        self.attention = (n_layers, attention_width)
        self.records: list[dict[str, float]] = []  # measured steps: tokens, seconds, flops (global)
        self.peak_memory: tuple[float, str] | None = None
        self.peak_flops: float | None = None  # of the whole run: per device x devices
        self.precision: str | None = None
        self.params: tuple[int, int] = (0, 0)
        self._counted_flags: tuple[bool, ...] | None = None
        self._parameters: list[nn.Parameter] = []
        self._shape: tuple[int, int] | None = None
        self._steps_seen = 0
        self._pending: dict[str, Any] | None = None  # the optimizer step in progress: its micro-batches
        self._started = 0.0

    # -- fit start: what the run runs on ---------------------------------------------------

    def _attention_shape(self, pl_module: nn.Module) -> tuple[int, int] | None:
        if all(self.attention):
            return self.attention
        for module in pl_module.modules():
            shape = attention_shape(getattr(module, "config", None))
            if shape:
                return self.attention[0] or shape[0], self.attention[1] or shape[1]
        return None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.precision = matmul_precision(trainer.precision)
        per_device = self.peak_flops_override
        if per_device is None and device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            per_device = device_peak_flops(name, self.precision)
            if per_device is None:
                rank_zero_info(f"Throughput: no peak FLOP/s known for {name!r} at {self.precision}; "
                               "pass peak_flops to log MFU.")
        self.peak_flops = None if per_device is None else per_device * trainer.world_size
        self._shape = self._attention_shape(pl_module)
        if self._shape is None and self.flops_per_token is None:
            rank_zero_info("Throughput: no transformers config with layers and heads found; FLOPs leave out the "
                           "attention term (pass n_layers and attention_width to include it).")
        self._steps_seen, self._pending, self._counted_flags = 0, None, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Listed once, after every on_fit_start (the module's runs after the callbacks'): walking the module
        # tree for them each step takes ~5 ms on a 135M LoRA model (2 CPU cores).
        self._parameters = list(pl_module.parameters())

    # -- per step ---------------------------------------------------------------------------

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is None:
            self._pending = {"step": trainer.global_step, "seconds": 0.0, "micro": []}
        tokens = int(self.tokens_fn(batch))  # counted before the clock starts: it may synchronise
        self._pending["micro"].append((tokens, self.seq_len or attention_context(batch) or 0))
        self._sync(pl_module)
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._sync(pl_module)
        self._pending["seconds"] += time.perf_counter() - self._started
        if trainer.global_step == self._pending["step"]:
            return  # accumulating gradients: the optimizer step is still to come
        step, self._pending = self._pending, None
        tokens, flops = self._reduce(trainer, pl_module, *self._count(pl_module, step["micro"]))
        self._steps_seen += 1
        if self._steps_seen <= self.warmup_steps:
            return
        self.records.append({"tokens": tokens, "seconds": step["seconds"], "flops": flops})
        self._log(pl_module)

    def _count(self, pl_module: nn.Module, micro: list[tuple[int, float]]) -> tuple[float, float]:
        tokens = sum(t for t, _ in micro)
        # Recounted when requires_grad changes (a callback may (un)freeze): the flags are cheap to read, the
        # count is not (~30 ms for a 135M LoRA model, which would show on a GPU step).
        flags = tuple(p.requires_grad for p in self._parameters)
        if flags != self._counted_flags:
            self.params, self._counted_flags = count_parameters(pl_module, self.include_embeddings), flags
        if self.flops_per_token is not None:
            return tokens, tokens * self.flops_per_token
        layers, width = self._shape or (0, 0)
        return tokens, sum(t * training_flops_per_token(*self.params, layers, width, seq) for t, seq in micro)

    def _reduce(self, trainer: L.Trainer, pl_module: L.LightningModule, tokens: float,
                flops: float) -> tuple[float, float]:
        if trainer.world_size == 1:
            return float(tokens), float(flops)
        total = trainer.strategy.reduce(torch.tensor([tokens, flops], dtype=torch.float64, device=pl_module.device),
                                        reduce_op="sum")
        return float(total[0]), float(total[1])

    def _log(self, pl_module: L.LightningModule) -> None:
        recent = self.records[-self.window:]
        seconds = sum(r["seconds"] for r in recent)
        memory, _ = self.peak_memory = self._peak_memory(pl_module.device)
        values = {"tokens_per_sec": sum(r["tokens"] for r in recent) / seconds,
                  "step_time": seconds / len(recent), "peak_memory_gb": memory}
        if self.peak_flops is not None:
            values["mfu"] = sum(r["flops"] for r in recent) / seconds / self.peak_flops
        for name, value in values.items():
            pl_module.log(f"throughput/{name}", value, on_step=True, on_epoch=False, batch_size=1)

    def _peak_memory(self, device: torch.device) -> tuple[float, str]:
        now = peak_memory_gb(device)
        if self.peak_memory is not None and self.peak_memory[1] == now[1]:
            return max(self.peak_memory[0], now[0]), now[1]
        return now

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.peak_memory = self._peak_memory(pl_module.device)
        self._parameters = []  # no references to the model once training ends

    # -- results ------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Medians over all measured steps (warmup left out), peak memory, MFU and what they were computed from."""
        def median(values: list[float]) -> float | None:
            return statistics.median(values) if values else None

        rates = [r["tokens"] / r["seconds"] for r in self.records]
        mfu = None
        if self.peak_flops is not None and self.records:
            mfu = median([r["flops"] / r["seconds"] / self.peak_flops for r in self.records])
        memory, kind = self.peak_memory or (None, None)
        return {"steps": len(self.records), "tokens_per_sec": median(rates),
                "step_time": median([r["seconds"] for r in self.records]),
                "tokens_per_step": median([r["tokens"] for r in self.records]),
                "peak_memory_gb": memory, "peak_memory_kind": kind, "mfu": mfu, "peak_flops": self.peak_flops,
                "matmul_precision": self.precision, "n_params": self.params[0], "n_trainable": self.params[1]}

    def state_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "records": self.records,
                "peak_memory": None if self.peak_memory is None else list(self.peak_memory)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = [dict(r) for r in state_dict.get("records", [])]
        memory = state_dict.get("peak_memory")
        self.peak_memory = None if memory is None else (float(memory[0]), str(memory[1]))
