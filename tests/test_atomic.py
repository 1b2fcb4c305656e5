"""Files and folders written atomically get the modes a plain open()/mkdir would: the user's umask decides."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from lightning_peft.atomic import write_file_atomically, write_folder_atomically


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=["umask022", "umask027", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_modes_follow_the_umask(tmp_path, umask):
    file = write_file_atomically(tmp_path / "metrics.json", lambda tmp: tmp.write_text("{}"))
    folder = write_folder_atomically(tmp_path / "adapter", lambda tmp: (tmp / "weights.bin").write_bytes(b"0"))
    plain_file, plain_folder = tmp_path / "plain.txt", tmp_path / "plain"
    plain_file.write_text("")
    plain_folder.mkdir()
    assert _mode(file) == _mode(plain_file) == 0o666 & ~umask
    assert _mode(folder) == _mode(plain_folder) == 0o777 & ~umask
    assert _mode(folder / "weights.bin") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "metrics.json", "plain", "plain.txt"]  # no .tmp left


def test_a_failed_write_leaves_nothing(tmp_path):
    def fail(tmp):
        (tmp / "weights.bin" if tmp.is_dir() else tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_file_atomically(tmp_path / "metrics.json", fail)
    with pytest.raises(RuntimeError):
        write_folder_atomically(tmp_path / "adapter", fail)
    assert list(tmp_path.iterdir()) == []


# -- orphans of killed writes --------------------------------------------------------------

def _backdate(path, seconds: float = 60.0) -> None:
    """Make `path` look as a later run finds it: last modified a while ago."""
    import time

    then = time.time() - seconds
    os.utime(path, (then, then))


def _orphans(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_the_next_write_removes_orphans_of_the_same_name_only(tmp_path):
    orphan_file = tmp_path / ".last.ckpt.0123456789ab.tmp"
    orphan_file.write_bytes(b"PK\x03\x04 half a zip archive")
    orphan_folder = tmp_path / ".adapter.ba9876543210.tmp"
    orphan_folder.mkdir()
    (orphan_folder / "adapter_model.safetensors").write_bytes(b"half")
    kept = [".step=2.ckpt.0123456789ab.tmp", ".last.ckpt.not-ours.tmp", ".last.ckpt.0123456789ab.tmp.bak"]
    for name in kept:
        (tmp_path / name).write_text("someone else's")
    for path in (orphan_file, orphan_folder, *(tmp_path / name for name in kept)):
        _backdate(path)

    write_file_atomically(tmp_path / "last.ckpt", lambda tmp: tmp.write_bytes(b"new"), fsync=True)
    assert not orphan_file.exists() and orphan_folder.exists()
    write_folder_atomically(tmp_path / "adapter", lambda tmp: (tmp / "weights.bin").write_bytes(b"0"))
    assert not orphan_folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.ckpt", "adapter", *kept])


def test_a_fresh_temporary_is_not_taken_for_an_orphan(tmp_path):
    """A temporary modified seconds ago may belong to a writer that has not locked it yet: it stays."""
    young = tmp_path / ".last.ckpt.0123456789ab.tmp"
    young.write_bytes(b"being written")
    write_file_atomically(tmp_path / "last.ckpt", lambda tmp: tmp.write_bytes(b"new"))
    assert young.exists()


_SLOW_WRITER = """
import sys, time
from pathlib import Path
from lightning_peft.atomic import write_file_atomically, write_folder_atomically

def half_then_hang(tmp):
    if tmp.is_dir():
        (tmp / "adapter_model.safetensors").write_bytes(b"half")
    else:
        tmp.write_bytes(b"PK\\x03\\x04 half a zip archive")
    print("writing", flush=True)
    time.sleep(600)

kind, target = sys.argv[1], Path(sys.argv[2])
(write_folder_atomically if kind == "folder" else write_file_atomically)(target, half_then_hang)
"""


def _write_again(target, kind: str, content: bytes) -> None:
    """What a retried checkpoint write or export of `target` does (an export's folder must not exist yet)."""
    if kind == "file":
        write_file_atomically(target, lambda tmp: tmp.write_bytes(content))
    else:
        shutil.rmtree(target, ignore_errors=True)
        write_folder_atomically(target, lambda tmp: (tmp / "weights.bin").write_bytes(content))


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_live_writers_temporary_stays_and_a_killed_ones_goes_at_the_next_write(tmp_path, kind):
    import signal
    import subprocess
    import sys

    target = tmp_path / ("last.ckpt" if kind == "file" else "adapter")
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, kind, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        [temporary] = _orphans(tmp_path)
        _backdate(tmp_path / temporary)  # old enough, but its writer is alive and holds it
        _write_again(target, kind, b"new")
        assert _orphans(tmp_path) == [temporary]
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
        writer.stdout.close()
    assert _orphans(tmp_path) == [temporary]  # what a kill -9 leaves
    _write_again(target, kind, b"newer")
    assert (target if kind == "file" else target / "weights.bin").read_bytes() == b"newer"
    assert _orphans(tmp_path) == []


def test_a_checkpoint_write_flushes_the_folder_after_the_rename(tmp_path, monkeypatch):
    import stat as stat_module

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(
        "fsync folder" if stat_module.S_ISDIR(os.fstat(fd).st_mode) else "fsync file"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda *a, **k: (events.append("rename"), real_replace(*a, **k)))
    write_file_atomically(tmp_path / "last.ckpt", lambda tmp: tmp.write_bytes(b"new"), fsync=True)
    assert events == ["fsync file", "rename", "fsync folder"]
