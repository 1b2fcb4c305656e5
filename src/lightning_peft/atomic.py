"""Write files and folders so that an interrupted write never leaves a half-written result.

Every writer in the package goes through these two functions: the content is written to a
temporary sibling of the target (same folder, so the final `os.replace` is an atomic rename) and
renamed into place only when complete. A reader then sees the previous complete version or the
new complete one; a failure or a kill leaves no temporary file behind (failures) or only a
dot-prefixed one (kills).

The temporary file and folder are created with `os.open(..., 0o666)` and `mkdir(0o777)`, as a
plain `open()` or `mkdir` would: the kernel applies the process's umask (and a folder's default
ACL), so what we write is as readable as anything else the user writes (0o644/0o755 under the
usual umask 022, group-only under 027). `tempfile.mkstemp`/`mkdtemp` would make them private
(0o600/0o700), and forcing a mode instead would ignore a umask chosen on purpose.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

_NAME_TRIES = 100  # random 48-bit names clash (almost) never; a clash is retried with a new name


def _create_sibling(target: Path, create: Callable[[Path], None]) -> Path:
    """A new, dot-prefixed temporary path beside `target`, created by `create` (which fails if it exists)."""
    for _ in range(_NAME_TRIES):
        candidate = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {target} after {_NAME_TRIES} tries")


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the mode open() uses; umask applies


def _new_folder(path: Path) -> None:
    path.mkdir(mode=0o777)  # the mode mkdir uses; umask applies


def write_file_atomically(path: str | Path, write: Callable[[Path], None], fsync: bool = False) -> Path:
    """Run `write(tmp)` on a temporary sibling of `path`, then rename it to `path`.

    Args:
        path: The file to create or replace; its folder is created.
        write: Writes the complete content to the path it is given.
        fsync: Flush the file to disk before the rename (checkpoints: survive a power loss too).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_sibling(path, _new_file)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_folder_atomically(target: str | Path, write: Callable[[Path], None], reuse_existing: bool = False) -> Path:
    """Run `write(folder)` on a temporary sibling folder of `target`, then rename it to `target`.

    `target` must not exist or be empty: a rename replaces an empty folder, never a full one.

    Args:
        target: The folder to create.
        write: Fills the folder it is given.
        reuse_existing: `target` is a cache entry: when it exists, return it without writing, and
            when another process renamed its copy into place first, keep that one.
    """
    target = Path(target)
    if reuse_existing and target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_sibling(target, _new_folder)
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (reuse_existing and target.exists()):  # a concurrent writer may have won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
