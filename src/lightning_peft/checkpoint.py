"""Adapter-only checkpoints: base-model fingerprints, state filtering, RNG state, atomic and hashed checkpoint writes.

A checkpoint holds the trainable parameters only (plus optimizer, scheduler, callback, loop and
RNG state, which Lightning and `capture_rng` add); the frozen base is never written again. Its
fingerprint ties it to the base it was trained on so it cannot load silently onto another one,
and a content hash written with it (`AtomicCheckpointIO`) lets every reader refuse a damaged file.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from .atomic import remove_orphans, write_file_atomically

HPARAMS_KEY = "hyper_parameters"  # LightningModule.CHECKPOINT_HYPER_PARAMS_KEY
FACTS_KEY = "lightning_peft"  # what this package records in a checkpoint (fingerprint, backbone, content hash, ...)
CONTENT_HASH_KEY = "content_sha256"  # under FACTS_KEY: `content_hash` of everything else the checkpoint holds
FINGERPRINT_VERSION = "v2"  # prefix of `fingerprint`; a fingerprint without it is a `sampled_fingerprint`
FINGERPRINT_SAMPLE = 4096  # elements per tensor folded into the pre-v2 `sampled_fingerprint`
_HASH_CHUNK = 1 << 24  # elements converted (to float32, to the CPU) at a time while hashing a tensor


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked (one sentence: what is wrong and what to do instead)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was made for another base model, or lacks the parameters this model trains."""


def _excluded(name: str, exclude: list[str]) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in exclude)


