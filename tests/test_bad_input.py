"""Bad input fails early with one sentence (`error: ...`, exit status 2) and leaves no checkpoint or metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lightning_peft.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def _args(root: Path, *extra: str, backbone: str = "tiny-llama") -> list[str]:
    return ["fit", "--config", QUICKSTART, "--model.init_args.backbone", backbone,
            "--data.init_args.max_train_examples", "8", "--data.init_args.max_eval_examples", "8",
            "--data.init_args.batch_size", "4", "--trainer.max_steps", "1", "--trainer.val_check_interval", "1",
            "--trainer.enable_progress_bar", "false", "--test_before_fit", "false",
            "--trainer.default_root_dir", str(root), *extra]


def _fails(capsys, root: Path, args: list[str], *words: str) -> str:
    """Run the CLI, expect exit 2 with one `error:` line naming `words`, and nothing written under `root`."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-5:]
    message = errors[0]
    assert "Traceback" not in message and "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    written = [p for p in root.rglob("*") if p.suffix == ".ckpt" or p.name == "metrics.json"] if root.exists() else []
    assert not written, written
    return message


def _jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_unknown_model_is_fast_and_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    _fails(capsys, tmp_path, _args(tmp_path, backbone="no-such/model-xyz"),
           "Unknown model 'no-such/model-xyz'", "pick a zoo name or pass a local path")
    assert time.perf_counter() - start < 30  # no network retries, no weights


def test_unknown_target_modules(capsys, tmp_path):
    _fails(capsys, tmp_path, _args(tmp_path, "--model.init_args.method.init_args.target_modules", "[qq_proj]"),
           "target_modules ['qq_proj'] not found", "q_proj", "all-linear")


def test_missing_text_column(capsys, tmp_path):
    _fails(capsys, tmp_path, _args(tmp_path, "--data.init_args.text_column", "body"),
           "no column 'body'", "set text_column")


def test_missing_label_column(capsys, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": f"question {i}", "kind": "a"} for i in range(4)])
    _fails(capsys, tmp_path / "run", _args(tmp_path / "run", "--data.init_args.dataset", data,
                                           "--model.init_args.task.init_args.label_words", "{}"),
           "no column 'label'", "set label_column")


def test_empty_dataset(capsys, tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    _fails(capsys, tmp_path / "run", _args(tmp_path / "run", "--data.init_args.dataset", str(data),
                                           "--data.init_args.label_names", "[a, b]",
                                           "--model.init_args.task.init_args.label_words", "{}"),
           "empty")


def test_data_label_not_in_label_names(capsys, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": f"question {i}", "label": "abc"[i % 3]} for i in range(9)])
    _fails(capsys, tmp_path / "run", _args(tmp_path / "run", "--data.init_args.dataset", data,
                                           "--data.init_args.label_names", "[a, b]",
                                           "--model.init_args.task.init_args.label_words", "{}"),
           "labels ['c']", "add them to label_names")


def test_verbalizer_names_unknown_label(capsys, tmp_path):
    _fails(capsys, tmp_path, _args(tmp_path, "--model.init_args.task.init_args.label_words", "{humn: person}"),
           "label_words names labels ['humn']", "fix the spelling")


def test_malformed_yaml_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    backbone: [tiny-llama\n")
    _fails(capsys, tmp_path / "run", _args(tmp_path / "run", "--config", str(bad)), str(bad), "not valid YAML", "line")


def test_unknown_config_key(capsys, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  init_args:\n    lora_rank: 4\n")
    _fails(capsys, tmp_path / "run", _args(tmp_path / "run", "--config", str(extra)),
           "unknown option 'lora_rank'", "--help")


def test_quantized_base_with_fsdp(capsys, tmp_path):
    # On this CPU, Lightning alone would first say "FSDP requires a GPU"; the conflict with the
    # quantized base holds on any machine, so it is reported first.
    _fails(capsys, tmp_path, _args(tmp_path, "--trainer.strategy", "fsdp", "--model.init_args.quantization", "nf4"),
           "nf4-quantized base cannot be sharded", "'fsdp'", "use strategy 'ddp'")


def test_checkpoint_for_another_base_model(capsys, tmp_path):
    common = ["--model.init_args.method.init_args.target_modules", "all-linear"]
    main(_args(tmp_path / "llama", *common, "--test_after_fit", "false"))
    (ckpt,) = (tmp_path / "llama").rglob("last.ckpt")
    _fails(capsys, tmp_path / "gpt2", _args(tmp_path / "gpt2", *common, "--ckpt_path", str(ckpt), backbone="tiny-gpt2"),
           "trained on base model 'tiny-llama'", "set model.init_args.backbone to 'tiny-llama'")


def test_stale_launch_environment_is_refused_instead_of_hanging(capsys, tmp_path, monkeypatch):
    # What an earlier in-process DDP run (or a torchrun shell) leaves behind: Lightning would trust it,
    # skip starting rank 1, and rank 0 would wait in the rendezvous forever.
    for key, value in {"LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}.items():
        monkeypatch.setenv(key, value)
    _fails(capsys, tmp_path, _args(tmp_path, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                                   "--trainer.strategy", "ddp"),
           "started 1 process(es)", "asks for 2", "unset LOCAL_RANK, WORLD_SIZE")
