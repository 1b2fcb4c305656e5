"""`lightning-peft pet`: pattern models -> ensemble -> distilled classifier (and iPET generations) from one recipe,
resumable between stages; bad patterns and a changed config are one sentence before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lightning_peft.cli import main
from lightning_peft.cli.pet import PetCLI
from lightning_peft.modules import ClozeModule
from tests.tasks.test_cloze_training import LABELS, topics_file  # noqa: F401 - the fixture: 12 short texts per class

PATTERNS = ["{text}\nTopic: {mask}", "Story: {text} It is about {mask}"]


def _recipe(tmp_path: Path, data_file: str, **pet) -> Path:
    recipe = {
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0, "limit_val_batches": 0},
        "model": {"class_path": "lightning_peft.modules.ClozeModule", "init_args": {
            "backbone": "tiny-llama", "alpha": 0.9, "unlabelled_batch_size": 2,
            "task": {"class_path": "lightning_peft.tasks.ClozeClassification",
                     "init_args": {"label_words": {"sport": ["football", "sport"], "tech": "technology"}}},
            "method": {"class_path": "lightning_peft.methods.Lora", "init_args": {"r": 2, "target_modules": ["q_proj"]}}}},
        "data": {"class_path": "lightning_peft.data.FewShotClassificationData", "init_args": {
            "dataset": data_file, "label_names": LABELS, "shots_per_class": 2, "val_size": 0, "test_size": 6,
            "batch_size": 3, "eval_batch_size": 12, "max_length": 24}},
        "pet": {"patterns": PATTERNS, "output_dir": str(tmp_path / "pet"), "classifier_max_steps": 1, **pet},
    }
    path = tmp_path / "pet.yaml"
    path.write_text("# lightning-peft pet --config pet.yaml\n" + yaml.safe_dump(recipe, sort_keys=False))
    return path


def _refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err  # (the tiny model's first build may print progress)
    return errors[0]


def test_ipet_stages_resume_and_distil_from_one_command(tmp_path, topics_file, capsys):
    recipe = _recipe(tmp_path, topics_file, generations=2)
    out = tmp_path / "pet" / "shots-0"
    main(["pet", "--config", str(recipe), "--pet.stop_after", "patterns"])
    finished = {p: p.stat().st_mtime_ns for p in out.glob("g*/p*-s0/**/*") if p.is_file()}
    assert sorted(p.parent.name for p in out.glob("g*/*/result.json")) == ["p0-s0", "p0-s0", "p1-s0", "p1-s0"]
    assert not (out / "ensemble.json").exists()  # stopped after the pattern models

    main(["pet", "--config", str(recipe)])  # the same command again: only the stages still missing run
    printed = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # no pattern model trained again

    first, second = (json.loads((out / f"g{g}/p0-s0/result.json").read_text()) for g in (0, 1))
    assert first["train_examples"] == 6 and first["ipet"] is None
    # generation 1: the 6 shots plus 2 * (5 - 1) pool texts per class, labelled by the one other model
    assert second["ipet"]["labellers"] == 1  # a class no labeller predicts gets none (reported as short)
    assert second["train_examples"] == 6 + 8 * (3 - second["ipet"]["short_classes"])
    ensemble = json.loads((out / "ensemble.json").read_text())
    assert ensemble["models"] == ["p0-s0", "p1-s0"] and set(ensemble["weights"]) == {"p0-s0", "p1-s0"}
    saved = [torch.load(out / f"g1/{name}/scores.pt", weights_only=True) for name in ensemble["models"]]
    weights = torch.tensor([ensemble["weights"][name] for name in ensemble["models"]])
    weights = weights if weights.sum() > 0 else torch.ones(2)
    expected = (weights[0] * saved[0]["pool"] + weights[1] * saved[1]["pool"]) / weights.sum()
    torch.testing.assert_close(torch.load(out / "ensemble.pt", weights_only=True)["soft_labels"], expected)
    classifier = json.loads((out / "classifier/result.json").read_text())
    assert 0 <= classifier["test/acc"] <= 1 and classifier["temperature"] == 2.0
    records = tmp_path / "records.jsonl"
    records.write_text('{"text": "sport story 40"}\n{"text": "tech story 41"}\n')
    main(["predict", "--adapter", str(out / "classifier/adapter"), "--input", str(records),
          "--output", str(tmp_path / "predicted.jsonl")])  # the distilled classifier as a user applies it
    predicted = [json.loads(line) for line in (tmp_path / "predicted.jsonl").read_text().splitlines()]
    assert [p["label"] in LABELS and set(p["probabilities"]) == set(LABELS) for p in predicted] == [True, True]
    stages = ["g0 pattern 0", "g0 pattern 1", "g0 all patterns", "g1 pattern 0", "g1 pattern 1", "g1 all patterns",
              "ensemble", "classifier"]
    summary = json.loads((tmp_path / "pet/summary.json").read_text())["stages"]
    assert sorted(summary) == sorted(stages) and summary["g1 all patterns"]["runs"] == 2
    assert summary["classifier"]["test/f1"]["values"] == [classifier["test/f1"]]
    table = printed.splitlines()[-len(stages):]  # the second run's table, in stage order
    assert [line.split("  ")[0].strip() for line in table] == stages

    changed = _recipe(tmp_path, topics_file, generations=2, seeds=[0, 1])
    assert "holds a PET run made with another config" in _refused(capsys, ["pet", "--config", str(changed)])


@pytest.mark.parametrize("patterns, match", [
    (["{text}\nTopic: {mask}", "{text}\nTopic:"], "has 0 answer slots; write {mask} exactly once"),
    (["Topic: {mask}"], "pet.patterns[0] 'Topic: {mask}' has no {text} slot"),
    (["{mask}: {text}"], "a causal LM answers with the next token"),
])
def test_a_bad_pattern_is_one_sentence_before_anything_trains(tmp_path, topics_file, capsys, patterns, match):
    recipe = _recipe(tmp_path, topics_file)
    config = yaml.safe_load(recipe.read_text())
    config["pet"]["patterns"] = patterns
    recipe.write_text(yaml.safe_dump(config))
    assert match in _refused(capsys, ["pet", "--config", str(recipe)])
    assert not list((tmp_path / "pet").glob("shots-*"))


def test_each_run_is_built_from_the_recipe_not_from_the_run_before(tmp_path, topics_file):
    cli = PetCLI(ClozeModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                 save_config_callback=None, args=["--config", str(_recipe(tmp_path, topics_file))])
    cli.build(tmp_path / "classifier", "{text}", shot_seed=1, seed=0, max_steps=7)
    assert cli.trainer.max_steps == 7 and cli.datamodule.template == "{text}" and cli.datamodule.shot_seed == 1
    cli.build(tmp_path / "p0", "{text} Topic:", shot_seed=0, seed=0)
    assert cli.trainer.max_steps == 1 and cli.datamodule.template == "{text} Topic:" and cli.datamodule.shot_seed == 0


def _weighted_recipe(tmp_path: Path, data_file: str, task: dict, support_size: int = 200, **pet) -> Path:
    """The recipe of `_recipe` with SciPrompt's weighted verbalizer (`task`: its init_args) as the pattern model."""
    recipe = _recipe(tmp_path, data_file, **pet)
    config = yaml.safe_load(recipe.read_text())
    config["model"]["class_path"] = "lightning_peft.modules.WeightedVerbalizerModule"
    config["model"]["init_args"]["support_size"] = support_size
    config["model"]["init_args"]["task"] = {"class_path": "lightning_peft.tasks.WeightedVerbalizerClassification",
                                            "init_args": task}
    recipe.write_text(yaml.safe_dump(config, sort_keys=False))
    return recipe


