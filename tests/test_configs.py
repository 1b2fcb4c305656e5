"""Every YAML under configs/ parses against the CLI; recipes also instantiate without loading weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import yaml

from lightning_peft import zoo
from lightning_peft.cli import LightningPeftCLI, main
from lightning_peft.cli.pet import PetCLI
from lightning_peft.modules import FineTuneModule

ROOT = Path(__file__).resolve().parents[1]
# configs/decoding holds `generate` options and a script recipe, not fit recipes: tests/inference/test_decoding_configs.py
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "decoding")
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
RECIPES = [p for p in CONFIGS if "class_path" in str(yaml.safe_load(p.read_text()).get("model", {}))]
SNIPPETS = [p for p in CONFIGS if p not in RECIPES]
# Snippets whose trainer can be built on this CPU-only machine (the others need a GPU or deepspeed).
CPU_SNIPPETS = {"bf16", "fp32", "ddp_cpu", "int8", "nf4", "adamw8bit", "wandb_offline", "wandb"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _subcommand(path: Path) -> str:
    """`fit`, or `pet` for a PET recipe (cli/pet.py: a fit recipe plus a `pet:` section)."""
    return path.read_text().split()[2]


def _command(path: Path) -> list[str]:
    """The config files a YAML's first-line command composes, in order."""
    first = path.read_text().splitlines()[0]
    assert first.startswith(("# lightning-peft fit --config ", "# lightning-peft pet --config ")), \
        f"{_rel(path)}: first line must be the command"
    words = first[2:].split()
    return [words[k + 1] for k, w in enumerate(words) if w == "--config"]


@pytest.fixture
def no_weights(monkeypatch):
    """Serve smollm2-135m from its tokenizer folder: instantiation may read a tokenizer, never the weights."""
    monkeypatch.setitem(zoo.ZOO, "smollm2-135m", zoo.ZooEntry("tokenizer only", zoo.smollm2_tokenizer_dir, model_type="llama"))


def test_every_yaml_is_covered():
    assert QUICKSTART in RECIPES and len(CONFIGS) >= 17, [_rel(p) for p in CONFIGS]
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_first_line_command_names_the_file(path):
    assert _command(path)[-1] == _rel(path)
    if path in SNIPPETS:
        assert _command(path)[0] == "configs/quickstart.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_parses_with_print_config(path, capsys):
    configs = [str(ROOT / c) for c in _command(path)]
    with pytest.raises(SystemExit) as exit_info:
        main([_subcommand(path), *[a for c in configs for a in ("--config", c)], "--print_config"])
    assert exit_info.value.code in (None, 0)
    printed = yaml.safe_load(capsys.readouterr().out)
    snippet = yaml.safe_load(path.read_text())
    _assert_contains(printed, snippet, _rel(path))


def _assert_contains(printed, snippet, where: str, key: str = "") -> None:
    """Every leaf the snippet sets appears in the resolved config (class_paths may be shortened by the parser)."""
    if isinstance(snippet, dict):
        for k, v in snippet.items():
            assert k in printed, f"{where}: {key}{k} missing from the resolved config"
            _assert_contains(printed[k], v, where, f"{key}{k}.")
    elif isinstance(snippet, list) and snippet and isinstance(snippet[0], dict):  # e.g. trainer.callbacks
        assert isinstance(printed, list) and len(printed) == len(snippet), f"{where}: {key}"
        for printed_item, item in zip(printed, snippet):
            _assert_contains(printed_item, item, where, key)
    elif isinstance(snippet, str) and key.endswith("class_path."):
        assert printed.rsplit(".", 1)[-1] == snippet.rsplit(".", 1)[-1], where
    elif isinstance(snippet, str) and isinstance(printed, dict):  # e.g. `task: lightning_peft.tasks.CausalLMSFT`
        assert printed["class_path"].endswith(snippet.rsplit(".", 1)[-1]), where
    else:
        assert printed == snippet or (isinstance(snippet, (int, float)) and float(printed) == float(snippet)), (
            f"{where}: {key} is {printed!r}, expected {snippet!r}")


@pytest.mark.parametrize("path", RECIPES + [p for p in SNIPPETS if p.stem in CPU_SNIPPETS], ids=_rel)
def test_instantiates_without_loading_weights(path, no_weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a logger may create folders in the working directory
    configs = [str(ROOT / c) for c in _command(path)]
    kind = PetCLI if _subcommand(path) == "pet" else LightningPeftCLI
    cli = kind(FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
               run=False, args=[a for c in configs for a in ("--config", c)])
    assert isinstance(cli.model, FineTuneModule) and cli.model.model is None  # weights load in configure_model
    assert cli.model.task.label_names == (getattr(cli.datamodule, "label_names", None) or [])


def test_fit_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "lightning_peft.modules.LoraModule"])
    model_help = capsys.readouterr().out
    for option, doc in {
        "backbone": "Zoo short name",
        "task": "The objective",
        "method": "The adapter",
        "group_lr": "Learning rate per named parameter group",
        "quantization": "bitsandbytes",
        "optimizer": "Optimizer class and its arguments",
        "gradient_checkpointing": "Recompute activations",
    }.items():
        assert f"--model.{option}" in model_help, option
        assert doc in " ".join(model_help.split()), f"{option}: docstring text {doc!r} missing from --model.help"
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "lightning_peft.data.ClassificationData"])
    data_help = " ".join(capsys.readouterr().out.split())
    for option, doc in {"dataset": "Catalog name", "template": "Python format string", "batch_size": "Training batch size",
                        "max_train_examples": "Use only this many", "bucket_by_length": "similar length"}.items():
        assert f"--data.{option}" in data_help and doc in data_help, option


@pytest.mark.slow
def test_dept_recipe_trains_exactly_the_budget_of_100_token_prompt_tuning():
    """DePT's comparison in the paper is at equal trainable parameters: m*d + s*r + r*d == 100*d."""
    counts = {}
    for name in ("prompt_tuning", "dept"):
        cli = LightningPeftCLI(FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                               run=False, args=["--config", str(ROOT / f"configs/soft_prompt/{name}_trec6.yaml")])
        cli.model.configure_model()
        counts[name] = (sum(p.numel() for g in cli.model.groups.values() for p in g.values()),
                        cli.model.model.get_input_embeddings().weight.shape[1])
    (pt, d), (dept, _) = counts["prompt_tuning"], counts["dept"]
    assert pt == 100 * d == 57_600
    assert dept == 60 * d + 64 * 36 + 36 * d == pt
