"""`lightning-peft export` and `merge`: a `fit` checkpoint becomes a peft folder or a plain transformers folder."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lightning_peft import zoo
from lightning_peft.checkpoint import AtomicCheckpointIO
from lightning_peft.cli import main
from lightning_peft.cli.rebuild import module_from_checkpoint
from lightning_peft.modules import LoraModule
from tests import helpers


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A checkpoint written by `lightning-peft fit` after 3 steps."""
    root = tmp_path_factory.mktemp("fitted")
    config = helpers.cli_config(root, helpers.write_jsonl(root / "data.jsonl"), every_n_steps=3)
    main(["fit", "--config", str(config), "--trainer.max_steps", "3"])
    return root / "ckpt" / "step=3.ckpt"


@pytest.fixture(scope="module")
def reference_logits(fitted):
    """Logits of the trained adapter, rebuilt without the CLI: the same module, the checkpoint's weights loaded."""
    module = helpers.lora_module()
    module.configure_model()
    module.load_state_dict(torch.load(fitted, weights_only=True)["state_dict"], strict=False)
    with torch.no_grad():
        logits = module.eval().model(input_ids=helpers.sample_input_ids()).logits
        base = AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE))(input_ids=helpers.sample_input_ids())
    assert not torch.allclose(logits, base.logits, atol=1e-4)  # training moved the adapter away from the base
    return logits


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=helpers.sample_input_ids()).logits


def test_export_writes_a_peft_folder_with_the_trained_adapter(fitted, reference_logits, tmp_path):
    main(["export", "--ckpt_path", str(fitted), "--output_dir", str(tmp_path / "adapter")])
    base = AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE))
    torch.testing.assert_close(logits_of(PeftModel.from_pretrained(base, tmp_path / "adapter")), reference_logits)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # written through a temporary sibling, renamed


def test_merge_writes_a_plain_transformers_folder(fitted, reference_logits, tmp_path):
    main(["merge", "--ckpt_path", str(fitted), "--output_dir", str(tmp_path / "merged")])
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits_of(merged), reference_logits, atol=1e-5, rtol=1e-5)


def test_export_rebuilds_the_subclass_with_linked_label_names(fitted, tmp_path):
    # FineTuneModule.load_from_checkpoint alone builds FineTuneModule: Lightning drops the recorded class path.
    module = module_from_checkpoint(str(fitted), require="export")
    assert type(module) is LoraModule
    assert module.hparams.label_names == helpers.LABELS and module.task.label_names == helpers.LABELS
    assert module.method.dropout == helpers.DROPOUT


@pytest.mark.parametrize("command", ["export", "merge"])
def test_a_non_empty_output_dir_is_refused_in_one_sentence(fitted, tmp_path, command):
    (tmp_path / "keep.txt").write_text("mine")
    refused = r"^error: --output_dir .* is not empty; choose a new folder so nothing is overwritten\.$"
    with pytest.raises(SystemExit, match=refused):
        main([command, "--ckpt_path", str(fitted), "--output_dir", str(tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_checkpoint_written_outside_the_cli_gets_a_clear_error(fitted, tmp_path):
    saved = torch.load(fitted, weights_only=True)
    del saved["hyper_parameters"]  # what `on_save_checkpoint` does for a module built in Python
    AtomicCheckpointIO().save_checkpoint(saved, tmp_path / "python.ckpt")  # hashed anew, as the writer would
    with pytest.raises(SystemExit, match=r"^error: This checkpoint does not record how its module was built"):
        main(["export", "--ckpt_path", str(tmp_path / "python.ckpt"), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_safe_checkpoint_gets_a_clear_error(tmp_path):
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit, match=r"is not a checkpoint that loads safely \(\w+\)"):
        main(["export", "--ckpt_path", str(tmp_path / "broken.ckpt"), "--output_dir", str(tmp_path / "out")])


def test_export_of_a_soft_prompt_checkpoint_reloads_with_the_same_outputs(tmp_path):
    import yaml

    from lightning_peft.methods.soft_prompt_io import load_soft_prompt

    config = helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"), every_n_steps=2)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["class_path"] = "lightning_peft.modules.SoftPromptModule"
    settings["model"]["init_args"]["method"] = {"class_path": "lightning_peft.methods.DePT",
                                                "init_args": {"num_virtual_tokens": 4, "rank": 2, "max_length": 16}}
    config.write_text(yaml.safe_dump(settings))
    main(["fit", "--config", str(config), "--trainer.max_steps", "2"])
    main(["export", "--ckpt_path", str(tmp_path / "ckpt" / "step=2.ckpt"), "--output_dir", str(tmp_path / "prompt")])

    trained = module_from_checkpoint(str(tmp_path / "ckpt" / "step=2.ckpt"))
    assert trained.model.lowrank_b.abs().max() > 0  # B starts at zero: the checkpoint holds trained weights
    reloaded = load_soft_prompt(AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE)), tmp_path / "prompt")
    torch.testing.assert_close(logits_of(reloaded), logits_of(trained.model))


def test_merge_refuses_a_soft_prompt_checkpoint_in_one_sentence(tmp_path):
    import yaml

    config = helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"), every_n_steps=1)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["class_path"] = "lightning_peft.modules.SoftPromptModule"
    settings["model"]["init_args"]["method"] = {"class_path": "lightning_peft.methods.PromptTuning",
                                                "init_args": {"num_virtual_tokens": 4}}
    config.write_text(yaml.safe_dump(settings))
    main(["fit", "--config", str(config), "--trainer.max_steps", "1"])
    with pytest.raises(SystemExit, match=r"^error: This checkpoint's method, PromptTuning, cannot merge into its base: [^;]+; use `lightning-peft export` and load the export onto the base\.$"):
        main(["merge", "--ckpt_path", str(tmp_path / "ckpt" / "step=1.ckpt"), "--output_dir", str(tmp_path / "merged")])
    assert not (tmp_path / "merged").exists()


def test_selective_checkpoints_merge_to_their_fine_tuned_weights_and_refuse_export(tmp_path):
    import yaml

    from transformers import AutoModelForCausalLM

    config = helpers.cli_config(tmp_path, helpers.write_jsonl(tmp_path / "data.jsonl"), every_n_steps=2)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["class_path"] = "lightning_peft.modules.SelectiveModule"
    settings["model"]["init_args"]["method"] = {"class_path": "lightning_peft.methods.LastBlock"}
    config.write_text(yaml.safe_dump(settings))
    main(["fit", "--config", str(config), "--trainer.max_steps", "2"])
    ckpt = tmp_path / "ckpt" / "step=2.ckpt"

    refused = (r"^error: This checkpoint's method, LastBlock, cannot export an adapter: it has no separate adapter; "
               r"use `lightning-peft merge` to save the whole fine-tuned model\.$")
    with pytest.raises(SystemExit, match=refused):
        main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "adapter")])
    assert not (tmp_path / "adapter").exists()

    main(["merge", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "merged")])
    trained = module_from_checkpoint(str(ckpt))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE))
    torch.testing.assert_close(logits_of(merged), logits_of(trained.model))
    assert not torch.allclose(logits_of(merged), logits_of(base), atol=1e-5)  # the fine-tuned weights, not the base
