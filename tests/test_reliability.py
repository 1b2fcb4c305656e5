"""A battery of bad inputs, as a new user would make them: each is refused in one sentence, exit status 2, nothing written.

Every case runs `lightning_peft.cli.main([...])` in a fresh working folder holding only its input files, and asserts:

- `SystemExit` with code 2 (a user error, in every subcommand);
- exactly one `error: ...` line on stderr, the last one, and no traceback;
- the words a user needs to fix it (what is wrong, which option);
- nothing written: the working folder holds exactly the input files it held before (no version
  folder, no config.yaml, hparams.yaml, metrics.json, checkpoint or output folder).

Most cases fail at parse or setup, before any weights load (`tiny-llama`, a 12-row JSONL file), so the
whole file runs in under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

# Imported at collection, so Lightning's log handler binds to pytest's stderr, not to one test's (closed) capsys stream.
import lightning_peft.cli.app  # noqa: F401, E402
from lightning_peft.cli import main

LABELS = ["alpha", "beta"]


def rows(count: int = 12, labels: list[str] = LABELS) -> list[dict]:
    return [{"text": f"word {i} " * (1 + i % 3), "label": labels[i % len(labels)]} for i in range(count)]


def base_config(data: str) -> dict:
    return {
        "seed_everything": 1, "test_before_fit": False, "test_after_fit": False,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1, "val_check_interval": 1,
                    "check_val_every_n_epoch": None, "limit_val_batches": 1, "num_sanity_val_steps": 0,
                    "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": "run"},
        "model": {"class_path": "lightning_peft.modules.LoraModule", "init_args": {
            "backbone": "tiny-llama",
            "task": {"class_path": "lightning_peft.tasks.VerbalizerClassification"},
            "method": {"class_path": "lightning_peft.methods.Lora", "init_args": {"r": 2, "target_modules": ["q_proj"]}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
        }},
        "data": {"class_path": "lightning_peft.data.ClassificationData", "init_args": {
            "dataset": data, "val_size": 2, "test_size": 0, "batch_size": 2, "max_length": 16,
        }},
    }


@dataclass
class Case:
    """One bad input: the argv after `lightning-peft`, the files it needs, and words the sentence must hold."""

    id: str
    argv: list[str]
    words: tuple[str, ...] = ()
    files: dict[str, bytes | str | Callable[[Path], None]] = field(default_factory=dict)


def fit(*extra: str, data: str = "in/data.jsonl", words: tuple[str, ...] = (), files=None, command: str = "fit",
        id: str) -> Case:
    return Case(id, [command, "--config", "in/base.yaml", "--data.init_args.dataset", data, *extra], words, files or {})


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _write_folder(*names: str, config: dict | None = None) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir(parents=True)
        for name in names:
            (path / name).write_text("{}")
        if config is not None:
            (path / "config.json").write_text(json.dumps(config))
    return make


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True)


RANDOM = bytes(range(256)) * 8
NOT_A_CKPT = {"in/empty.ckpt": b"", "in/random.ckpt": RANDOM, "in/text.ckpt": "hello\n",
              "in/truncated.ckpt": b"PK\x03\x04" + RANDOM[:300], "in/dir.ckpt": _mkdir}

CASES: list[Case] = [
    # --- the command line and config files -------------------------------------------------
    Case("unknown-subcommand", ["fitt", "--config", "in/base.yaml"]),
    Case("config-missing", ["fit", "--config", "in/nope.yaml"], ("nope.yaml",)),
    Case("config-malformed-yaml", ["fit", "--config", "in/base.yaml", "--config", "in/bad.yaml"],
         ("bad.yaml", "not valid YAML", "line"), {"in/bad.yaml": "model:\n  init_args:\n    backbone: [tiny\n"}),
    Case("config-unknown-key", ["fit", "--config", "in/base.yaml", "--config", "in/extra.yaml"], ("lora_rank",),
         {"in/extra.yaml": "model:\n  init_args:\n    lora_rank: 4\n"}),
    Case("config-is-a-list", ["fit", "--config", "in/list.yaml"], (), {"in/list.yaml": "- a\n- b\n"}),
    fit("--trainer.max_stepz", "3", words=("max_stepz",), id="unknown-trainer-option"),
    fit("--trainer.max_steps", "many", words=("trainer.max_steps must be an integer", "'many'"), id="max-steps-not-a-number"),
    fit("--trainer.max_steps", "-5", words=("max_steps",), id="max-steps-negative"),
    fit("--trainer.max_epochs", "-3", words=("max_epochs",), id="max-epochs-negative"),
    fit("--trainer.accumulate_grad_batches", "0", words=("accumulate_grad_batches",), id="accumulate-zero"),
    fit("--trainer.accumulate_grad_batches", "-2", words=("accumulate_grad_batches",), id="accumulate-negative"),
    fit("--trainer.accelerator", "gpu", words=("gpu",), id="accelerator-gpu-without-one"),
    fit("--trainer.accelerator", "cuda", words=("cuda",), id="accelerator-cuda-without-one"),
    fit("--trainer.accelerator", "tpu9", words=("tpu9",), id="accelerator-unknown"),
    fit("--trainer.devices", "0", words=("devices",), id="devices-zero"),
    fit("--trainer.strategy", "nope", words=("nope",), id="strategy-unknown"),
    fit("--trainer.precision", "13", words=("trainer.precision is '13'", "'bf16-mixed'", "'32-true'"), id="precision-unknown"),
    fit("--trainer.default_root_dir", "in/afile", words=("default_root_dir", "afile"), files={"in/afile": "x"},
        id="root-dir-is-a-file"),
    fit("--trainer.default_root_dir", "in/afile/sub", words=("afile",), files={"in/afile": "x"},
        id="root-dir-under-a-file"),
    fit("--trainer.check_val_every_n_epoch", "1", "--trainer.val_check_interval", "1000", words=("val_check_interval",),
        id="val-check-interval-past-epoch"),
    fit("--trainer.limit_train_batches", "-1", words=("limit_train_batches",), id="limit-train-batches-negative"),
    fit("--trainer.gradient_clip_val", "-1", words=("gradient_clip_val",), id="gradient-clip-negative"),
    fit("--seed_everything", "abc", words=("seed_everything",), id="seed-not-a-number"),
    fit("--optimizer", "torch.optim.AdamW", words=("--model.optimizer",), id="top-level-optimizer"),
    fit("--model.optimizer.lr", "-0.1", words=("model.optimizer", "learning rate", "-0.1"), id="lr-negative"),
    fit("--model.optimizer.weight_decay", "-1", words=("weight_decay",), id="weight-decay-negative"),
    fit("--model.optimizer.betas", "[1.5, 0.9]", words=("beta",), id="betas-out-of-range"),
    fit("--model.optimizer.eps", "-1", words=("eps",), id="eps-negative"),
    fit("--model.optimizer", "torch.optim.NoSuchOpt", words=("NoSuchOpt",), id="optimizer-unknown"),
    fit("--model.class_path", "lightning_peft.modules.NoSuchModule", words=("NoSuchModule",), id="module-unknown"),
    fit("--model.init_args.method", "lightning_peft.methods.NoSuchMethod", words=("NoSuchMethod",), id="method-unknown"),
    fit("--model.init_args.method.init_args.r", "0", words=("r",), id="lora-rank-zero"),
    fit("--model.init_args.method.init_args.r", "-4", words=("r",), id="lora-rank-negative"),
    fit("--model.init_args.method.init_args.dropout", "1.5", words=("dropout",), id="lora-dropout-above-one"),
    fit("--model.init_args.method.init_args.target_modules", "[qq_proj]", words=("qq_proj",), id="target-modules-unknown"),
    fit("--model.init_args.quantization", "int3", words=("model.quantization is 'int3'", "'int8', 'nf4'"),
        id="quantization-unknown"),
    fit("--model.init_args.method.init_args.variant", "bogus",
        words=("model.method.variant is 'bogus'", "'lora', 'dora', 'rslora'"), id="lora-variant-not-a-choice"),
    fit("--model.init_args.task.init_args.prefix_space", "maybe", words=("model.task.prefix_space must be true or false",
        "'maybe'"), id="boolean-option-not-a-boolean"),
    fit("--model.init_args.method.init_args.dropout", "lots", words=("model.method.dropout must be a number", "'lots'"),
        id="float-option-not-a-number"),
    fit("--model.init_args.method", "lightning_peft.methods.PromptTuning", words=("PromptTuning", "PeftMethod", "LoraModule"),
        id="method-of-another-family"),
    fit("--model.init_args.method.init_args.target_modules", "q_proj", words=("regular expression", "[q_proj]"),
        id="target-modules-single-string"),
    fit("--model.init_args.task.init_args.label_words", "{gamma: g}", words=("gamma",), id="label-words-unknown-label"),
    fit("--data.init_args.batch_size", "0", words=("batch_size",), id="batch-size-zero"),
    fit("--data.init_args.batch_size", "-3", words=("batch_size",), id="batch-size-negative"),
    fit("--data.init_args.eval_batch_size", "0", words=("eval_batch_size",), id="eval-batch-size-zero"),
    fit("--data.init_args.max_length", "0", words=("max_length",), id="max-length-zero"),
    fit("--data.init_args.val_size", "1.5", words=("val_size",), id="val-size-above-one"),
    fit("--data.init_args.test_size", "-0.1", words=("test_size",), id="test-size-negative"),
    fit("--data.init_args.max_train_examples", "0", words=("max_train_examples",), id="max-train-examples-zero"),
    fit("--data.init_args.num_workers", "-1", words=("num_workers",), id="num-workers-negative"),
    fit("--data.init_args.label_names", "[alpha]", words=("label_names",), id="label-names-one-class"),
    fit("--data.init_args.label_names", "[alpha, alpha]", words=("label_names",), id="label-names-repeated"),
    fit("--data.init_args.label_names", "[alpha, gamma]", words=("beta",), id="label-not-in-label-names"),
    fit("--config", "in/t.yaml", words=("body", "template"), id="template-unknown-field",
        files={"in/t.yaml": 'data:\n  init_args:\n    template: "Question: {body}"\n'}),
    fit("--data.init_args.template", "Question: {text}", words=("template", "quote"), id="template-read-as-yaml-mapping"),
    fit("--data.init_args.template", "Question:", words=("template", "{text}"), id="template-without-text"),
    fit("--data.init_args.template", "Question: {text", words=("template",), id="template-unbalanced-brace"),
    fit("--data.init_args.text_column", "body", words=("body", "text_column"), id="text-column-missing"),
    fit("--data.init_args.label_column", "kind", words=("kind", "label_column"), id="label-column-missing"),
    fit("--data", "lightning_peft.data.NoSuchData", words=("NoSuchData",), id="data-class-unknown"),
    # YAML 1.1 reads unquoted yes/no as booleans: the sentence says to quote them
    fit("--config", "in/yesno.yaml", data="in/yesno.jsonl", words=("quote",),
        files={"in/yesno.yaml": "data:\n  init_args:\n    label_names: [yes, no]\n",
               "in/yesno.jsonl": jsonl(rows(labels=["yes", "no"]))}, id="yaml-yes-no-label-names"),
    fit("--config", "in/yesno.yaml", data="in/yesno.jsonl", words=("quote",),
        files={"in/yesno.yaml": "model:\n  init_args:\n    task:\n      init_args:\n        label_words: {yes: ok}\n",
               "in/yesno.jsonl": jsonl(rows(labels=["yes", "no"]))}, id="yaml-yes-label-words-key"),
    fit("--config", "in/yesno.yaml", words=("label_words", "quote"),
        files={"in/yesno.yaml": "model:\n  init_args:\n    task:\n      init_args:\n        label_words: {alpha: yes, beta: no}\n"},
        id="yaml-yes-label-words-value"),
    fit("--config", "in/off.yaml", words=("text_column", "quote"),
        files={"in/off.yaml": "data:\n  init_args:\n    text_column: off\n"}, id="yaml-off-text-column"),
    # --- data files ------------------------------------------------------------------------
    fit(data="in/nope.jsonl", words=("nope.jsonl", "file"), id="data-missing"),
    fit(data="in/d.txt", words=("d.txt", "extension"), files={"in/d.txt": "a\n"}, id="data-extension"),
    fit(data="in/d.jsonl", words=("empty",), files={"in/d.jsonl": ""}, id="data-empty-jsonl"),
    fit(data="in/d.jsonl", words=("empty",), files={"in/d.jsonl": "\n\n  \n"}, id="data-blank-lines"),
    fit(data="in/d.jsonl", words=("Line 3",), files={"in/d.jsonl": jsonl(rows(2)) + "{oops\n"}, id="data-bad-jsonl-line"),
    fit(data="in/d.json", words=("d.json",), files={"in/d.json": '["a", "b"]'}, id="data-json-strings"),
    fit(data="in/d.json", words=("d.json", "not valid JSON"), files={"in/d.json": '[{"text": "a",'}, id="data-bad-json"),
    fit(data="in/d.jsonl", words=("d.jsonl", "UTF-8"), files={"in/d.jsonl": jsonl(rows(4)).encode() + b'{"text": "caf\xe9", "label": "alpha"}\n'},
        id="data-jsonl-not-utf8"),
    fit(data="in/d.csv", words=("d.csv", "UTF-8"), files={"in/d.csv": b"text,label\ncaf\xe9,alpha\nb,beta\nc,alpha\n"},
        id="data-csv-not-utf8"),
    fit(data="in/d.csv", words=("empty",), files={"in/d.csv": "text,label\n"}, id="data-csv-header-only"),
    fit(data="in/d.csv", words=("d.csv", "one class"), files={"in/d.csv": csv(["text,label", "hello,alpha"])},
        id="data-csv-one-row"),
    fit(data="in/d.csv", words=("d.csv", "one class"), files={"in/d.csv": csv(["text,label"] + [f"t{i},alpha" for i in range(8)])},
        id="data-csv-one-class"),
    fit(data="in/d.csv", words=("d.csv", "3 example(s) with an empty label"),
        files={"in/d.csv": csv(["text,label"] + [f"t{i},{['alpha', 'beta', ''][i % 3]}" for i in range(9)])},
        id="data-csv-empty-label-cells"),
    fit(data="in/d.jsonl", words=("d.jsonl", "empty label"), files={"in/d.jsonl": jsonl(rows(8) + [{"text": "x", "label": ""}])},
        id="data-jsonl-empty-label"),
    fit(data="in/d.jsonl", words=("no usable examples",), files={"in/d.jsonl": jsonl([{"text": "", "label": "alpha"}] * 4)},
        id="data-all-texts-empty"),
    fit(data="in/d.parquet", words=("d.parquet", "Parquet"), files={"in/d.parquet": RANDOM}, id="data-parquet-damaged"),
    fit(data="in/ddir.jsonl", words=("ddir.jsonl",), files={"in/ddir.jsonl": _mkdir}, id="data-is-a-folder"),
    # --- models ----------------------------------------------------------------------------
    fit("--model.init_args.backbone", "no-such/model-xyz", words=("no-such/model-xyz",), id="backbone-unknown"),
    fit("--model.init_args.backbone", "tiny-t5", words=("t5",), id="backbone-wrong-architecture"),
    fit("--model.init_args.backbone", "tiny-gpt2", "--data.init_args.max_length", "1000", words=("1000", "512", "max_length"),
        id="max-length-past-learned-positions"),
    fit("--model.init_args.backbone", "in/empty_model", words=("empty_model", "config.json"), files={"in/empty_model": _mkdir},
        id="backbone-empty-folder"),
    fit("--model.init_args.backbone", "in/no_weights", words=("no_weights", "no weights"),
        files={"in/no_weights": lambda p: _copy_config(p)}, id="backbone-no-weights"),
    fit("--model.init_args.backbone", "in/bad_config", words=("bad_config", "config.json"), files={"in/bad_config": _write_folder("model.safetensors")},
        id="backbone-no-config"),
    fit("--model.init_args.backbone", "in/model.bin", words=("model.bin",), files={"in/model.bin": RANDOM},
        id="backbone-is-a-file"),
    # --- checkpoints -----------------------------------------------------------------------
    *[fit("--ckpt_path", path, words=(path,), files={path: content}, id=f"fit-ckpt-{Path(path).stem}")
      for path, content in NOT_A_CKPT.items()],
    fit("--ckpt_path", "in/missing.ckpt", words=("missing.ckpt",), id="fit-ckpt-missing"),
    fit("--ckpt_path", "in/random.ckpt", words=("random.ckpt",), files={"in/random.ckpt": RANDOM}, command="validate",
        id="validate-ckpt-random"),
    fit("--ckpt_path", "in/missing.ckpt", words=("missing.ckpt",), command="test", id="test-ckpt-missing"),
    *[Case(f"{command}-ckpt-{Path(path).stem}", [command, "--ckpt_path", path, "--output_dir", "out"], (path,),
           {path: content}) for command in ("export", "merge") for path, content in NOT_A_CKPT.items()],
    Case("export-ckpt-missing", ["export", "--ckpt_path", "in/missing.ckpt", "--output_dir", "out"], ("missing.ckpt",)),
    Case("merge-ckpt-missing", ["merge", "--ckpt_path", "in/missing.ckpt", "--output_dir", "out"], ("missing.ckpt",)),
    Case("export-output-is-a-file", ["export", "--ckpt_path", "in/random.ckpt", "--output_dir", "in/afile"],
         ("--output_dir", "afile"), {"in/afile": "x", "in/random.ckpt": RANDOM}),
    Case("merge-output-is-a-file", ["merge", "--ckpt_path", "in/random.ckpt", "--output_dir", "in/afile"],
         ("--output_dir", "afile"), {"in/afile": "x", "in/random.ckpt": RANDOM}),
    Case("export-output-not-empty", ["export", "--ckpt_path", "in/random.ckpt", "--output_dir", "in/full"],
         ("not empty",), {"in/full/x": "x", "in/random.ckpt": RANDOM}),
    Case("export-no-output-dir", ["export", "--ckpt_path", "in/random.ckpt"], ("output_dir",), {"in/random.ckpt": RANDOM}),
    Case("evaluate-ckpt-missing", ["evaluate", "--ckpt_path", "in/missing.ckpt", "--output_dir", "out"], ("missing.ckpt",)),
    Case("evaluate-ckpt-random", ["evaluate", "--ckpt_path", "in/random.ckpt", "--output_dir", "out"], ("random.ckpt",),
         {"in/random.ckpt": RANDOM}),
    Case("evaluate-neither-source", ["evaluate", "--output_dir", "out"], ("--ckpt_path", "--adapter")),
    Case("evaluate-adapter-not-a-folder", ["evaluate", "--adapter", "in/afile", "--output_dir", "out"], ("afile",),
         {"in/afile": "x"}),
    Case("predict-ckpt-missing", ["predict", "--ckpt_path", "in/missing.ckpt", "--input", "in/data.jsonl"], ("missing.ckpt",)),
    Case("predict-input-missing", ["predict", "--model", "tiny-llama", "--input", "in/nope.jsonl"], ("nope.jsonl",)),
    Case("generate-no-prompt", ["generate", "--model", "tiny-llama"], ("--prompt",)),
    Case("generate-two-sources", ["generate", "--model", "tiny-llama", "--ckpt_path", "in/random.ckpt", "--prompt", "hi"],
         ("exactly one",), {"in/random.ckpt": RANDOM}),
]


def _copy_config(path: Path) -> None:
    """A model folder with the tiny model's config and tokenizer but no weights file."""
    from lightning_peft import zoo

    path.mkdir(parents=True)
    for source in Path(zoo.resolve("tiny-llama")).iterdir():
        if source.is_file() and not source.name.endswith((".safetensors", ".bin")):
            (path / source.name).write_bytes(source.read_bytes())


