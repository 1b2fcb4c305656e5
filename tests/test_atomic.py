"""Files and folders written atomically get the modes a plain open()/mkdir would: the user's umask decides."""

from __future__ import annotations

import os
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
