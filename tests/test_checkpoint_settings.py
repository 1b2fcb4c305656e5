"""A `--ckpt_path` trained with other module, method or task settings than the config: refused naming the
differences (fit, validate, test), or used on purpose with `--use_checkpoint_settings true`.

Checkpoints come from `lightning-peft fit` on tiny-llama (one step); every refusal happens before weights load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lightning_peft.cli import main
from lightning_peft.cli.ckpt_settings import settings_differences
from tests.test_reliability import base_config, refused, setup_inputs, snapshot

PROMPT_TUNING = {"class_path": "lightning_peft.modules.SoftPromptModule", "method": {
    "class_path": "lightning_peft.methods.PromptTuning", "init_args": {"num_virtual_tokens": 2}}}


def _fit_checkpoint(root: Path, name: str, module: dict | None = None) -> Path:
    """`fit` one step with the reliability suite's base config (LoRA r=2 on q_proj), or `module` swapped in; its last.ckpt."""
    config = base_config(str(root / "in" / "data.jsonl"))
    config["trainer"]["default_root_dir"] = str(root / name)
    if module is not None:
        config["model"]["class_path"] = module["class_path"]
        config["model"]["init_args"]["method"] = module["method"]
    path = root / "in" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    [ckpt] = (root / name).rglob("last.ckpt")
    return ckpt


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    setup_inputs(root)
    return {"lora": _fit_checkpoint(root, "lora"), "prompt": _fit_checkpoint(root, "prompt", PROMPT_TUNING)}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_PEFT_DEBUG", raising=False)
    setup_inputs(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_a_lora_rank_other_than_the_checkpoints_is_refused_naming_both(checkpoints, workdir, capsys, command):
    before = snapshot(workdir)
    line = refused([command, "--config", "in/base.yaml", "--model.init_args.method.init_args.r", "4",
                    "--ckpt_path", str(checkpoints["lora"])], capsys, ("method.r=2", "method.r=4", "--use_checkpoint_settings"))
    assert "alpha" not in line  # only what differs is named
    assert snapshot(workdir) == before


def test_several_method_settings_are_all_named(checkpoints, workdir, capsys):
    refused(["fit", "--config", "in/base.yaml", "--model.init_args.method.init_args.alpha", "4",
             "--model.init_args.method.init_args.target_modules", "[q_proj, v_proj]", "--ckpt_path", str(checkpoints["lora"])],
            capsys, ("method.alpha=16.0", "method.alpha=4.0", "method.target_modules=['q_proj']",
                     "method.target_modules=['q_proj', 'v_proj']"))


def test_a_prompt_tuning_checkpoint_under_a_lora_config_is_refused(checkpoints, workdir, capsys):
    before = snapshot(workdir)
    refused(["fit", "--config", "in/base.yaml", "--ckpt_path", str(checkpoints["prompt"])], capsys,
            ("module='SoftPromptModule'", "method='PromptTuning'", "module='LoraModule'", "method='Lora'"))
    assert snapshot(workdir) == before


def test_the_same_settings_resume_and_the_opt_in_resumes_with_the_checkpoints(checkpoints, workdir, capsys):
    main(["fit", "--config", "in/base.yaml", "--trainer.max_steps", "2", "--ckpt_path", str(checkpoints["lora"])])
    assert "use_checkpoint_settings" not in capsys.readouterr().err

    main(["fit", "--config", "in/base.yaml", "--trainer.max_steps", "2", "--trainer.default_root_dir", "opt_in",
          "--model.init_args.method.init_args.r", "4", "--use_checkpoint_settings", "true",
          "--ckpt_path", str(checkpoints["lora"])])
    assert "continuing with the checkpoint's method.r=2 (the config had method.r=4)" in capsys.readouterr().err
    [resumed] = Path("opt_in").rglob("last.ckpt")
    saved = torch.load(resumed, weights_only=True)
    assert saved["global_step"] == 2  # continued from step 1, not restarted
    assert saved["hyper_parameters"]["method"]["init_args"]["r"] == 2
    assert {tuple(w.shape) for name, w in saved["state_dict"].items() if "lora_A" in name} == {(2, 64)}


def _lora(**init_args) -> dict:
    return {"class_path": "lightning_peft.methods.Lora", "init_args": {"r": 2, "target_modules": ["q_proj"], **init_args}}


@pytest.mark.parametrize("saved, config, expected", [
    (_lora(), _lora(target_modules=("q_proj",)), []),  # a tuple in the parsed config is the list the checkpoint stored
    (_lora(), _lora(added_since=1), []),  # an argument only one side records is not a difference
    (_lora(), _lora(r=8), [("method.r", 2, 8)]),
    (_lora(), {"class_path": "lightning_peft.methods.Dora", "init_args": {"r": 8}}, [("method", "Lora", "Dora")]),
])
def test_settings_differences(saved, config, expected):
    hparams = {"_class_path": "lightning_peft.modules.LoraModule", "method": saved, "backbone": "tiny-llama"}
    model = {"class_path": "lightning_peft.modules.LoraModule", "init_args": {"method": config, "backbone": "other"}}
    assert settings_differences(hparams, model) == expected


def test_a_checkpoint_without_recorded_settings_has_no_differences():
    assert settings_differences({}, {"class_path": "lightning_peft.modules.LoraModule", "init_args": {}}) == []
