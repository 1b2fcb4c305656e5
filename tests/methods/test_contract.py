"""The method contract suite: every method `lightning_peft.methods` exports goes through one life cycle.

Methods are discovered (every non-abstract `MethodBase` subclass in `lightning_peft.methods.__all__`,
built with its defaults), so a new method is checked by exporting it, without new plumbing tests.
Each runs in the shared `FineTuneModule` on tiny Llama and GPT-2 models (verbalizer
classification, 2 AdamW steps with a checkpoint per step and a `ForgettingProbe`), and on tiny BERT
(sequence classification with a head) and T5 (text-to-text) where the method supports them; what a
method cannot adapt on an architecture is declared below and must be refused in one sentence:

- training changes exactly the parameters of its named groups, nothing else;
- the checkpoint holds exactly those parameters, and resuming from step 1 gives step 2 exactly;
- the probed model (`Method.probe_model`) differs from the base after training, the forgetting
  probe's KL from base is > 0 (the causal LMs: the probe measures a language model), and `generate`
  returns the input followed by new tokens (T5: new decoder tokens; BERT classifies, it does not generate);
- export -> load onto a fresh base gives identical logits (in this process and in a fresh one),
  merge gives the same logits, the adaptation turned off gives the base's logits; an operation a
  method's `capabilities` exclude is refused with one sentence.

`FinalNormTuning` below is a method written only in this file: it passes the same suite with no
edit to any module, which is what docs/extending.md promises a new method.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

import lightning_peft.methods as methods
from lightning_peft import zoo
from lightning_peft.callbacks import ForgettingProbe
from lightning_peft.data import ClassificationData, Seq2SeqData
from lightning_peft.evaluation import ProbeTask
from lightning_peft.methods import Adapted, Capabilities, MethodBase, MethodConfigError, freeze, trainable_groups
from lightning_peft.modules import FineTuneModule
from lightning_peft.tasks import HeadClassification, Seq2Seq, Task, VerbalizerClassification
from tests import helpers


class FinalNormTuning(MethodBase):
    """A toy method defined only here: train the final layer norm; export it as one safetensors file."""

    capabilities: ClassVar[Capabilities] = Capabilities(export=True, merge=True, disable=False)
    FILE = "final_norm.safetensors"

    @staticmethod
    def _norm(model: nn.Module) -> str:
        return [name for name, module in model.named_modules() if name.endswith(("model.norm", "ln_f"))][0]

    def apply(self, model, modules_to_save=None) -> Adapted:
        freeze(model)
        norm = self._norm(model)
        for parameter in model.get_submodule(norm).parameters():
            parameter.requires_grad_(True)
        return Adapted(model, trainable_groups(model, lambda name: "norm"))

    def export(self, model, folder: Path) -> None:
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}, str(folder / self.FILE))

    def load(self, base, folder) -> nn.Module:
        self.apply(base)
        base.load_state_dict(load_file(str(Path(folder) / self.FILE)), strict=False)
        return base.eval()

    def merge(self, model) -> nn.Module:
        return model


def discovered() -> list[type]:
    found = [getattr(methods, name) for name in methods.__all__]
    return [c for c in found if inspect.isclass(c) and issubclass(c, MethodBase) and not inspect.isabstract(c)]


@dataclass(frozen=True)
class Arch:
    """How the suite trains and runs one architecture: its task, the class its base loads as, and its kind."""

    task: type[Task]
    auto: type
    kind: str  # "causal" (a language model the forgetting probe measures), "seq2seq" or "classifier"


ARCHS = {"tiny-llama": Arch(VerbalizerClassification, AutoModelForCausalLM, "causal"),
         "tiny-gpt2": Arch(VerbalizerClassification, AutoModelForCausalLM, "causal"),
         "tiny-bert": Arch(HeadClassification, AutoModelForSequenceClassification, "classifier"),
         "tiny-t5": Arch(Seq2Seq, AutoModelForSeq2SeqLM, "seq2seq")}
METHODS = [*discovered(), FinalNormTuning]
# Defaults name one architecture's modules; these are the same methods set for the others.
SETTINGS = {(methods.IA3, "tiny-gpt2"): {"target_modules": ["c_attn", "c_fc"], "feedforward_modules": ["c_fc"]},
            (methods.IA3, "tiny-bert"): {"target_modules": ["key", "value", "dense"], "feedforward_modules": ["dense"]},
            (methods.IA3, "tiny-t5"): {"target_modules": ["k", "v", "wo"], "feedforward_modules": ["wo"]},
            # the classifier reads one position ([CLS]) of the last layer: at the default width (2 on tiny BERT)
            # both relu units there can be dead, leaving that adapter without gradient for the 2 steps
            (methods.BottleneckAdapter, "tiny-bert"): {"reduction_factor": 4}}
# What a method cannot do on an architecture, refused in one sentence at apply (tested below).
CANNOT = {(methods.HFT, "tiny-gpt2"): "separate projections",  # GPT-2 fuses q, k, v into one c_attn
          (methods.HFT, "tiny-bert"): "separate projections",  # HFT's FFN rule needs 3 projections; BERT has 2
          (methods.HFT, "tiny-t5"): "separate projections",  # T5's FFN has 2 (wi, wo)
          (methods.BitFit, "tiny-llama"): "has none",  # Llama has no bias terms
          (methods.BitFit, "tiny-t5"): "has none",
          (methods.PrefixTuning, "tiny-bert"): "does not take"}  # peft looks for `past_key_values`, transformers 5 has `cache`
# The toy below finds a decoder's final norm by name: it is written for the causal LMs only.
SKIPPED = {(FinalNormTuning, "tiny-bert"), (FinalNormTuning, "tiny-t5")}
CASES = [pytest.param(cls, arch, id=f"{cls.__name__}-{arch}") for cls in METHODS for arch in ARCHS
         if (cls, arch) not in CANNOT and (cls, arch) not in SKIPPED]
GENERATING = [case for case in CASES if ARCHS[case.values[1]].kind != "classifier"]
SPAM = ProbeTask("sms_spam", "Message: {text}\nSpam? Answer:", {"ham": "no", "spam": "yes"}, num_examples=4)
STEPS = 2


def test_discovery_finds_every_method_family():
    names = {cls.__name__ for cls in discovered()}
    assert {"Lora", "IA3", "PromptTuning", "PrefixTuning", "DePT", "EPT", "IAPT", "FullFineTuning", "HFT", "BitFit",
            "EmbeddingsAndHead", "LastBlock"} <= names


def _module(cls: type, arch: str) -> FineTuneModule:
    return FineTuneModule(backbone=arch, task=ARCHS[arch].task(), method=cls(**SETTINGS.get((cls, arch), {})),
                          label_names=helpers.LABELS, optimizer=partial(torch.optim.AdamW, lr=1e-2))


def _data(root: Path, arch: str) -> ClassificationData | Seq2SeqData:
    root.mkdir(parents=True, exist_ok=True)
    path, shared = str(helpers.write_jsonl(root / "data.jsonl", count=16)), {"val_size": 0, "test_size": 0, "batch_size": 4}
    if ARCHS[arch].kind == "seq2seq":  # text -> label word
        return Seq2SeqData(path, tokenizer=arch, max_source_length=16, **shared)
    return ClassificationData(path, tokenizer=arch, label_names=helpers.LABELS, max_length=16, **shared)


def _fit(module: FineTuneModule, root: Path, arch: str, callbacks=(), ckpt_path=None) -> None:
    L.seed_everything(7)
    saver = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    L.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=root,
              callbacks=[saver, *callbacks]).fit(module, datamodule=_data(root, arch), ckpt_path=ckpt_path)


def _inputs(arch: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 400, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding, as generation uses
    if ARCHS[arch].kind == "seq2seq":  # the decoder's first three positions
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids[:, :3]}
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def _logits(model: nn.Module, arch: str, body: bool = False) -> torch.Tensor:
    """The model's logits on `_inputs` (a soft prompt's positions, which come first, cut off). With `body`, a
    classifier's last hidden states instead: every load of a base draws a new random head, so a model is
    compared with the base on what the head reads."""
    inputs = _inputs(arch)
    training = model.training
    model.eval()
    try:
        if body and ARCHS[arch].kind == "classifier":
            return model(**inputs, output_hidden_states=True).hidden_states[-1][:, -inputs["input_ids"].shape[1]:].float()
        return model(**inputs).logits[:, -inputs["input_ids"].shape[1]:].float()
    finally:
        model.train(training)


def _base(arch: str) -> nn.Module:
    labels = {"num_labels": len(helpers.LABELS)} if ARCHS[arch].kind == "classifier" else {}
    return ARCHS[arch].auto.from_pretrained(zoo.resolve(arch), **labels).eval()


def _one_sentence(error: BaseException) -> bool:
    text = str(error)
    return "\n" not in text and text.endswith(".") and len(text) < 400


@dataclass
class Run:
    module: FineTuneModule
    root: Path
    before: dict[str, torch.Tensor]
    probe: ForgettingProbe | None  # the causal LMs only


_RUNS: dict[tuple[type, str], Run] = {}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("contract")


def trained(cls: type, arch: str, root: Path) -> Run:
    """The method trained for STEPS steps on `arch` (once per module run; later tests reuse it)."""
    key = (cls, arch)
    if key not in _RUNS:
        folder = root / f"{cls.__name__}-{arch}"
        module = _module(cls, arch)
        module.configure_model()
        before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
        probe = ForgettingProbe(tokenizer=arch, num_chunks=2, chunk_tokens=16, top_k=8, probe_tasks=[SPAM],
                                every_n_steps=STEPS) if ARCHS[arch].kind == "causal" else None
        _fit(module, folder, arch, callbacks=[probe] if probe is not None else [])
        _RUNS[key] = Run(module, folder, before, probe)
    return _RUNS[key]


@pytest.mark.parametrize(("cls", "arch"), [pytest.param(c, a, id=f"{c.__name__}-{a}") for c, a in CANNOT])
def test_refuses_what_it_cannot_adapt_in_one_sentence(cls, arch):
    with pytest.raises(MethodConfigError, match=CANNOT[(cls, arch)]) as refused:
        _module(cls, arch).configure_model()
    assert _one_sentence(refused.value)


@pytest.mark.parametrize(("cls", "arch"), CASES)
def test_training_changes_exactly_the_named_groups(cls, arch, runs_root):
    run = trained(cls, arch, runs_root)
    grouped = {name for group in run.module.groups.values() for name in group}
    assert grouped, "a method must train something"
    changed = {n for n, p in run.module.model.named_parameters() if not torch.equal(p.detach(), run.before[n])}
    assert changed == grouped


@pytest.mark.parametrize(("cls", "arch"), CASES)
def test_checkpoint_holds_the_groups_and_resumes_exactly(cls, arch, runs_root, tmp_path):
    run = trained(cls, arch, runs_root)
    saved = torch.load(run.root / "ckpt" / f"step={STEPS}.ckpt", weights_only=True)
    assert set(saved["state_dict"]) == run.module.trainable_parameter_names()
    resumed = _module(cls, arch)
    _fit(resumed, tmp_path, arch, ckpt_path=str(run.root / "ckpt" / "step=1.ckpt"))
    expected = dict(run.module.model.named_parameters())
    for name in {n for group in run.module.groups.values() for n in group}:
        torch.testing.assert_close(dict(resumed.model.named_parameters())[name], expected[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("cls", "arch"), CASES)
def test_probes_see_the_adaptation(cls, arch, runs_root):
    run = trained(cls, arch, runs_root)
    assert not torch.allclose(_logits(run.module.probe_model(), arch, body=True), _logits(_base(arch), arch, body=True),
                              atol=1e-5)
    if run.probe is None:
        return
    last = run.probe.history[-1]
    assert last["step"] == STEPS and last["kl_from_base"] > 0.0  # measuring the base against itself gives exactly 0
    expected_source = "adaptation disabled" if cls.capabilities.disable else "model at fit start"
    assert run.probe.base_source == expected_source


@pytest.mark.parametrize(("cls", "arch"), GENERATING)
def test_generate_continues_the_input(cls, arch, runs_root):
    run = trained(cls, arch, runs_root)
    inputs = {k: v for k, v in _inputs(arch).items() if k != "decoder_input_ids"}
    model = run.module.probe_model().eval()
    out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                         pad_token_id=run.module.tokenizer.pad_token_id)
    if ARCHS[arch].kind == "seq2seq":  # the decoder's start token, then the new tokens
        assert out.shape == (2, 1 + 3) and bool((out[:, 0] == model.config.decoder_start_token_id).all())
        return
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


@pytest.mark.parametrize(("cls", "arch"), CASES)
def test_export_load_merge_and_disable_or_refuse(cls, arch, runs_root, tmp_path):
    run = trained(cls, arch, runs_root)
    module, method, capabilities = run.module, run.module.method, cls.capabilities
    expected = _logits(module.probe_model(), arch)
    if capabilities.export:
        folder = module.export(run.root / "export")
        torch.testing.assert_close(_logits(method.load(_base(arch), folder), arch), expected)
        torch.save(expected, run.root / "expected_logits.pt")
    else:
        with pytest.raises(MethodConfigError) as refused:
            module.export(tmp_path / "export")
        assert _one_sentence(refused.value) and not (tmp_path / "export").exists()
    if capabilities.disable:
        with method.disabled(module.model) as base:
            torch.testing.assert_close(_logits(base, arch, body=True), _logits(_base(arch), arch, body=True))
        torch.testing.assert_close(_logits(module.probe_model(), arch), expected)  # back on afterwards
    else:
        with pytest.raises(MethodConfigError) as refused, method.disabled(module.model):
            pass
        assert _one_sentence(refused.value)
    if capabilities.merge:
        merged = module.export_merged(tmp_path / "merged")
        torch.testing.assert_close(_logits(ARCHS[arch].auto.from_pretrained(merged), arch), expected,
                                   atol=1e-4, rtol=1e-4)
        module.configure_model()  # merging consumed the model; rebuild it (the checkpoint tests need none)
    else:
        with pytest.raises(MethodConfigError) as refused:
            module.export_merged(tmp_path / "merged")
        assert _one_sentence(refused.value) and not (tmp_path / "merged").exists()


FRESH_PROCESS = """
import importlib, json, sys, torch
from tests.methods.test_contract import _base, _logits
failed = []
for case in json.loads(sys.argv[1]):
    cls = getattr(importlib.import_module(case["module"]), case["name"])
    model = cls(**case["settings"]).load(_base(case["arch"]), case["folder"])
    if not torch.allclose(_logits(model, case["arch"]), torch.load(case["expected"], weights_only=True), atol=1e-5):
        failed.append(f"{case['name']} on {case['arch']}")
print(json.dumps(failed))
"""


def test_exports_load_in_a_fresh_process(runs_root):
    """Every export of every architecture, loaded in one fresh process (one interpreter start for all)."""
    cases = []
    for cls in METHODS:
        for arch in ARCHS:
            if not cls.capabilities.export or (cls, arch) in CANNOT or (cls, arch) in SKIPPED:
                continue
            run = trained(cls, arch, runs_root)
            if not (run.root / "expected_logits.pt").exists():  # the export test did not run first (e.g. -k)
                run.module.export(run.root / "export")
                torch.save(_logits(run.module.probe_model(), arch), run.root / "expected_logits.pt")
            cases.append({"module": cls.__module__, "name": cls.__qualname__, "arch": arch,
                          "settings": SETTINGS.get((cls, arch), {}), "folder": str(run.root / "export"),
                          "expected": str(run.root / "expected_logits.pt")})
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(cases)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    for arch in ARCHS:  # LoRA, IA3, prompt, prefix (not on a BERT classifier), DePT, EPT, IAPT, bottleneck
        assert len([case for case in cases if case["arch"] == arch]) >= 7
