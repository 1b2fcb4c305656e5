"""Bad input to the cloze family's recipes, as a user types it: one `error:` sentence before anything trains,
is tested or is written (issue 17). Each case runs the real recipe with the backbone swapped for tiny-llama."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch  # noqa: F401 - imported outside any test, its log handler writes to the real stderr
import pytest

from lightning_peft.cli import main
from lightning_peft.data import ClassificationData, DataConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model.init_args.backbone", "tiny-llama", "--trainer.enable_progress_bar", "false"]


def _refused(capfd, argv: list[str]) -> str:
    """The one `error:` line, then all else printed (file descriptors: Lightning's log handler writes there too)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capfd.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    return errors[0] + "\n" + captured.out + captured.err


@pytest.mark.parametrize("command, recipe, option, named", [
    ("fit", "single_word_trec6", "--data.init_args.template", "error: template "),
    ("pet", "pet_bbc_news", "--pet.patterns", "error: pet.patterns[0] "),
    ("pet", "pet_bbc_news", "--pet.classifier_template", "error: pet.classifier_template "),
])
def test_a_template_that_fills_in_the_label_is_refused(tmp_path, capfd, command, recipe, option, named):
    value = {"--data.init_args.template": "Question {text} - answer type ({label})",
             "--pet.patterns": '["{text}\\nTopic {label}: {mask}"]',
             "--pet.classifier_template": "{label} - {text}"}[option]
    run = ["--pet.output_dir", str(tmp_path / "pet")] if command == "pet" else ["--trainer.max_steps", "1"]
    printed = _refused(capfd, [command, "--config", str(ROOT / f"configs/cloze/{recipe}.yaml"), *TINY, option, value,
                                "--trainer.default_root_dir", str(tmp_path / "run"), *run])
    assert printed.startswith(named) and "fills {label}, the class being predicted, into every input" in printed
    assert not list(tmp_path.iterdir())  # nothing written: no run folder, no PET output


@pytest.mark.parametrize("setting, match", [
    (["--data.init_args.max_unlabelled", "0"], "pool is empty, but every pattern model scores it for the ensemble, the "
                                               "pattern models' language-model term trains on it (model.init_args.alpha < 1);"),
    (["--data.init_args.max_unlabelled", "0", "--model.init_args.alpha", "1"],
     "pool is empty, but every pattern model scores it for the ensemble; use FewShotClassificationData with max_unlabelled"),
    (["--data.init_args.shots_per_class", "1000"], "shots_per_class=1000 is more than the training split's"),
])
def test_pet_without_distillation_refuses_what_its_pattern_models_need_before_writing(tmp_path, capfd, setting, match):
    out = tmp_path / "pet"
    argv = ["pet", "--config", str(ROOT / "configs/cloze/pet_bbc_news.yaml"), *TINY, "--pet.distill", "false",
            "--pet.seeds", "[0]", "--pet.output_dir", str(out), "--trainer.max_steps", "1"]
    assert match in _refused(capfd, [*argv, *setting])
    assert not out.exists()  # no pet_config.yaml, no run folder: the fixed command runs in the same folder
    main(argv + ["--data.init_args.max_unlabelled", "8", "--data.init_args.max_eval_examples", "4",
                 "--data.init_args.shots_per_class", "2", "--pet.stop_after", "patterns"])
    assert (out / "shots-0/g0/p0-s0/result.json").is_file()


def test_an_empty_pool_is_refused_before_the_test_pass_of_test_before_fit(tmp_path, capfd):
    printed = _refused(capfd, ["fit", "--config", str(ROOT / "configs/cloze/list_trec6.yaml"), *TINY,
                                "--data.init_args.max_unlabelled", "0", "--data.init_args.max_eval_examples", "4",
                                "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.fast_dev_run", "true"])
    assert "LiST's student trains on the data's unlabelled pool" in printed and "max_unlabelled > 0" in printed
    assert "Test metric" not in printed and not list(tmp_path.rglob("metrics.json"))  # no test pass ran, no table


@pytest.mark.parametrize("extra, expected", [
    (["--pet.generatoins", "2"], "unknown option --pet.generatoins; check its spelling against the command's --help"),
    (["--pet.patterns", "{text} Topic {mask}"], "pet.patterns must be a list (YAML: one '- item' per line"),
])
def test_a_misspelt_or_mistyped_pet_option_says_how_to_fix_it(tmp_path, capfd, extra, expected):
    printed = _refused(capfd, ["pet", "--config", str(ROOT / "configs/cloze/pet_bbc_news.yaml"), *TINY,
                               "--pet.output_dir", str(tmp_path / "pet"), *extra])
    assert printed.startswith(f"error: {expected}") and not (tmp_path / "pet").exists()


def test_a_label_column_with_another_name_is_refused_by_its_name_and_text_stays_the_input():
    with pytest.raises(DataConfigError, match=r"fills \{topic\}, the class being predicted"):
        ClassificationData("trec6", label_column="topic", template="{text} - {topic}")
    ClassificationData("trec6", label_column="text", text_column="sentence", template="{text}")  # {text} is the input
