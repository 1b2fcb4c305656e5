"""After training, from the CLI: last.ckpt from a short fit, resume with `last`, predict, export + generate,
merge + predict, chat through a terminal, and the portable adapter folder (issue 16's "done when").

One 3-step tiny-llama fit (quickstart recipe, TREC-6 by verbalizer) is shared by the module's tests.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_peft.cli import main
from lightning_peft.inference import GenerationSettings, generate_texts

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
LABELS = ["abbreviation", "description", "entity", "human", "location", "number"]
QUESTIONS = [{"text": "Who wrote Hamlet?", "id": 1}, {"text": "What is the capital of France?", "id": 2},
             {"text": "How many legs does a spider have?", "id": 3}]


def _fit(root: Path, steps: int, *extra: str) -> None:
    main(["fit", "--config", QUICKSTART, "--model.init_args.backbone", "tiny-llama",
          "--data.init_args.max_train_examples", "32", "--data.init_args.max_eval_examples", "8",
          "--data.init_args.batch_size", "4", "--trainer.max_steps", str(steps),
          "--trainer.enable_progress_bar", "false", "--test_before_fit", "false", "--test_after_fit", "false",
          "--trainer.default_root_dir", str(root), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A 3-step fit (validation every 50 steps, so it never validates) and the inputs to predict."""
    root = tmp_path_factory.mktemp("after_training")
    handler = logging.StreamHandler(io.StringIO())  # Lightning's rank_zero_info goes to its logger
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        _fit(root / "run", 3)
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    inputs = root / "questions.jsonl"
    inputs.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (ckpt,) = (root / "run").rglob("last.ckpt")
    return {"root": root, "ckpt": ckpt, "inputs": inputs, "printed": handler.stream.getvalue()}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _predict(source: list[str], trained: dict[str, Path], name: str) -> list[dict]:
    out = trained["root"] / f"{name}.jsonl"
    main(["predict", *source, "--input", str(trained["inputs"]), "--output", str(out)])
    return _read_jsonl(out)


def test_a_fit_shorter_than_its_validation_interval_leaves_last_ckpt_and_says_where(trained):
    assert trained["ckpt"].parent.name == "checkpoints" and trained["printed"].count(f"saved to {trained['ckpt']}") == 1
    import torch

    saved = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3 and saved["state_dict"] and all("lora_" in k for k in saved["state_dict"])


def test_ckpt_path_last_resumes_from_the_newest_earlier_run(trained, capsys):
    import torch

    root = trained["root"] / "resume"
    _fit(root, 3)
    capsys.readouterr()
    _fit(root, 5, "--ckpt_path", "last")
    err = capsys.readouterr().err
    first = next(root.rglob("version_0/checkpoints/last.ckpt"))
    assert f"Resuming from {first}" in err
    (second,) = root.rglob("version_1/checkpoints/last.ckpt")
    assert torch.load(second, map_location="cpu", weights_only=True)["global_step"] == 5  # continued at 3, not from 0


def test_predict_on_a_checkpoint_writes_labels_and_probabilities_per_input(trained):
    rows = _predict(["--ckpt_path", str(trained["ckpt"])], trained, "from_ckpt")
    assert [r["id"] for r in rows] == [1, 2, 3] and [r["text"] for r in rows] == [q["text"] for q in QUESTIONS]
    for row in rows:
        assert list(row["probabilities"]) == LABELS and row["label"] in LABELS
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)


