"""Write files and folders so that an interrupted write never leaves a half-written result.

Every writer in the package goes through these two functions: the content is written to a
temporary sibling of the target (same folder, so the final `os.replace` is an atomic rename) and
renamed into place only when complete. A reader then sees the previous complete version or the
new complete one; a failure leaves no temporary file behind, and a kill only a dot-prefixed one
that the next write of the same target removes.

The temporary file and folder are created with `os.open(..., 0o666)` and `mkdir(0o777)`, as a
plain `open()` or `mkdir` would: the kernel applies the process's umask (and a folder's default
ACL), so what we write is as readable as anything else the user writes (0o644/0o755 under the
usual umask 022, group-only under 027). `tempfile.mkstemp`/`mkdtemp` would make them private
(0o600/0o700), and forcing a mode instead would ignore a umask chosen on purpose.

How a kill's temporary sibling is told from a live write: each writer holds an advisory lock
(`flock`) on its temporary file or folder until it is renamed or removed, and the kernel drops
that lock when the process dies, so the next write of the same target (and a resume from a
checkpoint, `checkpoint.AtomicCheckpointIO`) removes those orphans (`remove_orphans`). On
platforms without `fcntl` (Windows) no orphan can be told from a live write, and none is removed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no orphan can be told from a live write
    fcntl = None

_NAME_TRIES = 100  # random 48-bit names clash (almost) never; a clash is retried with a new name
_TOKEN_HEX = 12  # hex digits of the random part of a temporary name (secrets.token_hex(6))
# An orphan must also be this many seconds old: a temporary that another process created a moment
# ago and has not locked yet (it locks microseconds after creating) is never taken for one.
_ORPHAN_AGE_S = 5.0


def _try_lock(fd: int) -> bool:
    """Take an exclusive advisory lock on `fd` without waiting; False when another process holds one (or none can be taken)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live writer, or a filesystem without locks: either way, not ours to take
        return False
    return True


def _hold(path: Path) -> int | None:
    """An open descriptor of `path` holding its lock, which says "a live process is writing this" until closed."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    _try_lock(fd)
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # drops the lock


def _create_sibling(target: Path, create: Callable[[Path], None]) -> tuple[Path, int | None]:
    """A new, dot-prefixed temporary path beside `target`, created by `create` (which fails if it exists), and held."""
    for _ in range(_NAME_TRIES):
        candidate = target.parent / f".{target.name}.{secrets.token_hex(_TOKEN_HEX // 2)}.tmp"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate, _hold(candidate)
    raise FileExistsError(f"no free temporary name beside {target} after {_NAME_TRIES} tries")


def remove_orphans(target: str | Path) -> list[Path]:
    """Remove the temporary siblings of `target` that writes killed before they finished left behind.

    Only names these writers make (`.<target name>.<12 hex digits>.tmp`, file or folder) are
    considered, and one is removed only when no live process holds its lock (a writer holds it
    until it renames or removes its temporary; the kernel drops it when the writer dies) and it was
    last modified more than `_ORPHAN_AGE_S` seconds ago. Nothing is removed where `fcntl` is
    missing. Errors are ignored: cleaning up never fails a write.

    Returns:
        The paths removed.
    """
    if fcntl is None:
        return []
    target = Path(target)
    ours = re.compile(re.escape(f".{target.name}.") + f"[0-9a-f]{{{_TOKEN_HEX}}}" + re.escape(".tmp"))
    try:
        candidates = [entry for entry in target.parent.iterdir() if ours.fullmatch(entry.name)]
    except OSError:
        return []
    removed = []
    for entry in candidates:
        try:
            info = entry.lstat()
            if stat.S_ISLNK(info.st_mode) or info.st_mtime > time.time() - _ORPHAN_AGE_S:
                continue
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if not _try_lock(fd):
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; POSIX only (Windows cannot open a folder)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the mode open() uses; umask applies


def _new_folder(path: Path) -> None:
    path.mkdir(mode=0o777)  # the mode mkdir uses; umask applies


def write_file_atomically(path: str | Path, write: Callable[[Path], None], fsync: bool = False) -> Path:
    """Run `write(tmp)` on a temporary sibling of `path`, then rename it to `path`.

    Args:
        path: The file to create or replace; its folder is created.
        write: Writes the complete content to the path it is given.
        fsync: Flush the file to disk before the rename and the folder after it (checkpoints:
            survive a power loss too, with the new name pointing at the complete file).

    Orphans of earlier writes of `path` that were killed are removed first (`remove_orphans`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    tmp, held = _create_sibling(path, _new_file)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
        _release(held)
    return path


def write_folder_atomically(target: str | Path, write: Callable[[Path], None], reuse_existing: bool = False) -> Path:
    """Run `write(folder)` on a temporary sibling folder of `target`, then rename it to `target`.

    `target` must not exist or be empty: a rename replaces an empty folder, never a full one.

    Args:
        target: The folder to create.
        write: Fills the folder it is given.
        reuse_existing: `target` is a cache entry: when it exists, return it without writing, and
            when another process renamed its copy into place first, keep that one.

    Orphans of earlier writes of `target` that were killed are removed first (`remove_orphans`).
    """
    target = Path(target)
    if reuse_existing and target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(target)
    tmp, held = _create_sibling(target, _new_folder)
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (reuse_existing and target.exists()):  # a concurrent writer may have won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _release(held)
    return target
