"""Compact LoRA dropout: bitwise the numbers of nn.Dropout (outputs, gradients, RNG stream), less saved memory.

`CompactDropout` keeps a 1-byte mask; `DroppedLoraA` (dropout moved into LoRA's A) keeps the shared input and a mask.
"""

import pytest
import torch
from torch import nn

from lightning_peft.methods.lora import Lora
from lightning_peft.methods.lora_dropout import CompactDropout, DeferredDropout, DroppedLoraA, use_compact_dropout
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


def _linear_run(fused: bool, x: torch.Tensor, p: float, seed: int = 0):
    torch.manual_seed(3)
    a = nn.Linear(x.shape[-1], 5, bias=False).to(x.dtype)
    if fused:
        module = DroppedLoraA(x.shape[-1], 5, p, device="meta")
        module.weight = a.weight
    else:
        module = nn.Sequential(nn.Dropout(p), a)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = module(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out.detach(), x.grad, a.weight.grad, torch.get_rng_state()


@pytest.mark.parametrize("p", [0.05, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_inside_lora_a_matches_dropout_then_linear_bitwise(p, dtype):
    x = torch.randn(3, 6, 33, generator=torch.Generator().manual_seed(2)).to(dtype)
    for want, got in zip(_linear_run(False, x, p), _linear_run(True, x, p)):
        assert torch.equal(want, got)


def test_dropout_inside_lora_a_keeps_the_shared_input_once_and_a_byte_mask_each():
    x = torch.randn(64, 96, requires_grad=True)
    stock = [nn.Sequential(nn.Dropout(0.1), nn.Linear(96, 4, bias=False)) for _ in range(3)]
    fused = [DroppedLoraA(96, 4, 0.1) for _ in range(3)]
    weights = {m.weight.data_ptr() for m in fused} | {m[1].weight.data_ptr() for m in stock}
    saved = []
    for adapters in (stock, fused):  # three adapters reading the same input, as q_proj, k_proj and v_proj do
        storages = {}

        def pack(t):
            if t.data_ptr() not in weights:
                storages[t.data_ptr()] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outputs = [adapter(x) for adapter in adapters]  # kept alive, as the graph keeps them until backward
        saved.append(sum(storages.values()))
        del outputs
    # stock: per adapter its float noise and its dropped copy; fused: x once, plus a 1-byte mask per adapter
    assert saved == [3 * 2 * 64 * 96 * 4, 64 * 96 * 4 + 3 * 64 * 96]


def test_dropout_inside_lora_a_is_plain_dropout_then_linear_outside_cpu_training():
    fused = DroppedLoraA(8, 3, 0.4)
    x = torch.randn(5, 8)
    assert torch.equal(fused.eval()(x), x @ fused.weight.t())
    fused.train()
    with torch.no_grad():
        torch.manual_seed(0)
        got = fused(x)
        torch.manual_seed(0)
        assert torch.equal(got, nn.functional.dropout(x, 0.4, True) @ fused.weight.t())


def _lora_run(compact: bool, variant: str = "lora"):
    torch.manual_seed(0)
    adapted = Lora(r=4, dropout=0.1, compact_dropout=compact, variant=variant).apply(tiny_causal_lm())
    model = adapted.model.train()
    for name, param in model.named_parameters():  # B starts at zero: make every adapter path count
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(len(name)))
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    params = {p.data_ptr() for p in model.parameters()}
    saved, dropped = {}, []  # dropped: elements of dropout inputs that need a gradient (a mask is kept)
    inputs = {}  # the distinct tensors that adapters read, and their bytes
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.register_forward_pre_hook(lambda m, args: dropped.append(args[0].numel() * args[0].requires_grad))
    for name, module in model.named_modules():
        if name.endswith("lora_A.default"):
            module.register_forward_pre_hook(
                lambda m, args: inputs.__setitem__(args[0].data_ptr(), args[0].numel() * args[0].element_size()))

    def pack(t):
        if t.data_ptr() not in params:
            saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return model, loss.detach(), grads, sum(saved.values()), sum(dropped), sum(inputs.values())


def _assert_same_training(model, loss, grads, peft_model, peft_loss, peft_grads):
    assert torch.equal(loss, peft_loss)
    assert grads.keys() == peft_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, peft_grads[name]), name
    assert model.state_dict().keys() == peft_model.state_dict().keys()  # checkpoints and exports unchanged


def test_lora_with_compact_dropout_trains_bitwise_the_same_with_less_saved_memory():
    peft_model, peft_loss, peft_grads, peft_saved, dropped, _ = _lora_run(compact=False)
    model, loss, grads, saved, _, shared_inputs = _lora_run(compact=True)
    lora_layers = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)]
    assert lora_layers and all(isinstance(m.lora_dropout["default"], DeferredDropout)
                               and isinstance(m.lora_A["default"], DroppedLoraA) for m in lora_layers)
    assert not any(isinstance(m, (DeferredDropout, DroppedLoraA)) for m in peft_model.modules())
    _assert_same_training(model, loss, grads, peft_model, peft_loss, peft_grads)
    # per dropped element peft keeps a float32 noise value and a float32 dropped copy (8 bytes), we keep a
    # 1-byte mask, plus each distinct adapter input once (q, k and v read one; gate and up another; some,
    # like o_proj's, autograd keeps anyway)
    assert dropped > 0 and peft_saved - saved >= 7 * dropped - shared_inputs
    assert shared_inputs < 4 * dropped  # float32: fewer distinct inputs than dropped copies, as adapters share them


def test_dora_layers_keep_their_dropout_slot_compact_and_train_bitwise_the_same():
    peft_model, peft_loss, peft_grads, *_ = _lora_run(compact=False, variant="dora")
    model, loss, grads, *_ = _lora_run(compact=True, variant="dora")
    layers = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)]
    assert layers and all(isinstance(m.lora_dropout["default"], CompactDropout)
                          and type(m.lora_A["default"]) is nn.Linear for m in layers)
    _assert_same_training(model, loss, grads, peft_model, peft_loss, peft_grads)


def test_only_plain_dropouts_of_lora_layers_are_swapped():
    model = Lora(r=2, dropout=0.0, compact_dropout=False).apply(tiny_causal_lm()).model
    assert use_compact_dropout(model) == 0  # p = 0: peft uses nn.Identity
    model = Lora(r=2, dropout=0.2, target_modules=["q_proj"], compact_dropout=False).apply(tiny_causal_lm()).model
    assert use_compact_dropout(model) == len([n for n, _ in model.named_modules() if n.endswith("q_proj")])


def test_dropout_of_one_is_left_to_nn_dropout():
    # p=1 drops everything (nn.Dropout returns zeros); rescaling by 1/(1-p) would give NaN.
    model = Lora(r=2, dropout=0.2, target_modules=["q_proj"], compact_dropout=False).apply(tiny_causal_lm()).model
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 1.0
    assert use_compact_dropout(model) == 0
    ids = torch.randint(10, 1000, (2, 8), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model.train()(input_ids=ids, labels=ids).loss)