def test_exported_adapter_is_portable_and_predicts_as_the_checkpoint(trained):
    folder = trained["root"] / "adapter"
    main(["export", "--ckpt_path", str(trained["ckpt"]), "--output_dir", str(folder)])
    peft_config = json.loads((folder / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == "tiny-llama" and peft_config["task_type"] == "CAUSAL_LM"
    card = json.loads((folder / "lightning_peft.json").read_text())
    assert card["backbone"] == "tiny-llama" and card["label_names"] == LABELS and card["verbalizer"]["human"] == "person"
    assert card["input_format"]["template"] == "Question: {text}\nAnswer type:" and card["dataset"] == "trec6"
    assert card["method"]["init_args"]["r"] == 8 and "train/loss" in card["metrics"]
    readme = (folder / "README.md").read_text()
    assert "base_model: tiny-llama" in readme and "Lora" in readme and "train/loss" in readme

    from_ckpt = _predict(["--ckpt_path", str(trained["ckpt"])], trained, "ckpt_again")
    from_adapter = _predict(["--adapter", str(folder)], trained, "from_adapter")  # no --backbone: the card names it
    for a, b in zip(from_ckpt, from_adapter):
        assert a["label"] == b["label"]
        assert all(abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-5 for k in LABELS)


def test_merged_folder_predicts_as_the_checkpoint(trained):
    folder = trained["root"] / "merged"
    main(["merge", "--ckpt_path", str(trained["ckpt"]), "--output_dir", str(folder)])
    from_ckpt = _predict(["--ckpt_path", str(trained["ckpt"])], trained, "ckpt_for_merge")
    from_merged = _predict(["--model", str(folder)], trained, "from_merged")
    for a, b in zip(from_ckpt, from_merged):
        assert all(abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-4 for k in LABELS)


def test_generate_with_an_adapter_folder_prints_text(trained, capsys):
    folder = trained["root"] / "adapter_for_generate"
    main(["export", "--ckpt_path", str(trained["ckpt"]), "--output_dir", str(folder)])
    capsys.readouterr()
    streamed = {}
    for source in (["--adapter", str(folder)], ["--ckpt_path", str(trained["ckpt"])]):
        main(["generate", *source, "--prompt", "Who painted the Mona Lisa?", "--max_new_tokens", "6"])
        streamed[source[0]] = capsys.readouterr().out
    assert streamed["--adapter"].strip() and streamed["--adapter"] == streamed["--ckpt_path"]  # greedy: the same words

    prompts = trained["root"] / "prompts.txt"
    prompts.write_text("Who painted the Mona Lisa?\nName a river.\n")
    out = trained["root"] / "answers.jsonl"
    main(["generate", "--adapter", str(folder), "--prompts_file", str(prompts), "--output", str(out),
          "--max_new_tokens", "4", "--do_sample", "true", "--seed", "3"])
    answers = _read_jsonl(out)
    assert [a["prompt"] for a in answers] == ["Who painted the Mona Lisa?", "Name a river."]
    again = trained["root"] / "answers_again.jsonl"
    main(["generate", "--adapter", str(folder), "--prompts_file", str(prompts), "--output", str(again),
          "--max_new_tokens", "4", "--do_sample", "true", "--seed", "3"])
    assert _read_jsonl(again) == answers  # the same seed samples the same answers


def test_sft_checkpoint_predicts_generated_text(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "response": w}) + "\n" for w in ["yes", "no"] * 10))
    main(["fit", "--config", str(ROOT / "configs/lora/lora_sft_movie_dialog.yaml"), "--model.init_args.backbone", "tiny-llama",
          "--data.init_args.dataset", str(data), "--data.init_args.batch_size", "4", "--trainer.max_steps", "2",
          "--data.init_args.val_size", "2", "--data.init_args.test_size", "2", "--test_before_fit", "false",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
          "--test_after_fit", "false"])
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"prompt": "Say yes."}) + "\n")
    out = tmp_path / "out.jsonl"
    main(["predict", "--ckpt_path", str(ckpt), "--input", str(inputs), "--output", str(out), "--max_new_tokens", "3"])
    (row,) = _read_jsonl(out)
    assert row["prompt"] == "Say yes." and isinstance(row["generated"], str)
    from lightning_peft.cli.rebuild import module_from_checkpoint
    from lightning_peft.inference import Runnable, generate_texts, prompt_for_record

    module = module_from_checkpoint(str(ckpt))  # the same greedy answer as the model written with its chat template
    runnable = Runnable(module.probe_model().eval(), module.tokenizer, module.task, module.input_format)
    text = prompt_for_record(runnable, {"prompt": "Say yes."})
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    (expected,) = generate_texts(runnable, [text], GenerationSettings(max_new_tokens=3))
    assert row["generated"] == expected