def _hash_values(digest: Any, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Feed every element of `tensor` (as `dtype`, or as stored) to `digest`, a bounded slice at a time."""
    flat = tensor.detach().reshape(-1)
    for start in range(0, flat.numel(), _HASH_CHUNK):
        part = flat[start:start + _HASH_CHUNK].to(device="cpu", dtype=dtype or flat.dtype).contiguous()
        digest.update(part.view(torch.uint8).numpy())  # a float32 CPU tensor is hashed in place, not copied


def fingerprint(model: nn.Module, exclude: list[str] = ()) -> str:
    """A hash of every weight of a base model, `"v2:"` and 32 hex digits: it identifies the weights, not their path.

    Computed on the plain `transformers` model before any method changes it, over each
    state-dict entry (parameters and persistent buffers): its name, its shape and every value, so
    a base changed anywhere, even in one element, hashes differently, and a copy of the same
    weights in another folder hashes the same. Floating values are hashed as float32: a base
    stored in bfloat16 hashes the same whether it is loaded in bfloat16 or float32 (the upcast is
    exact), while a base loaded in a dtype that rounds its weights (float32 weights in bfloat16)
    or quantized at load (int8, nf4) holds other values and so hashes as another base. `exclude`
    names modules that are not part of the base (a task's freshly initialised head): their random
    values would make the same base hash differently in every process.

    Cost: sha256 over the float32 bytes, about 0.36 s for SmolLM2-135M (650 MB) on one CPU core.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if _excluded(name, exclude):
            continue
        kind = "float" if tensor.is_floating_point() else str(tensor.dtype)
        digest.update(f"{name}:{tuple(tensor.shape)}:{kind};".encode())
        _hash_values(digest, tensor, torch.float32 if tensor.is_floating_point() else None)
    return f"{FINGERPRINT_VERSION}:{digest.hexdigest()[:32]}"


def sampled_fingerprint(model: nn.Module, exclude: list[str] = ()) -> str:
    """The fingerprint written before `fingerprint` (16 hex digits, no prefix), to check older checkpoints and exports.

    It hashes each tensor's name, shape and the rounded sum of its first `FINGERPRINT_SAMPLE`
    elements only, so a base changed beyond them passes; new checkpoints record `fingerprint`.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if _excluded(name, exclude):
            continue
        flat = tensor.detach().reshape(-1)[:FINGERPRINT_SAMPLE]
        sample = flat.double().sum().item() if flat.is_floating_point() else float(flat.sum().item())
        digest.update(f"{name}:{tuple(tensor.shape)}:{sample:.6e};".encode())
    return digest.hexdigest()[:16]


def is_sampled(recorded: str | None) -> bool:
    """Whether a recorded fingerprint is the pre-v2 `sampled_fingerprint` form."""
    return recorded is not None and not recorded.startswith(f"{FINGERPRINT_VERSION}:")


def fingerprint_like(recorded: str | None, model: nn.Module, exclude: list[str] = ()) -> str:
    """The fingerprint of `model` in the form `recorded` was written in (full, or sampled for older files)."""
    return (sampled_fingerprint if is_sampled(recorded) else fingerprint)(model, exclude)


def trainable_state(state_dict: dict[str, torch.Tensor], keep: set[str]) -> dict[str, torch.Tensor]:
    """Keep only the entries of `state_dict` named in `keep` (the parameters a method trains)."""
    return {k: v for k, v in state_dict.items() if k in keep}


def check_loadable(saved: dict[str, Any], current_fingerprint: str, trainable: set[str], backbone: str,
                   current_sampled: str | None = None) -> None:
    """Raise `CheckpointMismatchError` when a checkpoint cannot restore this model exactly.

    Args:
        saved: The checkpoint.
        current_fingerprint: `fingerprint` of this model's base.
        trainable: The parameters this model trains, which the checkpoint must hold.
        backbone: This model's backbone name, for the message.
        current_sampled: `sampled_fingerprint` of this model's base, compared instead with a
            checkpoint written before `fingerprint` covered every weight (so it still resumes).
    """
    theirs = saved.get(FACTS_KEY, {})
    recorded = theirs.get("fingerprint")
    ours = current_sampled if is_sampled(recorded) and current_sampled is not None else current_fingerprint
    if recorded != ours:
        raise CheckpointMismatchError(
            f"This checkpoint was trained on base model {theirs.get('backbone', 'unknown')!r} "
            f"(fingerprint {recorded}), not on {backbone!r} (fingerprint {ours}); "
            "load it with the backbone it was trained on."
        )
    missing = sorted(trainable - set(saved.get("state_dict", {})))
    if missing:
        raise CheckpointMismatchError(
            f"The checkpoint lacks {len(missing)} trainable parameters of this model (such as {missing[0]}), "
            "so it was made with another method configuration; load it with the method settings it was trained with."
        )


def weights_only_loadable(value: Any) -> bool:
    """Whether `torch.load(weights_only=True)` can read `value` back (plain containers, numbers, strings, tensors)."""
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not safe to store"
        return False
    return True


def drop_unsafe_hparams(ckpt: dict[str, Any]) -> None:
    """Remove hyperparameters that only a full unpickle could read (objects passed to `__init__` directly).

    The CLI stores its configuration as plain dicts, which stay. A module built in Python keeps
    the task and method objects themselves; pickling those would force every reader of the
    checkpoint (resume included) to `weights_only=False`. Without them the checkpoint still
    resumes; rebuilding the module from the checkpoint alone (`export`) then needs the CLI.
    """
    hparams = ckpt.get(HPARAMS_KEY)
    if hparams is not None and not weights_only_loadable(hparams):
        del ckpt[HPARAMS_KEY]
        ckpt.pop("hparams_name", None)
        ckpt.pop("hparams_type", None)


def _feed(digest: Any, value: Any) -> None:
    """Feed `value` (a loaded checkpoint or any part of it) to `digest`, the same before `torch.save` and after `torch.load`.

    Tensors give their dtype, shape and bytes; dicts their items in an order that does not depend
    on insertion (by each key's own hash), sets theirs sorted likewise, lists and tuples theirs in
    order; numbers, strings, bytes, None, dtypes and devices their type and `repr`. Any other
    object gives its type only: nothing else about an arbitrary object is stable across processes
    (a default `repr` holds its address), and `weights_only` loading admits none of them anyway.
    """
    if isinstance(value, torch.Tensor):
        digest.update(f"T{value.dtype}{tuple(value.shape)};".encode())
        _hash_values(digest, value)
    elif isinstance(value, dict):
        digest.update(f"D{len(value)};".encode())
        for key, item in sorted(((_digest_of(k), v) for k, v in value.items()), key=lambda pair: pair[0]):
            digest.update(key)
            _feed(digest, item)
    elif isinstance(value, (set, frozenset)):
        digest.update(f"S{len(value)};".encode())
        for item in sorted(_digest_of(v) for v in value):
            digest.update(item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)};".encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        digest.update(f"O{type(value).__module__}.{type(value).__qualname__};".encode())


def _digest_of(value: Any) -> bytes:
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.digest()


def content_hash(ckpt: dict[str, Any]) -> str:
    """The sha256 of everything `ckpt` holds (state dict, optimizer, loops, callbacks, RNG, hyperparameters) but the hash itself.

    Computed from the loaded values, not the file's bytes, so writing and reading it needs nothing
    but the checkpoint dict: a byte flipped in a tensor's storage or in the pickle either stops the
    file from loading or changes a value, and then this hash.
    """
    facts = ckpt.get(FACTS_KEY)
    if isinstance(facts, dict) and CONTENT_HASH_KEY in facts:
        ckpt = {**ckpt, FACTS_KEY: {k: v for k, v in facts.items() if k != CONTENT_HASH_KEY}}
    digest = hashlib.sha256()
    _feed(digest, ckpt)
    return digest.hexdigest()


def with_content_hash(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of `ckpt` with its `content_hash` under `ckpt["lightning_peft"]["content_sha256"]`."""
    facts = {k: v for k, v in ckpt.get(FACTS_KEY, {}).items() if k != CONTENT_HASH_KEY}
    unsigned = {**ckpt, FACTS_KEY: facts}
    return {**unsigned, FACTS_KEY: {**facts, CONTENT_HASH_KEY: content_hash(unsigned)}}


def check_content(ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise `CheckpointError` when `ckpt` records a content hash its contents no longer match.

    A checkpoint without one (written before hashes were, or by another writer) passes unchecked.
    """
    facts = ckpt.get(FACTS_KEY)
    recorded = facts.get(CONTENT_HASH_KEY) if isinstance(facts, dict) else None
    if recorded is not None and recorded != content_hash(ckpt):
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the hash written with it; use another checkpoint."
        )


def _unreadable(path: str | Path, error: BaseException) -> CheckpointError:
    if isinstance(error, FileNotFoundError):
        return CheckpointError(f"{path} does not exist; point to a .ckpt written by `lightning-peft fit`.")
    return CheckpointError(
        f"{path} is not a checkpoint that loads safely ({type(error).__name__}); point to a .ckpt written by "
        "`lightning-peft fit`."
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (no code runs) and check its content hash, as one clear error when either fails."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated zip, foreign pickle, not a checkpoint at all
        raise _unreadable(path, error) from None
    if not isinstance(ckpt, dict):
        raise _unreadable(path, TypeError())
    check_content(ckpt, path)
    return ckpt


def saved_module_class(ckpt: dict[str, Any], base: type) -> type:
    """The subclass of `base` that wrote `ckpt`, as recorded by LightningCLI in its hyperparameters.

    `base.load_from_checkpoint` alone would build `base` itself: Lightning drops the recorded
    `_class_path` when `base.__init__` takes no `**kwargs`. Only classes already imported are
    accepted (looked up in `sys.modules`), so reading a checkpoint never imports code.
    """
    hparams = ckpt.get(HPARAMS_KEY)
    if not hparams:
        raise CheckpointError(
            "This checkpoint does not record how its module was built (it was not written by `lightning-peft fit`); "
            "rebuild the module in Python with `<ModuleClass>.load_from_checkpoint(path, strict=False, backbone=..., "
            "task=..., method=..., label_names=...)` and call its export method."
        )
    class_path = hparams.get("_class_path")
    if class_path is None:
        return base
    module_name, _, name = str(class_path).rpartition(".")
    found = getattr(sys.modules.get(module_name), name, None)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise CheckpointError(
            f"This checkpoint was written by {class_path!r}, which is not an imported {base.__name__} subclass; "
            "import the package that defines it first."
        )
    return found


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA RNG states, so a resumed run draws the same dropout masks.

    Lightning's `_collect_rng_states` (what Fabric saves and `seed_everything` seeds) collects
    them; one thing is changed so the checkpoint still loads with `torch.load(weights_only=True)`:
    NumPy's key array, which that loader refuses, is stored as an int64 tensor. The CUDA states
    (key "torch.cuda") are collected only when CUDA is available.
    """
    state = _collect_rng_states(include_cuda=torch.cuda.is_available())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    state["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the states `capture_rng` took, with Lightning's `_set_rng_states` (NumPy's key array back to uint32).

    CUDA states are set only when CUDA is available (a checkpoint written on a GPU resumes on a
    CPU). Checkpoints written before `capture_rng` used Lightning's collector hold them under
    "cuda" rather than "torch.cuda"; those are read too (the other keys were already the same).
    """
    state = dict(state)
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    state["numpy"] = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    if "cuda" in state:  # written before capture_rng used Lightning's collector
        state["torch.cuda"] = state.pop("cuda")
    if not torch.cuda.is_available():
        state.pop("torch.cuda", None)
    _set_rng_states(state)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint with its content hash to a temporary file beside the target and renames it into place; checks the hash on load.

    Lightning's default writer streams into the final path, so a process killed mid-write leaves a
    truncated file under the real name. A rename within one folder is atomic, so a reader sees
    either the previous complete checkpoint or the new complete one; the temporary files of
    writes that were killed are removed at the next write of the same name and when a run resumes
    from a checkpoint beside them (`atomic.remove_orphans`).

    The content hash (`content_hash`, under `ckpt["lightning_peft"]["content_sha256"]`) is added
    here rather than in `FineTuneModule.on_save_checkpoint`: this is the last step before the bytes
    are written, after every hook has added its part, and it covers any LightningModule's
    checkpoint. Checkpoints written before (or by another writer) have none and load unchecked.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        checkpoint = with_content_hash(checkpoint)
        if "://" in str(path):  # remote filesystems: rename is not atomic there, use Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_file_atomically(path, lambda tmp: torch.save(checkpoint, tmp), fsync=True)

    def load_checkpoint(self, path, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's loader, with a missing, unreadable or damaged file refused in one sentence (`CheckpointError`)."""
        try:
            ckpt = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except Exception as error:  # noqa: BLE001 - missing, truncated, foreign: one sentence, the cause kept
            raise _unreadable(path, error) from error
        if not isinstance(ckpt, dict):
            raise _unreadable(path, TypeError())
        check_content(ckpt, path)
        if "://" not in str(path):
            remove_orphans(path)  # what the killed run this one resumes left beside its checkpoint
        return ckpt
