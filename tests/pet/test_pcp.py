"""PCP through `lightning-peft pet` (pet.pcp): teacher -> pseudo-labels -> continued pre-training on the filled-in
pool -> prompt-based fine-tuning again from that adapter; each stage in its own folder, a rerun skips finished ones."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from lightning_peft import zoo
from lightning_peft.cli import main
from lightning_peft.pet import load_trained_state, paired_gain, trained_state
from lightning_peft.tasks import ClozeClassification
from tests.modules.test_cloze_tricks import topics_file  # noqa: F401 - the fixture, one cache for the module
from tests.tasks.test_cloze_training import LABELS
from tests.test_pet_cli import _recipe, _refused

PATTERN = ["{text}\nTopic: {mask}"]


def _written(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_pcp_runs_stage_by_stage_and_a_rerun_skips_the_finished_stages(tmp_path, topics_file, capsys):
    recipe = _recipe(tmp_path, topics_file, patterns=PATTERN, pcp=True, distill=False, pcp_max_steps=2, zero_shot=True)
    out = tmp_path / "pet" / "shots-0"
    main(["pet", "--config", str(recipe), "--pet.stop_after", "pretraining"])
    pretraining = json.loads((out / "pcp/pretraining/result.json").read_text())
    assert not (out / "pcp/p0-s0").exists()  # stopped after the continued pre-training
    # 36 texts - 6 test - 2 shots x 3 classes = 24 pool texts, each written into the one pattern with its pseudo-label
    assert pretraining["texts"] == 24 and sum(pretraining["pseudo_labels"].values()) == 24
    assert pretraining["steps"] == 2 and pretraining["train/lm_loss"] > 1.0
    adapter = load_file(str(out / "pcp/pretraining/adapter.safetensors"))
    assert any("lora_B" in name and name.endswith("weight") and bool(t.abs().sum() > 0) for name, t in adapter.items())
    teacher = json.loads((out / "g0/p0-s0/result.json").read_text())
    assert teacher["trained"] is False and teacher["pcp"] is False  # zero_shot: the teacher only scored
    finished = _written(out)

    main(["pet", "--config", str(recipe)])  # the same command again: only the fine-tuning from PCP's adapter runs
    printed = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    again = json.loads((out / "pcp/p0-s0/result.json").read_text())
    assert again["pcp"] is True and again["trained"] is True and 0 <= again["test/acc"] <= 1
    assert not (out / "classifier").exists()  # distill: false
    summary = json.loads((tmp_path / "pet/pcp_summary.json").read_text())
    pair = summary["pairs"]["shots-0/p0-s0"]["test/acc"]
    assert pair == {"without": teacher["test/acc"], "with": again["test/acc"]}
    assert summary["metrics"]["test/acc"]["gain_mean"] == pytest.approx(again["test/acc"] - teacher["test/acc"])
    assert "PCP + prompt-based FT" in printed and "zero-shot (no PCP)" in printed


def test_fill_slot_writes_the_pseudo_labels_first_word_into_the_answer_slot():
    causal = ClozeClassification({"sport": ["football", "sport"], "tech": "technology"})
    causal.bind(zoo.load_tokenizer("tiny-llama"), LABELS)
    football = causal.tokenizer.encode(" football", add_special_tokens=False)
    assert causal.fill_slot([5, 6, 7], LABELS.index("sport")) == [5, 6, 7, *football]
    masked = ClozeClassification({"tech": "technology"}, lm="masked")
    masked.bind(zoo.load_tokenizer("tiny-bert"), LABELS)
    mask, word = masked.tokenizer.mask_token_id, masked.tokenizer.encode(" technology", add_special_tokens=False)
    assert masked.fill_slot([101, 9, mask, 102], LABELS.index("tech")) == [101, 9, *word, 102]


def test_the_pretrained_adapter_is_where_fine_tuning_starts():
    source = {"lowrank": {"a.lora_A": nn.Parameter(torch.randn(2, 3)), "a.lora_B": nn.Parameter(torch.randn(3, 2))}}
    target = {"lowrank": {"a.lora_A": nn.Parameter(torch.zeros(2, 3)), "a.lora_B": nn.Parameter(torch.zeros(3, 2))}}
    load_trained_state(target, trained_state(source))
    assert all(torch.equal(target["lowrank"][n], source["lowrank"][n]) for n in source["lowrank"])
    with pytest.raises(ValueError, match="does not fit this method"):
        load_trained_state({"lowrank": {"b.lora_A": nn.Parameter(torch.zeros(1))}}, trained_state(source))
    assert paired_gain([0.5, 0.6], [0.7, 0.6])["gain_mean"] == pytest.approx(0.1)


@pytest.mark.parametrize("change, match", [
    ({"data": {"max_unlabelled": 0}}, "scores it for the ensemble, the pattern models' language-model term "
                                         "trains on it (model.init_args.alpha < 1), PCP pseudo-labels it (pet.pcp); use"),
    ({"data": {"shots_per_class": 20}}, "shots_per_class=20 is more than the training split's"),
    ({"pet": {"patterns": ["{text}\nTopic:"]}}, "has 0 answer slots; write {mask} exactly once"),
    ({"pet": {"pcp": False, "stop_after": "pretraining"}}, "pet.stop_after: pretraining stops after PCP's"),
])
def test_bad_pcp_input_is_one_sentence_before_anything_trains(tmp_path, topics_file, capsys, change, match):
    recipe = _recipe(tmp_path, topics_file, patterns=PATTERN, pcp=True, distill=False)
    config = yaml.safe_load(recipe.read_text())
    config["data"]["init_args"].update(change.get("data", {}))
    config["pet"].update(change.get("pet", {}))
    recipe.write_text(yaml.safe_dump(config))
    assert match in _refused(capsys, ["pet", "--config", str(recipe)])
    assert not list((tmp_path / "pet").glob("shots-*"))
