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


def test_evaluate_is_a_cli_command(adapter, tmp_path):
    done = subprocess.run([sys.executable, "-m", "lightning_peft.cli", "evaluate", "--adapter", str(adapter), "--backbone",
                           "tiny-llama", "--output_dir", str(tmp_path / "eval"), "--icl_prompts", "0", *FAST[:6]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "perplexity" in done.stdout and (tmp_path / "eval" / "evaluation.json").is_file()
