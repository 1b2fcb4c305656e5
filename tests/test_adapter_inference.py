"""Exported bottleneck adapters (Houlsby / Pfeiffer, MAD-X stacks) are applied by `predict` and `generate`
through `--adapter`, as LoRA and soft-prompt exports are: the card names the method, whose own `load` reads
the folder, so a MAD-X export needs nothing outside itself (issue 18)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lightning_peft.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model.init_args.backbone", "tiny-llama", "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false", "--test_before_fit", "false", "--test_after_fit", "false",
        "--data.init_args.max_train_examples", "8", "--data.init_args.max_eval_examples", "4",
        "--data.init_args.batch_size", "4", "--data.init_args.val_size", "4", "--data.init_args.test_size", "4"]


def _fit_and_export(config: str, root: Path, *extra: str) -> tuple[Path, Path]:
    main(["fit", "--config", str(ROOT / config), *TINY, "--trainer.default_root_dir", str(root / "run"), *extra])
    (ckpt,) = (root / "run").rglob("last.ckpt")
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(root / "adapter")])
    return ckpt, root / "adapter"


def _predict(source: list[str], inputs: Path, out: Path) -> dict:
    main(["predict", *source, "--input", str(inputs), "--output", str(out), "--max_new_tokens", "4"])
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    return row


def test_a_houlsby_adapter_with_its_head_predicts_from_the_export_as_from_the_checkpoint(tmp_path):
    ckpt, adapter = _fit_and_export("configs/adapters/houlsby_sms_spam.yaml", tmp_path,
                                    "--model.init_args.method.init_args.reduction_factor", "4")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": "Win a free prize now, call 0800"}) + "\n")
    a = _predict(["--ckpt_path", str(ckpt)], inputs, tmp_path / "ckpt.jsonl")["probabilities"]
    b = _predict(["--adapter", str(adapter)], inputs, tmp_path / "adapter.jsonl")["probabilities"]
    assert sorted(a) == ["ham", "spam"] and all(abs(a[k] - b[k]) < 1e-5 for k in a)


def test_a_madx_export_generates_without_the_language_adapters_source_folder(tmp_path, capsys):
    _, language = _fit_and_export("configs/adapters/madx_language_movie_dialog.yaml", tmp_path / "language")
    ckpt, task = _fit_and_export("configs/adapters/madx_task_trec6.yaml", tmp_path / "task",
                                 "--model.init_args.method.init_args.language_adapter", str(language))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": "Who wrote Hamlet?"}) + "\n")
    from_ckpt = _predict(["--ckpt_path", str(ckpt)], inputs, tmp_path / "ckpt.jsonl")
    shutil.rmtree(language)  # the export holds its own copy (language_adapter/); the source is not needed
    from_export = _predict(["--adapter", str(task)], inputs, tmp_path / "adapter.jsonl")
    assert from_export["label"] == from_ckpt["label"]
    assert all(abs(from_export["probabilities"][k] - v) < 1e-5 for k, v in from_ckpt["probabilities"].items())
    capsys.readouterr()
    main(["generate", "--adapter", str(task), "--prompt", "Who wrote Hamlet?", "--max_new_tokens", "4"])
    assert capsys.readouterr().out.strip()
