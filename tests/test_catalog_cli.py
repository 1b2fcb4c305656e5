"""`lightning-peft models` / `datasets` answer from the catalog alone: clean output, no torch, Lightning or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_peft.cli import main

SCRIPT = Path(sys.executable).parent / "lightning-peft"
HEAVY = ("torch", "transformers", "lightning", "peft", "bitsandbytes")


def _command() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lightning_peft.cli"]


@pytest.mark.parametrize("command, header", [("models", ["name", "description"]),
                                             ("datasets", ["name", "kind", "size", "labels", "description"])])
def test_catalog_command_prints_only_its_table(command, header):
    done = subprocess.run([*_command(), command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == header
    assert done.stderr == ""


@pytest.mark.parametrize("command", ["models", "datasets"])
def test_catalog_command_imports_no_ml_library(command):
    code = (f"import json, sys; from lightning_peft.cli import main; main([{command!r}]); "
            f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_fit_help_still_lists_every_data_module(capsys):
    # The data modules are imported lazily now; the LightningCLI still finds them by short name.
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("ClassificationData", "ParaphraseClassificationData", "SFTData", "Seq2SeqData", "TaskSequenceData"):
        assert f"lightning_peft.data.{name}" in out
