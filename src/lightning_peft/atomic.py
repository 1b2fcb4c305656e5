"""Write files and folders so that an interrupted write never leaves a half-written result.

Every writer in the package goes through these two functions: the content is written to a
temporary sibling of the target (same folder, so the final `os.replace` is an atomic rename) and
renamed into place only when complete. A reader then sees the previous complete version or the
new complete one; a failure or a kill leaves no temporary file behind (failures) or only a
dot-prefixed one (kills).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

SHARED_FILE_MODE = 0o644  # mkstemp makes 0600; what we write (checkpoints, metrics, adapters) is read by others
SHARED_FOLDER_MODE = 0o755


def write_file_atomically(path: str | Path, write: Callable[[Path], None], fsync: bool = False) -> Path:
    """Run `write(tmp)` on a temporary sibling of `path`, then rename it to `path`.

    Args:
        path: The file to create or replace; its folder is created.
        write: Writes the complete content to the path it is given.
        fsync: Flush the file to disk before the rename (checkpoints: survive a power loss too).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(SHARED_FILE_MODE)
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(SHARED_FOLDER_MODE)
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (reuse_existing and target.exists()):  # a concurrent writer may have won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
