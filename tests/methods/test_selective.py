import itertools

import pytest
import torch

from lightning_peft.methods import HFT, BitFit, EmbeddingsAndHead, FullFineTuning, LastBlock, MethodConfigError
from lightning_peft.methods.selective import transformer_layers
from tests.conftest import tiny_causal_lm

ATTN, FFN = ["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("layers", [2, 7, 30])
def test_draw_freezes_two_attention_and_half_of_ffn(layers):
    selection = HFT(seed=3).draw(layers, stage=0)
    ffn_counts = []
    for frozen in selection.frozen.values():
        assert len([m for m in frozen if m in ATTN]) == 2
        ffn_counts.append(len([m for m in frozen if m in FFN]))
    assert sorted(set(ffn_counts)) <= [1, 2]
    assert abs(ffn_counts.count(2) - ffn_counts.count(1)) <= layers % 2  # exactly half when even


def test_draw_is_reproducible_per_stage_and_differs_between_stages():
    hft = HFT(seed=5)
    assert hft.draw(30, 1).frozen == HFT(seed=5).draw(30, 1).frozen
    assert hft.draw(30, 1).frozen != hft.draw(30, 2).frozen


def _layer_frozen_share(model):
    params = list(transformer_layers(model).parameters())
    return sum(p.numel() for p in params if not p.requires_grad) / sum(p.numel() for p in params)


def test_frozen_share_is_half_within_what_category_sizes_allow():
    model = tiny_causal_lm()
    block = transformer_layers(model)[0]
    size = {n.rsplit(".", 2)[-2]: p.numel() for n, p in block.named_parameters() if "proj" in n}
    norm = sum(p.numel() for n, p in block.named_parameters() if "norm" in n)
    total = sum(size.values()) + norm
    # every achievable per-layer frozen share, over the draws HFT can make
    shares = [(sum(size[m] for m in a) + sum(size[m] for m in f)) / total
              for a in itertools.combinations(ATTN, 2) for k in (1, 2) for f in itertools.combinations(FFN, k)]
    HFT(seed=0).select(model)
    share = _layer_frozen_share(model)
    assert min(shares) <= share <= max(shares)
    # averaged over draws, exactly half of the projection weights are frozen
    draws = []
    for seed in range(40):
        HFT(seed=seed).select(model)
        draws.append(_layer_frozen_share(model))
    assert sum(draws) / len(draws) == pytest.approx(0.5 * sum(size.values()) / total, abs=0.03)


def test_select_freezes_exactly_the_drawn_projections_and_embeddings():
    model = tiny_causal_lm()
    selection = HFT(seed=1).select(model, stage=0)
    for i, block in enumerate(transformer_layers(model)):
        for name in ATTN + FFN:
            module = dict(block.named_modules())[("self_attn." if name in ATTN else "mlp.") + name]
            assert module.weight.requires_grad == (name not in selection.frozen[i])
    assert not model.get_input_embeddings().weight.requires_grad


def test_hft_rejects_models_without_separate_projections():
    with pytest.raises(MethodConfigError, match="separate projections"):
        HFT().select(tiny_causal_lm("tiny-gpt2"))


def test_lightweight_variants_train_what_they_say():
    model = tiny_causal_lm()
    assert FullFineTuning().apply(model).num_trainable() == sum(p.numel() for p in model.parameters())
    adapted = EmbeddingsAndHead().apply(tiny_causal_lm())
    assert adapted.trainable_names() == {"model.embed_tokens.weight"}  # tied: the head is the same tensor
    adapted = LastBlock().apply(tiny_causal_lm())
    assert adapted.trainable_names() and all(n.startswith("model.layers.1.") for n in adapted.trainable_names())


def test_bitfit_trains_biases_and_refuses_models_without_them():
    adapted = BitFit().apply(tiny_causal_lm("tiny-gpt2"))
    assert adapted.trainable_names() and all(n.endswith(".bias") for n in adapted.trainable_names())
    with pytest.raises(MethodConfigError, match="has none"):
        BitFit().apply(tiny_causal_lm("tiny-llama"))


@pytest.mark.parametrize("method", [EmbeddingsAndHead(), LastBlock()])
def test_lightweight_variants_train_a_task_head(method):
    from transformers import AutoModelForSequenceClassification

    from lightning_peft import zoo

    model = AutoModelForSequenceClassification.from_pretrained(zoo.resolve("tiny-llama"), num_labels=3)
    adapted = method.apply(model, modules_to_save=["score"])
    assert set(adapted.groups["head"]) == {"score.weight"}
    assert len(adapted.groups) == 2  # the method's own group plus the head
