"""IAPT: per-layer prompts generated from the instruction, on the three tiny architectures."""

import gc

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from lightning_peft import zoo
from lightning_peft.methods.base import MethodConfigError
from lightning_peft.methods.iapt import IAPT, IAPTModel, RationalActivation, fit_rational, instruction_rms
from lightning_peft.tasks.classification import VerbalizerClassification
from tests.conftest import tiny_causal_lm

K = 4
INSTRUCTION = 5  # the first 5 tokens are the instruction, the rest the response


def _base(name):
    return AutoModelForSeq2SeqLM.from_pretrained(zoo.resolve(name)) if name == "tiny-t5" else tiny_causal_lm(name)


def _sft_batch():
    ids = torch.randint(20, 1000, (2, 8), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1] * 8, [1] * 6 + [0] * 2])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :INSTRUCTION] = -100
    return ids, mask, labels


def _move_off_init(adapted, scale=0.3):
    """Move every trained parameter away from its start (the residual form's up-projection starts at zero)."""
    with torch.no_grad():
        for p in adapted.groups["prompt"].values():
            p.add_(torch.randn_like(p) * scale)
    return adapted


def _layer_prompts(adapted, **inputs):
    """The k hidden states each layer receives at the prompt positions (read after IAPT's hook wrote them)."""
    seen = {}
    handles = [layer.register_forward_pre_hook(lambda m, a, kw, i=i: seen.__setitem__(i, (a[0] if a else kw["hidden_states"])[:, :K]), with_kwargs=True)
               for i, layer in enumerate(adapted.model.layers)]
    with torch.no_grad():
        adapted.model(**inputs)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5"])
def test_forward_backward_trains_every_generator_and_no_base_weight(name):
    base = _base(name)
    adapted = IAPT(num_tokens=K, bottleneck=8).apply(base)
    ids, mask, labels = _sft_batch()
    if name == "tiny-t5":
        labels = torch.tensor([[5, 6, 7], [8, 9, -100]])
    loss = adapted.model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert set(adapted.groups) == {"prompt"}
    assert len(adapted.model.generators) == len(adapted.model.layers) == 2
    # At init the up-projections are zero, so only they and the start vectors get a gradient ...
    grads = {name: p.grad is not None and p.grad.abs().sum() > 0 for name, p in adapted.groups["prompt"].items()}
    assert {name for name, nonzero in grads.items() if nonzero} == {
        name for name in grads if name == "start" or ".up." in name}
    # ... and after one step every generator parameter does.
    torch.optim.SGD(adapted.groups["prompt"].values(), lr=0.1).step()
    adapted.model.zero_grad()
    adapted.model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapted.groups["prompt"].values())
    assert not any(p.requires_grad or p.grad is not None for p in base.parameters())


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_overwrite_form_trains_every_generator_from_the_first_step(name):
    """residual=False: the earlier form, each layer's prompt replaces the positions' states (nothing starts at zero)."""
    base = _base(name)
    adapted = IAPT(num_tokens=K, bottleneck=8, residual=False).apply(base)
    ids, mask, labels = _sft_batch()
    adapted.model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    assert adapted.model.start is None and "start" not in adapted.groups["prompt"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapted.groups["prompt"].values())
    prompts = _layer_prompts(adapted, input_ids=ids, attention_mask=mask, labels=labels)
    instruction = adapted.model.instruction_mask(*ids.shape, ids.device, mask, labels)
    if name != "tiny-llama":
        return  # GPT-2's first layer reads embeddings plus position embeddings
    with torch.no_grad():  # layer 0 reads exactly its generator's output from the embeddings
        embeds = torch.cat([torch.zeros(2, K, 64), base.get_input_embeddings()(ids)], dim=1)
        torch.testing.assert_close(prompts[0], adapted.model.generators[0](embeds, instruction))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_at_init_the_model_is_the_base_reading_the_start_tokens(name):
    """Residual form at init: zero up-projections, so every layer sees what the base sees with the start text in front."""
    base = _base(name).eval()
    text = "Classify the question:"
    adapted = IAPT(num_tokens=K, bottleneck=8, init_text=text, tokenizer="tiny-llama").apply(base)
    token_ids = zoo.load_tokenizer("tiny-llama")(text, add_special_tokens=False)["input_ids"]
    start_ids = torch.tensor((token_ids * K)[:K])
    ids, _, _ = _sft_batch()
    with torch.no_grad():
        torch.testing.assert_close(adapted.model.start, base.get_input_embeddings()(start_ids), rtol=0, atol=0)
        expected = base(input_ids=torch.cat([start_ids.expand(2, K), ids], dim=1)).logits
        got = adapted.model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    _move_off_init(adapted)
    with torch.no_grad():
        assert not torch.allclose(adapted.model(input_ids=ids).logits, expected, atol=1e-3)


