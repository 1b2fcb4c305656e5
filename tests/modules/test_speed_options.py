"""Speed switches of FineTuneModule change nothing but speed: gradient checkpointing, torch.compile, attention kernels."""

import lightning as L
import pytest
import torch

from lightning_peft.data.sft import SFTData
from lightning_peft.methods.lora import Lora
from lightning_peft.modules.lora import LoraModule
from lightning_peft.tasks.language_modeling import CausalLMSFT
from tests.helpers import LossRecorder


def _module(**kwargs) -> LoraModule:
    torch.manual_seed(0)  # same adapter initialisation for every module built here
    module = LoraModule(backbone="tiny-llama", task=CausalLMSFT(**kwargs.pop("task_args", {})),
                        method=Lora(r=4, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"]),
                        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), **kwargs)
    module.configure_model()
    return module


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(10, 1000, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loss_and_grads(module: LoraModule) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    for name, param in module.model.named_parameters():  # LoRA B starts at 0; make every adapter weight matter
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(len(name)))
    loss = module.training_step(_batch(), 0)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("chunked_loss", [False, True])
def test_gradient_checkpointing_with_frozen_base_and_lora_gives_same_loss_and_gradients(chunked_loss):
    task_args = {"chunked_loss": chunked_loss}
    plain, checkpointed = _module(task_args=dict(task_args)), _module(task_args=dict(task_args), gradient_checkpointing=True)
    layer_calls = []
    # a pre-hook: torch stops a recomputation as soon as it has what backward needs, which may be mid-module
    checkpointed.model.get_decoder().layers[0].mlp.register_forward_pre_hook(lambda *args: layer_calls.append(1))
    expected_loss, expected = _loss_and_grads(plain)
    loss, grads = _loss_and_grads(checkpointed)
    assert len(layer_calls) == 2, "the layer was not recomputed in the backward pass: checkpointing is off"
    torch.testing.assert_close(loss, expected_loss)
    assert grads.keys() == expected.keys() and len(grads) == 2 * 2 * 3  # A and B, 2 layers, 3 targets
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, f"{name} got no gradient through the checkpointed base"
        torch.testing.assert_close(grad, expected[name], atol=1e-6, rtol=1e-4, msg=name)


def _fit_losses(module: LoraModule, steps: int = 2) -> list[float]:
    data = SFTData("movie_dialog", tokenizer="tiny-llama", max_length=32, batch_size=4, max_train_examples=16,
                   val_size=0, test_size=0)
    recorder = LossRecorder()
    L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[recorder]).fit(module, datamodule=data)
    return recorder.losses


@pytest.mark.slow
def test_compiled_module_trains_with_the_eager_losses():
    eager, compiled = _module(), _module(compile=True)
    torch.manual_seed(1)
    expected = _fit_losses(eager)
    torch.manual_seed(1)
    got = _fit_losses(compiled)
    assert compiled.model._compiled_call_impl is not None  # compiled in place: parameter names unchanged
    assert {n for n, _ in compiled.named_parameters()} == {n for n, _ in eager.named_parameters()}
    # the second loss follows one optimizer step, so it also checks the compiled backward
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_attention_kernel_is_passed_to_the_backbone_and_gives_the_same_loss():
    eager, sdpa = _module(attn_implementation="eager"), _module(attn_implementation="sdpa")
    assert eager.model.config._attn_implementation == "eager" and sdpa.model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(_loss_and_grads(eager)[0], _loss_and_grads(sdpa)[0], atol=1e-5, rtol=1e-5)


def test_unknown_attention_kernel_is_refused_before_loading():
    from lightning_peft.methods import MethodConfigError

    with pytest.raises(MethodConfigError, match="attn_implementation='flash2' is not an attention kernel"):
        LoraModule(backbone="tiny-llama", task=CausalLMSFT(), method=Lora(), attn_implementation="flash2")


@pytest.mark.parametrize("packing, chosen, expected", [(True, None, "packed_sdpa"), (False, None, "sdpa"),
                                                       (True, "eager", "eager")])
def test_packed_data_gets_per_example_attention_unless_a_kernel_is_set(packing, chosen, expected):
    module = LoraModule(backbone="tiny-llama", task=CausalLMSFT(), method=Lora(r=4, target_modules=["q_proj"]),
                        attn_implementation=chosen)
    data = SFTData("movie_dialog", tokenizer="tiny-llama", max_length=32, batch_size=4, max_train_examples=8,
                   val_size=0, test_size=0, packing=packing)
    L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, datamodule=data)
    assert module.model.config._attn_implementation == expected


@pytest.mark.parametrize(("lacks", "default"), [("_supports_sdpa", "eager"), ("_supports_attention_backend", "sdpa")])
def test_packed_data_keeps_the_default_kernel_for_a_model_without_sdpa(monkeypatch, lacks, default):
    from transformers import LlamaForCausalLM

    # As a model class that never implemented sdpa, or that calls its attention without the interface
    # (then packed_sdpa would be registered but never run).
    monkeypatch.setattr(LlamaForCausalLM, lacks, False)
    module = LoraModule(backbone="tiny-llama", task=CausalLMSFT(), method=Lora(r=4, target_modules=["q_proj"]))
    data = SFTData("movie_dialog", tokenizer="tiny-llama", max_length=32, batch_size=4, max_train_examples=8,
                   val_size=0, test_size=0, packing=True)
    L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, datamodule=data)
    assert module.model.config._attn_implementation == default
