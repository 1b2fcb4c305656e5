"""SelfTrainingModule (LiST): lite adapters, the teacher/student schedule, exact resume across its boundaries, refusals."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_peft.checkpoint import read_checkpoint, trainable_state
from lightning_peft.cli import main
from lightning_peft.data import FewShotClassificationData
from lightning_peft.data.errors import DataConfigError
from lightning_peft.methods import BottleneckAdapter, MethodConfigError
from lightning_peft.modules import SelfTrainingModule
from lightning_peft.tasks import ClozeClassification
from tests.conftest import tiny_causal_lm
from tests.helpers import LossRecorder

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["sport", "politics", "tech"]
STEPS = 6  # teacher: steps 0-1; session 1: steps 2-3; session 2 (teacher refreshed): steps 4-5


def _module(**kwargs) -> SelfTrainingModule:
    options = dict(teacher_steps=2, refresh_every=2, unlabelled_batch_size=3)
    return SelfTrainingModule(backbone="tiny-llama", task=ClozeClassification({"sport": "football"}), label_names=LABELS,
                              method=BottleneckAdapter(non_linearity="identity", init_std=0.02, reduction_factor=8),
                              optimizer=partial(torch.optim.AdamW, lr=1e-2), **{**options, **kwargs})


def _data(path: str, shots: int = 2) -> FewShotClassificationData:
    return FewShotClassificationData(path, tokenizer="tiny-llama", template="{text}\nTopic:", shots_per_class=shots,
                                     label_names=LABELS, val_size=0, test_size=0, batch_size=3, max_length=32)


def _trainer(root, steps: int = STEPS, callbacks=()) -> L.Trainer:
    return L.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_steps=steps, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), callbacks=list(callbacks))


def test_lite_adapters_are_linear_with_small_normal_weights_and_refuse_a_bad_std():
    adapted = BottleneckAdapter(non_linearity="identity", init_std=0.02, reduction_factor=8).apply(tiny_causal_lm())
    weights = [p for n, p in adapted.groups["adapter"].items() if n.endswith("weight")]
    biases = [p for n, p in adapted.groups["adapter"].items() if n.endswith("bias")]
    assert len(weights) == 2 * 2 * 2  # 2 layers x (attention, FFN) x (down, up)
    assert torch.cat([w.flatten() for w in weights]).std().item() == pytest.approx(0.02, rel=0.1)
    assert all(b.abs().sum() == 0 for b in biases)
    adapter = next(m for n, m in adapted.model.named_modules() if n.endswith("o_proj.bottleneck.task"))
    hidden = torch.randn(3, 64)
    torch.testing.assert_close(adapter(2 * hidden) - 2 * hidden, 2 * (adapter(hidden) - hidden))  # no non-linearity
    for bad in (0, -0.1, True, "0.02"):
        with pytest.raises(MethodConfigError, match="init_std=.* must be a positive standard deviation"):
            BottleneckAdapter(init_std=bad)


@pytest.fixture(scope="module")
def topics(tmp_path_factory) -> str:
    """12 short texts per class, written once for the file's tests (the tokenized copy is cached across them)."""
    path = tmp_path_factory.mktemp("topics") / "topics.jsonl"
    path.write_text("".join(json.dumps({"text": f"{label} story {i} " + "word " * (i % 5), "label": label}) + "\n"
                            for label in LABELS for i in range(12)))
    return str(path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, topics):
    """A run of STEPS steps that saves a checkpoint after every step."""
    root = tmp_path_factory.mktemp("list")
    L.seed_everything(7)
    module, recorder = _module(), LossRecorder()
    saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    _trainer(root, callbacks=[saver, recorder]).fit(module, datamodule=_data(topics))
    return {"root": root, "data": topics, "losses": recorder.losses, "module": module}


def _saved(root: Path, step: int) -> dict:
    return read_checkpoint(root / "ckpt" / f"step={step}.ckpt")


def _adapters(ckpt: dict) -> dict[str, torch.Tensor]:
    return {name.removeprefix("model."): value for name, value in ckpt["state_dict"].items()}