def test_scale_to_hidden_multiplies_by_the_instruction_rms():
    hidden = torch.randn(2, 6, 8)
    instruction = torch.tensor([[False, True, True, False, False, False], [False] * 6])
    rms = instruction_rms(hidden, instruction)
    torch.testing.assert_close(rms[0, 0, 0], hidden[0, 1:3].square().mean().sqrt())
    assert rms.shape == (2, 1, 1) and rms[1, 0, 0] == 1
    base = tiny_causal_lm()
    ids, mask, labels = _sft_batch()
    plain = _move_off_init(IAPT(bottleneck=8).apply(base))
    seen = _layer_prompts(plain, input_ids=ids, attention_mask=mask)
    state = plain.model.soft_prompt_state()
    plain.model.remove_hooks()
    scaled = IAPT(bottleneck=8, scale_to_hidden=True).apply(base)
    with torch.no_grad():
        for name, p in scaled.groups["prompt"].items():
            p.copy_(state[name])
    seen_scaled = _layer_prompts(scaled, input_ids=ids, attention_mask=mask)
    assert not torch.allclose(seen[1], seen_scaled[1])
    torch.testing.assert_close(seen[0] - scaled.model.start, (seen_scaled[0] - scaled.model.start) / rms_layer0(
        base, ids, mask, scaled.model), rtol=1e-4, atol=1e-5)


def rms_layer0(base, ids, mask, wrapper):
    """The instruction RMS layer 0's hook sees: that of the input embeddings at the real tokens."""
    embeds = base.get_input_embeddings()(ids)
    instruction = wrapper.instruction_mask(*ids.shape, ids.device, mask, None)[:, K:]
    return instruction_rms(embeds, instruction)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_prompt_depends_on_instruction_not_on_response(name, residual):
    adapted = _move_off_init(IAPT(num_tokens=K, bottleneck=8, residual=residual).apply(_base(name)))
    ids, mask, labels = _sft_batch()
    reference = _layer_prompts(adapted, input_ids=ids, attention_mask=mask, labels=labels)
    response_changed, instruction_changed = ids.clone(), ids.clone()
    response_changed[:, INSTRUCTION] += 1
    instruction_changed[:, 1] += 1
    same = _layer_prompts(adapted, input_ids=response_changed, attention_mask=mask, labels=labels)
    other = _layer_prompts(adapted, input_ids=instruction_changed, attention_mask=mask, labels=labels)
    for layer in (0, 1):
        assert reference[layer].abs().sum() > 0
        torch.testing.assert_close(same[layer], reference[layer], rtol=0, atol=0)
        assert not torch.allclose(other[layer], reference[layer])


def test_layers_get_different_prompts_unless_shared():
    ids, mask, labels = _sft_batch()
    torch.manual_seed(0)
    separate = _layer_prompts(_move_off_init(IAPT(bottleneck=8).apply(tiny_causal_lm())), input_ids=ids, attention_mask=mask)
    shared_adapted = IAPT(bottleneck=8, share_generators=True).apply(tiny_causal_lm())
    assert len(shared_adapted.model.generators) == 1
    def generator_parameters(adapted):
        return sum(p.numel() for p in adapted.model.generators.parameters())

    assert generator_parameters(shared_adapted) * 2 == generator_parameters(IAPT(bottleneck=8).apply(tiny_causal_lm()))
    assert not torch.allclose(separate[0], separate[1])


def test_padding_does_not_change_a_row():
    """The verbalizer task's left-aligned call gives each row what it gets alone: padding is no instruction."""
    adapted = IAPT(bottleneck=8).apply(tiny_causal_lm().eval())
    ids, mask, _ = _sft_batch()
    task = VerbalizerClassification()
    task.bind(zoo.load_tokenizer("tiny-llama"), ["a", "b"])
    with torch.no_grad():
        batch = task.scores(adapted.model, ids, mask)
        alone = task.scores(adapted.model, ids[1:, :6], mask[1:, :6])
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-5)


def test_base_called_directly_is_unchanged():
    base = tiny_causal_lm().eval()
    ids, _, _ = _sft_batch()
    with torch.no_grad():
        before = base(input_ids=ids).logits
        adapted = IAPT().apply(base)
        adapted.model(input_ids=ids)
        after = base(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def _hook_count(model):
    return sum(len(layer._forward_pre_hooks) for layer in model.modules())


def test_hooks_leave_with_the_wrapper_and_stay_per_model():
    first, second = tiny_causal_lm(), tiny_causal_lm()
    adapted = IAPT().apply(first)
    assert _hook_count(first) == 2
    with pytest.raises(MethodConfigError, match="already carries IAPT"):
        IAPT().apply(first)
    ids, mask, labels = _sft_batch()
    with torch.no_grad():
        before = adapted.model(input_ids=ids, attention_mask=mask).logits
        IAPT().apply(second)
        after = adapted.model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert _hook_count(first) == 2
    del adapted
    gc.collect()
    assert _hook_count(first) == 0
    IAPT().apply(first)  # a fresh wrapper may take the base again


def test_remove_hooks_returns_the_plain_base():
    base = tiny_causal_lm()
    wrapper = IAPT().apply(base).model
    assert wrapper.remove_hooks() is base and _hook_count(base) == 0
    with pytest.raises(RuntimeError, match="hooks were removed"):
        wrapper(input_ids=torch.tensor([[5, 6]]))


def test_head_group_trains_modules_to_save():
    base = AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-llama"), num_labels=3, pad_token_id=0)
    adapted = IAPT(bottleneck=8).apply(base, modules_to_save=["score"])
    assert set(adapted.groups) == {"prompt", "head"}
    assert list(adapted.groups["head"]) == ["base.score.weight"]
    with pytest.raises(MethodConfigError, match="modules_to_save"):
        IAPT(modules_to_save=["no_such_head"]).apply(tiny_causal_lm())


def test_gradient_checkpointing_gives_the_same_gradients():
    ids, mask, labels = _sft_batch()
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        base = tiny_causal_lm()
        adapted = IAPT(bottleneck=8).apply(base)
        if checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        adapted.model.train()(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in adapted.groups["prompt"].values()]))
    torch.testing.assert_close(grads[1], grads[0])


