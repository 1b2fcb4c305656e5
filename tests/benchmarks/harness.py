"""Run a benchmark script as a user would, and fail with its output when it does not finish cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str, monkeypatch: pytest.MonkeyPatch):
    """`benchmarks/<name>` as a module, its sibling modules (`arm_process`) importable as when it runs as a script."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{Path(name).stem}", BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_script(name: str, args: list[str], timeout: int = 540, **env: str) -> str:
    """Run `benchmarks/<name>` with `args`; return its stdout. On timeout it gets SIGTERM (it kills its running arm)."""
    process = subprocess.Popen([sys.executable, str(BENCHMARKS / name), *args], env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        stdout, stderr = process.communicate()
        pytest.fail(f"benchmarks/{name} did not finish in {timeout} s:\n" + stderr[-3000:])
    assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
    return stdout
