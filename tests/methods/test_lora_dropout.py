"""CompactDropout: bitwise the numbers of nn.Dropout (outputs, gradients, RNG stream) with a smaller saved mask."""

import pytest
import torch
from torch import nn

from lightning_peft.methods.lora import Lora
from lightning_peft.methods.lora_dropout import CompactDropout, use_compact_dropout
from tests.conftest import tiny_causal_lm


def _forward_backward(dropout: nn.Module, x: torch.Tensor, seed: int = 0):
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = dropout(x)
    out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape))
    return out.detach(), x.grad, torch.get_rng_state()


@pytest.mark.parametrize("p", [0.05, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_same_outputs_gradients_and_rng_stream_as_nn_dropout(p, dtype):
    x = torch.randn(4, 7, 33, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected, compact = _forward_backward(nn.Dropout(p), x), _forward_backward(CompactDropout(p), x)
    for want, got in zip(expected, compact):
        assert torch.equal(want, got)
    assert (expected[0] == 0).any() and (expected[0] != 0).any()  # it did drop, and kept


def test_saved_mask_is_one_byte_per_element():
    saved = []
    x = torch.randn(64, 128, requires_grad=True)
    for dropout in (nn.Dropout(0.1), CompactDropout(0.1)):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            dropout(x)
        saved.append(sum(sizes))
    assert saved == [64 * 128 * 4, 64 * 128 * 1]


def test_eval_mode_and_p0_are_the_identity():
    x = torch.randn(3, 5)
    assert torch.equal(CompactDropout(0.3).eval()(x), x)
    assert torch.equal(CompactDropout(0.0)(x), x)


def _lora_run(compact: bool):
    torch.manual_seed(0)
    adapted = Lora(r=4, dropout=0.1, compact_dropout=compact).apply(tiny_causal_lm())
    model = adapted.model.train()
    for name, param in model.named_parameters():  # B starts at zero: make every adapter path count
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(len(name)))
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    params = {p.data_ptr() for p in model.parameters()}
    saved, dropped = {}, []  # dropped: elements of dropout inputs that need a gradient (a mask is kept)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.register_forward_pre_hook(lambda m, args: dropped.append(args[0].numel() * args[0].requires_grad))

    def pack(t):
        if t.data_ptr() not in params:
            saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return model, loss.detach(), grads, sum(saved.values()), sum(dropped)


def test_lora_with_compact_dropout_trains_bitwise_the_same_with_less_saved_memory():
    peft_model, peft_loss, peft_grads, peft_saved, dropped = _lora_run(compact=False)
    model, loss, grads, saved, _ = _lora_run(compact=True)
    lora_layers = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)]
    assert lora_layers and all(isinstance(m.lora_dropout["default"], CompactDropout) for m in lora_layers)
    assert not any(isinstance(m, CompactDropout) for m in peft_model.modules())
    assert torch.equal(loss, peft_loss)
    assert grads.keys() == peft_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, peft_grads[name]), name
    # each dropout kept a bool mask instead of a float32 noise tensor: 3 bytes less per input element
    assert dropped > 0 and peft_saved - saved == 3 * dropped
    assert model.state_dict().keys() == peft_model.state_dict().keys()  # checkpoints and exports unchanged


def test_only_plain_dropouts_of_lora_layers_are_swapped():
    model = Lora(r=2, dropout=0.0, compact_dropout=False).apply(tiny_causal_lm()).model
    assert use_compact_dropout(model) == 0  # p = 0: peft uses nn.Identity
    model = Lora(r=2, dropout=0.2, target_modules=["q_proj"], compact_dropout=False).apply(tiny_causal_lm()).model
    assert use_compact_dropout(model) == len([n for n, _ in model.named_modules() if n.endswith("q_proj")])