def test_runs_when_everything_is_bfloat16():
    """Lightning's "bf16-true" precision casts the generators along with the base."""
    model = IAPT(bottleneck=8).apply(tiny_causal_lm()).model.to(torch.bfloat16)
    ids, mask, labels = _sft_batch()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.generators[1].down.weight.grad.dtype == torch.bfloat16


def test_rational_activation_starts_as_gelu_or_identity_and_has_no_poles():
    x = torch.linspace(-6, 6, 601)
    assert (RationalActivation(5, 4, "gelu")(x) - F.gelu(x)).abs().max() < 5e-3
    torch.testing.assert_close(RationalActivation(3, 2, "identity")(x), x)
    a, b = fit_rational("gelu", 4, 4)  # other degrees are fitted on construction
    assert (RationalActivation(4, 4, "gelu")(x) - F.gelu(x)).abs().max() < 2e-2 and len(a) == 5 and len(b) == 4
    stored = torch.cat([RationalActivation(5, 4).numerator, RationalActivation(5, 4).denominator])
    torch.testing.assert_close(stored, torch.tensor(fit_rational("gelu", 5, 4)[0] + fit_rational("gelu", 5, 4)[1]),
                               atol=1e-4, rtol=0)  # the stored default is what the fit gives
    wild = RationalActivation(5, 4, "gelu")
    with torch.no_grad():
        wild.denominator.copy_(torch.tensor([-3.0, 1.0, -2.0, 0.5]))
    assert torch.isfinite(wild(torch.linspace(-50, 50, 10001))).all()


def test_wrapper_records_how_to_rebuild_it():
    base = AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-llama"), num_labels=3, pad_token_id=0)
    wrapper = IAPT(num_tokens=2, bottleneck=8, rational_degrees=(3, 2)).apply(base, modules_to_save=["score"]).model
    assert isinstance(wrapper, IAPTModel)
    assert wrapper.method_config == {"class_path": "lightning_peft.methods.iapt.IAPT", "init_args": {
        "num_tokens": 2, "bottleneck": 8, "share_generators": False, "rational_degrees": [3, 2],
        "rational_init": "gelu", "normalize_input": True, "residual": True, "scale_to_hidden": False,
        "modules_to_save": ["score"]}}
    assert wrapper.head_names == ["score.weight"]
    assert set(wrapper.soft_prompt_state()) == {n for n, p in wrapper.named_parameters() if p.requires_grad}


def test_sequence_classifier_rows_do_not_depend_on_padding():
    """A decoder-only classifier pools the last column, so the helper left-aligns rows; the instruction mask follows."""
    base = AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-llama"), num_labels=3, pad_token_id=0)
    model = IAPT(bottleneck=8).apply(base.eval(), modules_to_save=["score"]).model
    ids, mask, _ = _sft_batch()
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[1:, :6], attention_mask=mask[1:, :6]).logits
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_tokens": 0}, "num_tokens"),
    ({"bottleneck": 0}, "bottleneck"),
    ({"rational_degrees": (5,)}, "rational_degrees"),
    ({"rational_degrees": (5, 0)}, "rational_degrees"),
    ({"rational_init": "relu"}, "rational_init"),
])
def test_bad_config_fails_at_construction(kwargs, message):
    with pytest.raises(MethodConfigError, match=message):
        IAPT(**kwargs)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_export_then_reload_gives_identical_outputs(tmp_path, name):
    from lightning_peft.methods.soft_prompt_io import load_soft_prompt, save_soft_prompt

    adapted = IAPT(bottleneck=8, rational_degrees=(3, 2)).apply(_base(name))
    with torch.no_grad():  # move every generator away from its init, so a re-initialised reload would differ
        for p in adapted.groups["prompt"].values():
            p.add_(torch.randn_like(p) * 0.3)
    ids, mask, labels = _sft_batch()
    inputs = {"input_ids": ids, "attention_mask": mask, **({"decoder_input_ids": ids[:, :3]} if name == "tiny-t5" else {})}
    with torch.no_grad():
        expected = adapted.model.eval()(**inputs).logits
    save_soft_prompt(adapted.model, tmp_path)
    reloaded = load_soft_prompt(_base(name), tmp_path)
    assert isinstance(reloaded, IAPTModel) and not reloaded.training
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)
