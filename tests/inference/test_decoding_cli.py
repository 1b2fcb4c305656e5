"""The decoding options end to end through `lightning-peft generate`, the configs/decoding YAMLs, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_peft.cli import main
from lightning_peft.cli.generate import _generate_parser
from lightning_peft.inference.beam_classifier import AttributeClassifier
from lightning_peft.inference.beam_classifier_training import parse_recipe

ROOT = Path(__file__).resolve().parents[2]
DECODING = sorted((ROOT / "configs" / "decoding").glob("*.yaml"))


def _answers(path: Path) -> list[str]:
    return [json.loads(line)["generated"] for line in path.read_text().splitlines()]


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "prompts.txt").write_text("the cat sat on the mat and\nhello there my good friend\n")
    (tmp_path / "style.txt").write_text("the cat sat on the mat. the dog sat on the log. " * 20)
    AttributeClassifier(64).save(tmp_path / "clf")
    return tmp_path


def _generate(inputs: Path, name: str, *options: str) -> list[str]:
    out = inputs / f"{name}.jsonl"
    main(["generate", "--model", "tiny-llama", "--prompts_file", str(inputs / "prompts.txt"), "--output", str(out),
          "--max_new_tokens", "5", *options])
    return _answers(out)


def test_generate_takes_every_decoding_option(inputs):
    plain = _generate(inputs, "plain")
    styled = _generate(inputs, "styled", "--style_corpus", str(inputs / "style.txt"), "--style_lambda", "5")
    assert styled != plain and len(styled) == 2
    assert _generate(inputs, "off", "--style_corpus", str(inputs / "style.txt"), "--style_lambda", "0") == plain
    beams = _generate(inputs, "beams", "--num_beams", "3", "--beam_classifier", str(inputs / "clf"), "--beta", "1")
    optimised = _generate(inputs, "optimised", "--hso_steps", "2", "--hso_lr", "0.05")
    assert len(beams) == len(optimised) == 2


@pytest.mark.parametrize("options, message", [
    (["--style_lambda", "-1"], "lambda must be >= 0"),
    (["--style_corpus", "EMPTY"], "has no text"),
    (["--num_beams", "0"], "num_beams must be an integer >= 1"),
    (["--num_beams", "2", "--beta", "-0.5"], "must be >= 0"),
    (["--hso_steps", "-2"], "step budget must be an integer >= 0"),
])
def test_bad_decoding_options_get_one_sentence_before_any_model_loads(inputs, options, message):
    (inputs / "empty.txt").write_text("\n")
    options = [str(inputs / "empty.txt") if o == "EMPTY" else o for o in options]
    with pytest.raises(SystemExit) as error:  # a model that does not exist: the decoding options are checked first
        main(["generate", "--model", "no-such-model", "--prompt", "hi", *options])
    assert str(error.value).startswith("error: ") and message in str(error.value)


def test_a_beam_classifier_for_another_model_is_one_sentence(inputs):
    AttributeClassifier(576).save(inputs / "clf576")
    with pytest.raises(SystemExit) as error:
        main(["generate", "--model", "tiny-llama", "--prompt", "hi", "--num_beams", "2", "--beam_classifier",
              str(inputs / "clf576")])
    assert "size 576, but this model's are 64" in str(error.value)


def test_every_decoding_yaml_names_itself_and_parses():
    assert len(DECODING) >= 3
    for path in DECODING:
        first = path.read_text().splitlines()[0]
        assert f"--config configs/decoding/{path.name}" in first, path.name
        values = yaml.safe_load(path.read_text())
        if first.startswith("# lightning-peft generate "):
            parsed = _generate_parser().parse_args(["--config", str(path), "--prompt", "x"])
            assert all(parsed[key] == value for key, value in values.items()), path.name
        else:
            assert first.startswith("# python -m lightning_peft.inference.beam_classifier_training "), path.name
            recipe = parse_recipe(["--config", str(path)])
            assert all(getattr(recipe, key) == value for key, value in values.items()), path.name