def _materialize(root: Path, files: dict) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_battery_is_large_and_ids_are_unique():
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_sentence_exit_2_and_writes_nothing(case: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_PEFT_DEBUG", raising=False)
    setup_inputs(tmp_path)
    _materialize(tmp_path, case.files)
    before = snapshot(tmp_path)
    refused(case.argv, capsys, case.words)
    assert snapshot(tmp_path) == before, sorted(snapshot(tmp_path) - before)
    assert not os.path.exists(tmp_path / "out")


def refused(argv: list[str], capsys, words: tuple[str, ...] = ()) -> str:
    """Run `main(argv)` and assert a user error: exit status 2, one `error:` line (the last), no traceback, `words` in it."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert exit_info.value.code == 2, (exit_info.value.code, lines[-5:])
    assert "Traceback" not in captured.err, captured.err[-2000:]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-6:]
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


def setup_inputs(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "data.jsonl").write_text(jsonl(rows()))
    (root / "in" / "base.yaml").write_text(yaml.safe_dump(base_config("in/data.jsonl")))


def test_a_run_refused_after_it_started_removes_only_its_own_folder(tmp_path, monkeypatch, capsys):
    """Bad labels are found at setup, after the logger chose version_1: that folder goes, version_0 stays."""
    monkeypatch.chdir(tmp_path)
    setup_inputs(tmp_path)
    earlier = tmp_path / "run" / "lightning_logs" / "version_0"
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("earlier run\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "in/base.yaml", "--data.init_args.label_names", "[alpha, gamma]"])
    assert exit_info.value.code == 2
    assert "not in label_names" in capsys.readouterr().err
    assert sorted(p.name for p in earlier.parent.iterdir()) == ["version_0"]
    assert (earlier / "config.yaml").read_text() == "earlier run\n"


def test_the_process_exit_status_is_2_with_one_line(tmp_path):
    """What a shell sees: status 2 and exactly one stderr line, for an extra command (export) as for fit."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lightning_peft.cli", "export", "--ckpt_path", "missing.ckpt",
                             "--output_dir", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: --ckpt_path missing.ckpt does not exist; point it at a .ckpt file written by `lightning-peft fit`."]
    assert not list(tmp_path.iterdir())