def test_chat_answers_two_turns_in_a_terminal():
    """Driven through a pseudo-terminal, as a person would type: two questions, then Ctrl-D.

    stderr goes to the terminal too: with a terminal on both ends, `input()` writes its prompt there."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "lightning_peft.cli", "chat", "--model", "tiny-llama",
                                "--max_new_tokens", "4"], stdin=follower, stdout=follower, stderr=follower,
                               env=env, close_fds=True)
    os.close(follower)
    seen = b""

    def read_until(count: int, marker: bytes = b"you> ", timeout: float = 120) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while seen.count(marker) < count and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    return

    try:
        read_until(1)
        os.write(leader, b"Hello, who are you?\n")
        read_until(2)
        os.write(leader, b"And what can you do?\n")
        read_until(3)
        os.write(leader, b"\x04")  # Ctrl-D ends the chat
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        os.close(leader)
    text = seen.decode(errors="replace")
    assert text.count("model> ") == 2 and text.count("you> ") == 3, text[-500:]


def test_generate_with_a_plain_seq2seq_model_returns_its_decoder_text(tmp_path):
    from lightning_peft.inference import load_model

    runnable = load_model("tiny-t5", device="cpu")
    assert runnable.encoder_decoder and type(runnable.model).__name__ == "T5ForConditionalGeneration"
    out = tmp_path / "answers.jsonl"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("translate: hello\n")
    main(["generate", "--model", "tiny-t5", "--prompts_file", str(prompts), "--output", str(out), "--max_new_tokens", "3"])
    (row,) = _read_jsonl(out)
    (expected,) = generate_texts(runnable, ["translate: hello"], GenerationSettings(max_new_tokens=3))
    assert row["generated"] == expected


def test_chat_prompt_carries_the_earlier_turns():
    from lightning_peft.inference import load_model, prompt_for

    runnable = load_model("tiny-llama", device="cpu")
    history = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."}]
    text = prompt_for(runnable, "What is my name?", system="Be brief.", history=history)
    order = [text.index(part) for part in ("Be brief.", "My name is Ada.", "Hello Ada.", "What is my name?")]
    assert order == sorted(order) and text.endswith("<|im_start|>assistant\n")

    from lightning_peft.inference.generation import chat_prompt

    long_history = [*history, {"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "Noted."}]
    whole = len(runnable.tokenizer(prompt_for(runnable, "Again?", "Be brief.", long_history))["input_ids"])
    kept = list(long_history)
    text = chat_prompt(runnable, "Again?", "Be brief.", kept, max_tokens=whole - 1)
    assert kept == long_history[2:] and "My name is Ada." not in text and "Be brief." in text  # oldest exchange dropped
    assert chat_prompt(runnable, "Again?", None, list(long_history), max_tokens=10_000) == prompt_for(
        runnable, "Again?", None, long_history)


def test_bad_inference_input_gets_one_sentence_and_writes_nothing(trained):
    bad = trained["root"] / "bad.jsonl"
    bad.write_text(json.dumps({"question": "no text field"}) + "\n")
    out = trained["root"] / "never.jsonl"
    with pytest.raises(SystemExit) as error:
        main(["predict", "--ckpt_path", str(trained["ckpt"]), "--input", str(bad), "--output", str(out)])
    assert "input 1" in str(error.value) and "'text'" in str(error.value) and not out.exists()
    with pytest.raises(SystemExit) as error:  # the command the README used to suggest for Lightning's predict
        main(["predict", "--config", "runs/x/config.yaml", "--ckpt_path", str(trained["ckpt"])])
    assert "needs no --config" in str(error.value) and "--input FILE" in str(error.value)
    with pytest.raises(SystemExit) as error:
        main(["generate", "--model", "tiny-llama"])
    assert "--prompt" in str(error.value)
    with pytest.raises(SystemExit) as error:
        main(["predict", "--ckpt_path", str(trained["ckpt"]), "--adapter", "x", "--input", str(bad)])
    assert "exactly one of --ckpt_path" in str(error.value)
    plain = trained["root"] / "no_card"
    plain.mkdir()
    with pytest.raises(SystemExit) as error:
        main(["predict", "--adapter", str(plain), "--input", str(trained["inputs"])])
    assert str(error.value).startswith("error: ") and "has no lightning_peft.json" in str(error.value)


def test_fit_with_a_missing_or_damaged_ckpt_path_is_one_sentence(trained, capsys):
    junk = trained["root"] / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    for given, expected in ((str(trained["root"] / "missing.ckpt"), "is not a checkpoint file"),
                            (str(trained["root"]), "is not a checkpoint file"),
                            (str(junk), "is not a checkpoint that loads safely")):
        with pytest.raises(SystemExit) as error:
            _fit(trained["root"] / "never", 3, "--ckpt_path", given)
        assert error.value.code == 2
        (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert expected in line and "Traceback" not in line
    assert not (trained["root"] / "never").exists()  # nothing written for a run that could not start


SEQ2SEQ = """
seed_everything: 0
trainer: {max_steps: 2, enable_progress_bar: false, logger: false}
test_after_fit: false
model:
  class_path: lightning_peft.modules.LoraModule
  init_args:
    backbone: tiny-t5
    task: lightning_peft.tasks.Seq2Seq
    method: {class_path: lightning_peft.methods.Lora, init_args: {r: 4, target_modules: [q, v]}}