def test_pattern_models_with_weighted_verbalizers_expand_their_words_from_the_training_split(tmp_path, topics_file,
                                                                                              monkeypatch):
    from lightning_peft.checkpoint import HPARAMS_KEY

    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))
    recipe = _weighted_recipe(tmp_path, topics_file, {
        "label_words": {"sport": ["sport"], "tech": ["technology"]}, "expand_from": "train",
        "expansion": {"encoder": "tiny-bert", "top_k": 2, "threshold": -1.0, "min_count": 2}})
    main(["pet", "--config", str(recipe), "--pet.stop_after", "patterns"])
    for name in ("p0-s0", "p1-s0"):
        folder = tmp_path / "pet/shots-0/g0" / name
        assert 0 <= json.loads((folder / "result.json").read_text())["test/acc"] <= 1
        (ckpt,) = folder.rglob("last.ckpt")
        words = torch.load(ckpt, weights_only=False)[HPARAMS_KEY]["task"]["init_args"]["word_scores"]
        added = {word for label in words for word in words[label]} - {"sport", "technology"}
        texts = [json.loads(line)["text"] for line in Path(topics_file).read_text().splitlines()]
        assert added and added <= {word for text in texts for word in text.split()}  # the data's words, beside the seeds


def test_calibrated_pattern_models_score_their_shots_for_the_ensemble_weight_with_the_prior(tmp_path, topics_file,
                                                                                              monkeypatch):
    import lightning_peft.cli.pet as pet

    recipe = _weighted_recipe(tmp_path, topics_file, {
        "label_words": {"sport": ["sport", "football"], "tech": ["technology", "computer"]}, "calibrate": True},
        support_size=4, patterns=PATTERNS[:1])
    priors = []
    scored = pet.class_scores

    def recording(task, *args, **kwargs):
        priors.append(task.log_prior)
        return scored(task, *args, **kwargs)

    monkeypatch.setattr(pet, "class_scores", recording)
    main(["pet", "--config", str(recipe), "--pet.stop_after", "patterns"])
    assert len(priors) == 3 and all(prior is not None for prior in priors)  # shots before training, then pool and test
    torch.testing.assert_close(priors[0], priors[-1])  # the fit kept the prior the weight was scored with
