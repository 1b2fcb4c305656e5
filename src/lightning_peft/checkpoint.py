"""Adapter-only checkpoints: base-model fingerprints, state filtering, RNG state, atomic writes.

A checkpoint holds the trainable parameters only (plus optimizer, scheduler, callback, loop and
RNG state, which Lightning and `capture_rng` add); the frozen base is never written again. Its
fingerprint ties it to the base it was trained on so it cannot load silently onto another one.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

FINGERPRINT_SAMPLE = 4096  # elements per tensor folded into the fingerprint: enough to tell models apart, fast


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another base model, or lacks the parameters this model trains."""


def fingerprint(model: nn.Module) -> str:
    """A short hash of a base model's parameter names, shapes and (sampled) values.

    Computed on the plain `transformers` model before any method changes it. Values are sampled
    (the first elements of each tensor, summed in float64 and rounded) so the hash costs
    milliseconds and does not depend on the storage dtype's last bits.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)[:FINGERPRINT_SAMPLE]
        sample = flat.double().sum().item() if flat.is_floating_point() else float(flat.sum().item())
        digest.update(f"{name}:{tuple(tensor.shape)}:{sample:.6e};".encode())
    return digest.hexdigest()[:16]


def trainable_state(state_dict: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Keep only the entries of `state_dict` that are trainable parameters of `module`."""
    keep = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state_dict.items() if k in keep}


def check_loadable(saved: dict[str, Any], current_fingerprint: str, trainable: set[str], backbone: str) -> None:
    """Raise `CheckpointMismatchError` when a checkpoint cannot restore this model exactly."""
    theirs = saved.get("lightning_peft", {})
    if theirs.get("fingerprint") != current_fingerprint:
        raise CheckpointMismatchError(
            f"This checkpoint was trained on base model {theirs.get('backbone', 'unknown')!r} "
            f"(fingerprint {theirs.get('fingerprint')}), not on {backbone!r} (fingerprint {current_fingerprint}); "
            "load it with the backbone it was trained on."
        )
    missing = sorted(trainable - set(saved.get("state_dict", {})))
    if missing:
        raise CheckpointMismatchError(
            f"The checkpoint lacks {len(missing)} trainable parameters of this model (e.g. {missing[0]}); "
            "it was made with another method configuration."
        )


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, so a resumed run draws the same dropout masks."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # NumPy's key array is stored as a tensor so the checkpoint loads with torch.load(weights_only=True).
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside the target and renames it into place.

    Lightning's default writer streams into the final path, so a process killed mid-write leaves a
    truncated file under the real name. A rename within one folder is atomic, so a reader sees
    either the previous complete checkpoint or the new complete one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote filesystems: rename is not atomic there, use Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