data:
  class_path: lightning_peft.data.Seq2SeqData
  init_args: {dataset: trec6, source_template: "question: {text}", max_train_examples: 8, max_eval_examples: 4,
              batch_size: 4, val_size: 4, test_size: 4}
"""


@pytest.mark.parametrize("task", ["head", "seq2seq"])
def test_predict_covers_head_classification_and_seq2seq_from_checkpoint_and_adapter(tmp_path, task):
    root = tmp_path / "run"
    if task == "head":
        main(["fit", "--config", str(ROOT / "configs/lora/lora_head_sms_spam.yaml"), "--model.init_args.backbone",
              "tiny-llama", "--data.init_args.max_train_examples", "8", "--data.init_args.max_eval_examples", "4",
              "--data.init_args.batch_size", "4", "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(root), "--test_after_fit", "false"])
    else:
        (tmp_path / "seq2seq.yaml").write_text(SEQ2SEQ)
        main(["fit", "--config", str(tmp_path / "seq2seq.yaml"), "--trainer.default_root_dir", str(root)])
    (ckpt,) = root.rglob("last.ckpt")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": "Win a free prize now, call 0800"}) + "\n")
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "adapter")])
    rows = {}
    for source in (["--ckpt_path", str(ckpt)], ["--adapter", str(tmp_path / "adapter")]):
        out = tmp_path / f"{source[0][2:]}.jsonl"
        main(["predict", *source, "--input", str(inputs), "--output", str(out), "--max_new_tokens", "3"])
        (rows[source[0]],) = _read_jsonl(out)
    if task == "head":  # the trained head travels in the adapter (peft's modules_to_save)
        a, b = rows["--ckpt_path"]["probabilities"], rows["--adapter"]["probabilities"]
        assert list(a) == ["ham", "spam"] and all(abs(a[k] - b[k]) < 1e-5 for k in a)
    else:
        assert rows["--ckpt_path"]["generated"] == rows["--adapter"]["generated"]
