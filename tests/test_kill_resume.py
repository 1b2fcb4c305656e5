"""kill -9 during fit, during a checkpoint write and during export, then resume or retry: the run continues exactly
as one that was never killed, and no temporary file of the killed write survives the next one.

Each killed run is a forked child of the test process that sends itself SIGKILL at a chosen point (no `finally`,
no `atexit`, its file locks dropped by the kernel: what `kill -9` leaves), so the point is deterministic and
the child needs no second import of torch and Lightning. Forked children must not use torch's OpenMP pool the
parent started, so the module runs single-threaded (`one_thread`), reference run included: every run computes
in the same order and the comparisons are exact.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lightning_peft.checkpoint as checkpoint_module
import lightning_peft.modules.base as module_base
from lightning_peft.checkpoint import read_checkpoint
from lightning_peft.cli import main
from tests import helpers

TOTAL_STEPS = 9  # checkpoints at steps 3, 6 and 9 (helpers.cli_config: every 3 steps)
CHILD_TIMEOUT_S = 120  # a fit of 6 tiny steps takes seconds; a child stuck after the fork fails the test instead of hanging it


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _killed(target, *args) -> None:
    """Run `target(*args)` in a forked child and assert that it ended by SIGKILL (not by finishing or failing)."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args)
    child.start()
    child.join(CHILD_TIMEOUT_S)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == -signal.SIGKILL, f"the child ended with {child.exitcode}, not by SIGKILL"


def _fit(config: Path, *extra: str) -> None:
    main(["fit", "--config", str(config), "--trainer.max_steps", str(TOTAL_STEPS), *extra])


# -- what each killed child runs (in the child only: the patches die with it) ----------------------------------

def _fit_killed_after_step(config: Path, step: int) -> None:
    recorded = helpers.LossRecorder.on_train_batch_end

    def record_then_die(self, trainer, *args) -> None:
        recorded(self, trainer, *args)
        if trainer.global_step == step:
            _die()

    helpers.LossRecorder.on_train_batch_end = record_then_die
    _fit(config)


def _fit_killed_writing(config: Path, name: str) -> None:
    """Die halfway through writing checkpoint `name`: half its bytes are in the temporary file, none under `name`."""
    write_file_atomically = checkpoint_module.write_file_atomically

    def half_then_die(path, write, fsync=False):
        def half(tmp: Path) -> None:
            write(tmp)
            tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
            _die()

        return write_file_atomically(path, half if Path(path).name == name else write, fsync)

    checkpoint_module.write_file_atomically = half_then_die
    _fit(config)


def _export_killed(ckpt: Path, output_dir: Path) -> None:
    """Die once the adapter folder is written, before it is renamed into place."""
    write_folder_atomically = module_base.write_folder_atomically

    def written_then_die(target, write, reuse_existing=False):
        return write_folder_atomically(target, lambda folder: (write(folder), _die()), reuse_existing)

    module_base.write_folder_atomically = written_then_die
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(output_dir)])


# -- fixtures and checks ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: TOTAL_STEPS steps, its losses and its checkpoints."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = helpers.write_jsonl(root / "data.jsonl")
    _fit(helpers.cli_config(root, data, root / "losses.jsonl"))
    return {"data": data, "losses": helpers.read_losses(root / "losses.jsonl"), "ckpt": root / "ckpt"}


def _temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*.tmp"))


def _backdate(paths: list[Path]) -> None:
    """Age the killed write's temporaries past atomic._ORPHAN_AGE_S, which spares a live writer's fresh one."""
    then = time.time() - 60
    for path in paths:
        os.utime(path, (then, then))


def _assert_same_weights(ckpt: Path, reference_ckpt: Path) -> None:
    ours, theirs = read_checkpoint(ckpt)["state_dict"], read_checkpoint(reference_ckpt)["state_dict"]
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_killed_during_a_training_step_resumes_exactly(reference, tmp_path):
    config = helpers.cli_config(tmp_path, reference["data"], tmp_path / "losses.jsonl")
    _killed(_fit_killed_after_step, config, 5)
    assert helpers.read_losses(tmp_path / "losses.jsonl") == reference["losses"][:5]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step=3.ckpt"]

    _fit(config, "--ckpt_path", str(tmp_path / "ckpt" / "step=3.ckpt"))
    assert helpers.read_losses(tmp_path / "losses.jsonl")[5:] == reference["losses"][3:]  # bit for bit
    _assert_same_weights(tmp_path / "ckpt" / "step=9.ckpt", reference["ckpt"] / "step=9.ckpt")
    assert _temporaries(tmp_path) == []


def test_killed_while_writing_a_checkpoint_keeps_the_previous_one_and_resumes_exactly(reference, tmp_path):
    config = helpers.cli_config(tmp_path, reference["data"], tmp_path / "losses.jsonl")
    _killed(_fit_killed_writing, config, "step=6.ckpt")
    ckpt = tmp_path / "ckpt"
    orphans = [p for p in ckpt.iterdir() if p.name.startswith(".step=6.ckpt.")]
    assert len(orphans) == 1 and sorted(p.name for p in ckpt.iterdir()) == sorted(["step=3.ckpt", orphans[0].name])
    read_checkpoint(ckpt / "step=3.ckpt")  # complete, and its content hash matches
    assert helpers.read_losses(tmp_path / "losses.jsonl") == reference["losses"][:6]

    _backdate(orphans)
    _fit(config, "--ckpt_path", str(ckpt / "step=3.ckpt"))
    assert helpers.read_losses(tmp_path / "losses.jsonl")[6:] == reference["losses"][3:]
    _assert_same_weights(ckpt / "step=9.ckpt", reference["ckpt"] / "step=9.ckpt")
    assert sorted(p.name for p in ckpt.iterdir()) == ["step=3.ckpt", "step=6.ckpt", "step=9.ckpt"]
    assert _temporaries(tmp_path) == []  # the rewrite of step=6.ckpt removed the killed write's temporary


def test_killed_during_export_leaves_no_folder_and_the_retry_writes_the_same_adapter(reference, tmp_path):
    ckpt = reference["ckpt"] / "step=9.ckpt"
    _killed(_export_killed, ckpt, tmp_path / "adapter")
    orphans = list(tmp_path.iterdir())
    assert [p.name.startswith(".adapter.") and p.is_dir() for p in orphans] == [True]  # no "adapter" folder

    _backdate(orphans)
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "adapter")])
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "clean")])
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == sorted(p.name for p in (tmp_path / "clean").iterdir())
    retried, clean = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("adapter", "clean"))
    assert retried.keys() == clean.keys() and all(torch.equal(retried[k], clean[k]) for k in clean)
