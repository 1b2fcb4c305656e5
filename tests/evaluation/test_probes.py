"""Forgetting probes without Lightning: coarse KL, perplexity and verbalizer accuracy on a tiny model; robustness."""

import pytest
import torch
import torch.nn.functional as F

from lightning_peft import zoo
from lightning_peft.evaluation import ForgettingProbes, ProbeTask, coarse_kl, compare, instruction_robustness
from tests.conftest import tiny_causal_lm

SPAM = ProbeTask("sms_spam", "Message: {text}\nSpam? Answer:", {"ham": "no", "spam": "yes"}, num_examples=6)


def test_coarse_kl_is_zero_for_equal_distributions_and_bounded_by_the_full_kl():
    p = F.log_softmax(torch.randn(3, 50), -1)
    q = F.log_softmax(torch.randn(3, 50), -1)
    values, indices = p.topk(5, -1)
    assert torch.allclose(coarse_kl(values, indices, p), torch.zeros(3), atol=1e-6)
    full = (p.exp() * (p - q)).sum(-1)
    coarse = coarse_kl(values, indices, q)
    assert (coarse > 0).all() and (coarse <= full + 1e-6).all()


@pytest.fixture(scope="module")
def probes():
    return ForgettingProbes(zoo.load_tokenizer("tiny-llama"), num_chunks=2, chunk_tokens=32, top_k=8, tasks=(SPAM,))


def test_measure_and_compare(probes):
    model = tiny_causal_lm()
    base, stats = probes.measure(model)
    assert set(base) == {"perplexity", "acc/sms_spam"} and stats.topk_indices.shape == (2, 31, 8)
    same, _ = probes.measure(model, base=stats)
    deltas = compare(base, same)
    assert deltas["perplexity_ratio"] == pytest.approx(1.0) and deltas["kl_from_base"] == pytest.approx(0.0, abs=1e-6)
    assert deltas["acc_drop/sms_spam"] == 0.0
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    changed, _ = probes.measure(model, base=stats)
    assert compare(base, changed)["kl_from_base"] > 1e-4 and changed["perplexity"] != base["perplexity"]


def test_measure_restores_each_submodule_mode(probes):
    model = tiny_causal_lm().train()
    model.model.layers[1].eval()
    probes.measure(model)
    assert model.training and not model.model.layers[1].training and model.model.layers[0].training


def test_instruction_robustness_reports_seen_and_unseen_spread():
    model, tokenizer = tiny_causal_lm(), zoo.load_tokenizer("tiny-llama")
    result = instruction_robustness(model, tokenizer, SPAM, seen=["SMS: {text}\nSpam? Answer:", "Text: {text}\nIs it spam?"],
                                    unseen=["{text}\nSpam or not? Answer:"])
    assert len(result["templates"]) == 3 and result["seen"]["count"] == 2 and result["unseen"]["count"] == 1
    assert result["unseen"]["std"] == 0.0 and 0.0 <= result["all"]["mean"] <= 1.0
    with pytest.raises(ValueError, match="no \\{text\\} slot"):
        instruction_robustness(model, tokenizer, SPAM, seen=["no slot here"])