def test_teacher_trains_on_shots_then_is_refreshed_from_the_student(uninterrupted):
    root, module = uninterrupted["root"], uninterrupted["module"]
    assert _saved(root, 2)["self_training"]["teacher"] is None  # steps 0-1: the teacher trains, no self-training yet
    for session_start in (2, 4):  # each session's teacher = the adapters as they were when it started
        teacher, before = _saved(root, session_start + 1)["self_training"]["teacher"], _adapters(_saved(root, session_start))
        assert teacher.keys() == before.keys()
        for name, value in teacher.items():
            torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    # reset_student: the session's first step starts from the initial adapters with a fresh AdamW state, so no
    # weight is more than one step (lr = 0.01, plus AdamW's decay) from its initial value; the teacher is further
    saved = _saved(root, 3)
    initial, teacher, student = saved["self_training"]["initial"], saved["self_training"]["teacher"], _adapters(saved)
    assert max((student[n] - initial[n]).abs().max().item() for n in initial) <= 0.0101
    assert max((teacher[n] - initial[n]).abs().max().item() for n in initial) > 0.015
    assert all(int(state["step"]) == 1 for state in saved["optimizer_states"][0]["state"].values())
    assert _saved(root, STEPS)["self_training"]["pool_drawn"] == STEPS - 2
    assert module.teacher is not None and module.pool_drawn == STEPS - 2


@pytest.mark.parametrize("step", [2, 3])  # at the teacher/student boundary; mid-session, before the refresh
def test_resume_matches_the_uninterrupted_run(uninterrupted, tmp_path, step):
    L.seed_everything(1234)  # a fresh process starts from another RNG state
    module, recorder = _module(), LossRecorder()
    _trainer(tmp_path, callbacks=[recorder]).fit(module, datamodule=_data(uninterrupted["data"]),
                                                 ckpt_path=str(uninterrupted["root"] / "ckpt" / f"step={step}.ckpt"))
    assert recorder.losses == pytest.approx(uninterrupted["losses"][step:], abs=1e-6)
    done = uninterrupted["module"]
    for name, weight in trainable_state(module.state_dict(), module.trainable_parameter_names()).items():
        torch.testing.assert_close(weight, trainable_state(done.state_dict(), {name})[name], rtol=0, atol=1e-6)
    for name, weight in module.teacher.items():
        torch.testing.assert_close(weight, done.teacher[name], rtol=0, atol=1e-6)


def test_recipe_structure_runs_fast_dev_run_through_the_cli(tmp_path):
    main(["fit", "--config", str(ROOT / "configs/cloze/list_trec6.yaml"), "--model.init_args.backbone", "tiny-llama",
          "--model.init_args.teacher_steps", "1", "--trainer.fast_dev_run", "2", "--trainer.enable_progress_bar", "false",
          "--test_before_fit", "false", "--trainer.default_root_dir", str(tmp_path),
          "--data.init_args.shots_per_class", "2", "--data.init_args.max_train_examples", "400",
          "--data.init_args.max_unlabelled", "16", "--data.init_args.max_eval_examples", "8"])
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["fit"]["global_step"] == 2
    assert 0.0 <= metrics["fit"]["train/kept"] <= 1.0 and metrics["fit"]["train/pseudo_loss"] >= 0.0  # a student step ran
    assert 0.0 <= metrics["test"]["test/acc"] <= 1.0


def test_help_documents_the_schedule(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "lightning_peft.modules.SelfTrainingModule"])
    text = " ".join(capsys.readouterr().out.split())
    for option, doc in {"teacher_steps": "teacher trains on the shots alone", "refresh_every": "Student steps per",
                        "reset_student": "re-initialises it", "unlabelled_batch_size": "teacher labels per student step"}.items():
        assert f"--model.{option}" in text and doc in text, option


def test_an_empty_pool_is_one_sentence_at_setup_before_weights_load(tmp_path, topics):
    module = _module()
    with pytest.raises(MethodConfigError, match="no unlabelled examples; use FewShotClassificationData"):
        _trainer(tmp_path).fit(module, datamodule=_data(topics, shots=12))
    assert module.model is None


def test_more_shots_than_the_smallest_class_is_one_sentence_at_setup(tmp_path, topics):
    with pytest.raises(DataConfigError, match="shots_per_class=13 is more than .* lower shots_per_class"):
        _trainer(tmp_path).fit(_module(), datamodule=_data(topics, shots=13))


def test_a_run_that_ends_before_self_training_is_refused_at_setup(tmp_path, topics):
    module = _module(teacher_steps=6)
    with pytest.raises(MethodConfigError, match="ends before self-training starts"):
        _trainer(tmp_path, steps=6).fit(module, datamodule=_data(topics))
    assert module.model is None


@pytest.mark.parametrize("option, value", [("teacher_steps", 0), ("refresh_every", True), ("unlabelled_batch_size", 0)])
def test_bad_schedule_values_are_refused_at_construction(option, value):
    with pytest.raises(MethodConfigError, match=f"{option} must be a positive integer"):
        _module(**{option: value})
