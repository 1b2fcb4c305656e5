"""`lightning-peft evaluate` on an exported tiny-llama adapter and on a `fit` checkpoint."""

import json
import subprocess
import sys

import pytest
import torch

from lightning_peft.cli import main
from tests import helpers

FAST = ["--num_chunks", "2", "--chunk_tokens", "32", "--num_examples", "4", "--icl_prompts", "2",
        "--max_new_tokens", "3", "--transforms", "[original,pig_latin]"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An exported LoRA adapter whose weights differ from the base (LoRA's B starts at zero)."""
    module = helpers.lora_module()
    module.configure_model()
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return module.export(tmp_path_factory.mktemp("exported") / "adapter")


def test_evaluate_an_exported_adapter_against_its_base(adapter, tmp_path, capsys):
    main(["evaluate", "--adapter", str(adapter), "--backbone", "tiny-llama", "--output_dir", str(tmp_path / "eval"),
          "--robustness", "true", *FAST])
    printed = capsys.readouterr().out
    assert "forgetting/kl_from_base" in printed and "icl/pig_latin" in printed and "robustness/unseen/mean" in printed
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["forgetting"]["kl_from_base"] > 1e-6 and result["tuned"]["perplexity"] != result["base"]["perplexity"]
    assert {"original/base", "pig_latin/tuned"} <= set(result["conjugate"])
    assert (tmp_path / "eval" / "evaluation.png").stat().st_size > 1000


def test_evaluate_a_fit_checkpoint(tmp_path, capsys):
    config = helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"), every_n_steps=3)
    main(["fit", "--config", str(config), "--trainer.max_steps", "3"])
    main(["evaluate", "--ckpt_path", str(tmp_path / "ckpt" / "step=3.ckpt"), "--output_dir", str(tmp_path / "eval"), *FAST])
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["forgetting"]["perplexity_ratio"] > 0 and "acc_drop/sms_spam" in result["forgetting"]


def test_evaluate_needs_exactly_one_source():
    with pytest.raises(SystemExit, match="either --ckpt_path or --adapter"):
        main(["evaluate"])


@pytest.mark.parametrize(("transforms", "says"), [("[original,klingon]", "klingon, which is not a transform"),
                                                  ("[german]", "apt-get install dict-freedict-eng-deu")])
def test_a_transform_that_cannot_be_built_is_refused_before_weights_load(transforms, says, tmp_path, monkeypatch, capsys):
    from lightning_peft.evaluation import translate

    monkeypatch.setattr(translate, "FREEDICT_DIR", tmp_path / "no-dictionaries")  # as on a machine without the package
    with pytest.raises(SystemExit) as refused:
        main(["evaluate", "--ckpt_path", str(tmp_path / "missing.ckpt"), "--output_dir", str(tmp_path / "eval"),
              "--transforms", transforms])
    assert refused.value.code == 2
    line = capsys.readouterr().err.strip()
    assert says in line and "\n" not in line and not (tmp_path / "eval").exists()


def test_evaluate_is_a_cli_command_and_an_adapter_folder_names_its_base(adapter, tmp_path):
    done = subprocess.run([sys.executable, "-m", "lightning_peft.cli", "evaluate", "--adapter", str(adapter), "--output_dir", str(tmp_path / "eval"), "--icl_prompts", "0", *FAST[:6]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "perplexity" in done.stdout and (tmp_path / "eval" / "evaluation.json").is_file()


def _soft_prompt_config(tmp_path, method: dict, task: dict | None = None, data: dict | None = None):
    import yaml

    config = helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"), every_n_steps=3)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["class_path"] = "lightning_peft.modules.SoftPromptModule"
    settings["model"]["init_args"]["method"] = method
    settings["model"]["init_args"].pop("lr_scheduler")
    if task is not None:
        settings["model"]["init_args"]["task"] = task
    if data is not None:
        settings["data"] = data
    config.write_text(yaml.safe_dump(settings))
    return config


def test_evaluate_a_dept_checkpoint_measures_the_prompt_against_the_base(tmp_path):
    # Before the method contract, the probes found the bare base inside DePT's wrapper: KL was exactly 0.
    config = _soft_prompt_config(tmp_path, {"class_path": "lightning_peft.methods.DePT",
                                            "init_args": {"num_virtual_tokens": 4, "rank": 2, "max_length": 16}})
    main(["fit", "--config", str(config), "--trainer.max_steps", "3"])
    main(["evaluate", "--ckpt_path", str(tmp_path / "ckpt" / "step=3.ckpt"), "--output_dir", str(tmp_path / "eval"), *FAST])
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["forgetting"]["kl_from_base"] > 1e-6
    assert result["tuned"]["perplexity"] != result["base"]["perplexity"]


def test_robustness_scores_the_trained_task_under_its_own_phrasings(tmp_path):
    templates = ["Text: {text}\nClass:", "{text}\nWhich class is this?", "Q: {text}\nA:"]
    words = {"alpha": "yes", "beta": "no"}
    config = _soft_prompt_config(
        tmp_path, {"class_path": "lightning_peft.methods.PromptTuning", "init_args": {"num_virtual_tokens": 4}},
        task={"class_path": "lightning_peft.tasks.RobustPrompt", "init_args": {
            "task": {"class_path": "lightning_peft.tasks.VerbalizerClassification", "init_args": {"label_words": words}}}},
        data={"class_path": "lightning_peft.data.ParaphraseClassificationData", "init_args": {
            "dataset": str(tmp_path / "data.jsonl"), "templates": templates, "label_names": helpers.LABELS,
            "val_size": 4, "test_size": 0, "batch_size": 4, "max_length": 24}})
    main(["fit", "--config", str(config), "--trainer.max_steps", "3"])
    unseen = "Input: {text}\nLabel:"
    main(["evaluate", "--ckpt_path", str(tmp_path / "ckpt" / "step=3.ckpt"), "--output_dir", str(tmp_path / "eval"),
          "--robustness", "true", "--unseen_templates", f"[{json.dumps(unseen)}]", *FAST])
    robustness = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["tuned"]["robustness"]
    assert set(robustness["templates"]) == {*templates, unseen}  # evaluation.json sorts keys
    assert robustness["seen"]["count"] == 3 and robustness["unseen"]["count"] == 1
