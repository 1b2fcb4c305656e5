"""Checkpoint integrity: a damaged checkpoint is refused wherever it is read, the base fingerprint
covers every weight and names the weights rather than their folder, and what was written before
(checkpoints without a content hash, the sampled fingerprint) still loads.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_peft import zoo
from lightning_peft.card import CARD_NAME, CardError
from lightning_peft.checkpoint import (AtomicCheckpointIO, CheckpointError, CheckpointMismatchError, content_hash,
                                       fingerprint, read_checkpoint, sampled_fingerprint)
from lightning_peft.cli import main
from tests import helpers

DAMAGED = r"is damaged: its contents do not match the hash written with it; use another checkpoint\.$"
CHANGED_TENSOR, CHANGED_ELEMENT = "model.layers.1.mlp.up_proj.weight", 5000  # past the 4,096 the old fingerprint saw


def assert_one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and ". " not in message and "Traceback" not in message, message


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A checkpoint written by `lightning-peft fit` (3 steps on tiny-llama)."""
    root = tmp_path_factory.mktemp("fitted")
    main(["fit", "--config", str(helpers.cli_config(root, helpers.write_jsonl(root / "data.jsonl"))),
          "--trainer.max_steps", "3"])
    return root / "ckpt" / "step=3.ckpt"


def _flip_a_byte_of_a_weight(source: Path, target: Path) -> None:
    """Copy `source` to `target` with one byte flipped inside the storage of a trained weight (the zip's own
    CRC is left as it was: torch does not check it, so the copy still loads)."""
    data = source.read_bytes()
    original = torch.load(io.BytesIO(data), weights_only=True)["state_dict"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        storages = [info for info in archive.infolist() if "/data/" in info.filename and info.file_size > 0]
    for info in storages:
        assert info.compress_type == zipfile.ZIP_STORED
        name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
            int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
        offset = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        loaded = torch.load(io.BytesIO(bytes(damaged)), weights_only=True)["state_dict"]
        if any(not torch.equal(loaded[name], original[name]) for name in original):
            target.write_bytes(bytes(damaged))
            return
    raise AssertionError(f"no storage of {source} holds a trained weight")


@pytest.fixture(scope="module")
def damaged(fitted, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("damaged") / "step=3.ckpt"
    _flip_a_byte_of_a_weight(fitted, path)
    return path


# -- the content hash ------------------------------------------------------------------------

def test_a_cli_checkpoint_records_the_hash_of_what_it_holds(fitted):
    saved = torch.load(fitted, weights_only=True)
    facts = saved["lightning_peft"]
    assert len(facts["content_sha256"]) == 64 and facts["content_sha256"] == content_hash(saved)
    assert facts["fingerprint"].startswith("v2:")


def test_export_refuses_a_checkpoint_with_a_flipped_byte(damaged, tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*" + DAMAGED) as error:
        main(["export", "--ckpt_path", str(damaged), "--output_dir", str(tmp_path / "adapter")])
    assert_one_sentence(str(error.value))
    assert list(tmp_path.iterdir()) == []


def test_fit_refuses_to_resume_from_a_checkpoint_with_a_flipped_byte(damaged, tmp_path, capsys):
    config = helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--trainer.max_steps", "6", "--ckpt_path", str(damaged)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: .*" + DAMAGED, message), message
    assert_one_sentence(message)
    assert not list((tmp_path / "ckpt").glob("*.ckpt"))  # nothing trained from it


def _changed(saved: dict, what: str) -> dict:
    if what == "weight":
        name = sorted(saved["state_dict"])[0]
        saved["state_dict"][name].view(-1)[0] += 1e-3
    elif what == "optimizer state":
        state = saved["optimizer_states"][0]["state"]
        state[sorted(state)[0]]["exp_avg"].view(-1)[0] += 1e-3
    elif what == "step":
        saved["global_step"] += 1
    else:
        saved["hyper_parameters"]["method"]["init_args"]["r"] = 8
    return saved


@pytest.mark.parametrize("what", ["weight", "optimizer state", "step", "hyperparameter"])
def test_a_value_changed_without_its_hash_is_refused_by_every_reader(fitted, tmp_path, what):
    path = tmp_path / "edited.ckpt"
    torch.save(_changed(torch.load(fitted, weights_only=True), what), path)
    for read in (read_checkpoint, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(CheckpointError, match=DAMAGED) as error:
            read(path)
        assert_one_sentence(str(error.value))


def test_a_checkpoint_written_before_hashes_still_loads(fitted, tmp_path):
    saved = torch.load(fitted, weights_only=True)
    del saved["lightning_peft"]["content_sha256"]
    torch.save(_changed(saved, "step"), tmp_path / "old.ckpt")
    assert read_checkpoint(tmp_path / "old.ckpt")["global_step"] == 4
    assert AtomicCheckpointIO().load_checkpoint(tmp_path / "old.ckpt")["global_step"] == 4


def test_the_checkpoint_io_refuses_unreadable_files_in_one_sentence(tmp_path):
    (tmp_path / "truncated.ckpt").write_bytes(b"PK\x03\x04 truncated")
    torch.save(torch.zeros(2), tmp_path / "tensor.ckpt")
    (tmp_path / "folder.ckpt").mkdir()
    cases = {"missing.ckpt": "does not exist", "truncated.ckpt": "is not a checkpoint that loads safely",
             "tensor.ckpt": "is not a checkpoint that loads safely", "folder.ckpt": "is not a checkpoint that loads safely"}
    for name, match in cases.items():
        with pytest.raises(CheckpointError, match=match) as error:
            AtomicCheckpointIO().load_checkpoint(tmp_path / name)
        assert_one_sentence(str(error.value))


def test_resuming_from_a_checkpoint_removes_the_orphans_beside_it(fitted, tmp_path):
    path = tmp_path / "last.ckpt"
    shutil.copy(fitted, path)
    orphan = tmp_path / ".last.ckpt.0123456789ab.tmp"  # what a run killed while writing last.ckpt left behind
    orphan.write_bytes(b"PK\x03\x04 half")
    then = time.time() - 60
    os.utime(orphan, (then, then))
    AtomicCheckpointIO().load_checkpoint(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# -- the base fingerprint --------------------------------------------------------------------

def _base() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE))


def _changed_base(folder: Path) -> str:
    """tiny-llama with one weight changed at element 5000 of one tensor, saved as a model folder."""
    model = _base()
    with torch.no_grad():
        model.state_dict()[CHANGED_TENSOR].view(-1)[CHANGED_ELEMENT] += 0.5
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(zoo.resolve(helpers.BACKBONE)).save_pretrained(folder)
    return str(folder)


def test_the_fingerprint_sees_a_change_past_the_first_elements():
    model = _base()
    before, before_sampled = fingerprint(model), sampled_fingerprint(model)
    with torch.no_grad():
        model.state_dict()[CHANGED_TENSOR].view(-1)[CHANGED_ELEMENT] += 0.5
    assert fingerprint(model) != before
    assert sampled_fingerprint(model) == before_sampled  # why it was replaced


def test_the_fingerprint_is_of_the_values_whatever_dtype_holds_them():
    """A base stored in bfloat16 hashes the same loaded in bfloat16 or float32 (the upcast is exact)."""
    stored = _base().to(torch.bfloat16)
    assert fingerprint(stored) == fingerprint(stored.float())
    assert fingerprint(_base()) != fingerprint(_base().to(torch.bfloat16))  # rounded weights are another base


def test_resuming_onto_a_base_changed_past_its_first_elements_fails_in_one_sentence(fitted, tmp_path):
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    with pytest.raises(CheckpointMismatchError, match="was trained on base model 'tiny-llama'") as error:
        helpers.trainer(tmp_path, max_steps=4).fit(helpers.lora_module(_changed_base(tmp_path / "changed")),
                                                   datamodule=data, ckpt_path=str(fitted))
    assert_one_sentence(str(error.value))


def test_the_same_weights_in_another_folder_resume(fitted, tmp_path):
    copy = shutil.copytree(zoo.resolve(helpers.BACKBONE), tmp_path / "moved-base")
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    trainer = helpers.trainer(tmp_path, max_steps=4)
    trainer.fit(helpers.lora_module(str(copy)), datamodule=data, ckpt_path=str(fitted))
    assert trainer.global_step == 4


def test_a_checkpoint_with_the_sampled_fingerprint_of_before_still_resumes(fitted, tmp_path):
    saved = torch.load(fitted, weights_only=True)
    saved["lightning_peft"]["fingerprint"] = sampled_fingerprint(_base())
    del saved["lightning_peft"]["content_sha256"]  # as written before both
    torch.save(saved, tmp_path / "old.ckpt")
    data = helpers.classification_data(helpers.write_jsonl(tmp_path / "data.jsonl"))
    trainer = helpers.trainer(tmp_path, max_steps=4)
    trainer.fit(helpers.lora_module(), datamodule=data, ckpt_path=str(tmp_path / "old.ckpt"))
    assert trainer.global_step == 4


def test_an_export_loads_onto_its_base_only_with_either_fingerprint_form(fitted, tmp_path):
    from lightning_peft.inference import load_folder

    folder = tmp_path / "adapter"
    main(["export", "--ckpt_path", str(fitted), "--output_dir", str(folder)])
    card = json.loads((folder / CARD_NAME).read_text())
    assert card["base_fingerprint"] == fingerprint(_base())
    load_folder(folder, device="cpu")
    for recorded, loads in [(sampled_fingerprint(_base()), True), ("v2:" + "0" * 32, False)]:
        (folder / CARD_NAME).write_text(json.dumps({**card, "base_fingerprint": recorded}))
        if loads:
            load_folder(folder, device="cpu")  # an export written before v2
        else:
            with pytest.raises(CardError, match="was trained on a base 'tiny-llama' with fingerprint v2:0+"):
                load_folder(folder, device="cpu")
