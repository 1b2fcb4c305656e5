"""DomainExperts on a tiny random BERT: experts start as the base FFN, routing isolates experts, export/load, refusals."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, DistilBertConfig, DistilBertModel

from lightning_peft import zoo
from lightning_peft.methods import DomainExperts, MethodConfigError
from lightning_peft.methods.domain_experts import RoutedFFN

DOMAINS = ["business", "sport", "tech"]
IDS = torch.randint(5, 1000, (4, 7), generator=torch.Generator().manual_seed(0))
ROUTE = ["sport", "business", "sport", "tech"]


def _bert() -> torch.nn.Module:
    return AutoModel.from_pretrained(zoo.resolve("tiny-bert")).eval()


@torch.no_grad()
def _hidden(model: torch.nn.Module) -> torch.Tensor:
    return model(input_ids=IDS, attention_mask=torch.ones_like(IDS)).last_hidden_state


def _experts(model: torch.nn.Module, domain: str) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if f".experts.{domain}." in name]


@torch.no_grad()
def _perturb(model: torch.nn.Module, domain: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for parameter in _experts(model, domain):
        parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))


def _one_sentence(error: BaseException) -> bool:
    text = str(error)
    return "\n" not in text and text.endswith(".") and len(text) < 400


def test_experts_start_as_the_pretrained_ffn_and_are_grouped_per_domain():
    model = _bert()
    before = _hidden(model)
    method = DomainExperts(DOMAINS)
    adapted = method.apply(model)
    assert set(adapted.groups) == {"expert_business", "expert_sport", "expert_tech"}
    # every layer's up- and down-projection (BERT splits the FFN in two modules), one copy per domain
    assert len([m for m in model.modules() if isinstance(m, RoutedFFN)]) == 2 * model.config.num_hidden_layers
    assert all(".experts.sport." in name for name in adapted.groups["expert_sport"])
    with method.route(model, ROUTE):  # rows run in per-expert sub-batches: equal up to float summation order
        assert torch.allclose(_hidden(model), before, rtol=0, atol=1e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapted.trainable_names()


def test_each_example_goes_through_its_domains_expert_only():
    model = _bert()
    method = DomainExperts(DOMAINS)
    method.apply(model)
    with method.route(model, ROUTE):
        before = _hidden(model)
        _perturb(model, "sport", seed=1)
        after = _hidden(model)
    sport = torch.tensor([domain == "sport" for domain in ROUTE])
    assert torch.equal(after[~sport], before[~sport])  # business and tech rows do not see the sport expert
    assert not torch.allclose(after[sport], before[sport], atol=1e-3)


def test_gradients_reach_only_the_routed_experts():
    model = _bert().train()
    method = DomainExperts(DOMAINS)
    method.apply(model)
    with method.route(model, ["tech", "tech", "business", "business"]):
        model(input_ids=IDS, attention_mask=torch.ones_like(IDS)).last_hidden_state.square().mean().backward()
    assert all(p.grad is None for p in _experts(model, "sport"))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in _experts(model, "tech") + _experts(model, "business")
               if p.dim() > 1)
    assert all(p.grad is None for n, p in model.named_parameters() if ".experts." not in n)  # the base stays frozen


def test_disabled_gives_the_base_and_export_load_gives_identical_outputs(tmp_path):
    base_output = _hidden(_bert())
    model = _bert()
    method = DomainExperts(DOMAINS)
    method.apply(model)
    for seed, domain in enumerate(DOMAINS):
        _perturb(model, domain, seed)
    with method.route(model, ROUTE):
        trained = _hidden(model)
    with method.disabled(model):
        assert torch.equal(_hidden(model), base_output)
    assert not torch.allclose(trained, base_output, atol=1e-3)
    method.export(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"experts.safetensors", "domain_experts.json"}
    reloader = DomainExperts()  # default settings: the domains are read from the folder
    loaded = reloader.load(_bert(), tmp_path)
    with reloader.route(loaded, ROUTE):
        assert torch.equal(_hidden(loaded), trained)


def test_a_single_domain_needs_no_labels():
    model = _bert()
    before = _hidden(model)
    DomainExperts().apply(model)
    assert torch.equal(_hidden(model), before)


@pytest.mark.parametrize(("make", "words"), [
    (lambda: DomainExperts([]), "at least one domain"),
    (lambda: DomainExperts(["a", "a"]), "distinct"),
    (lambda: DomainExperts(["a"]).apply(DistilBertModel(DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2))),
     "does not know where the FFN of a 'distilbert' model is"),
])
def test_bad_settings_are_refused_in_one_sentence(make, words):
    with pytest.raises(MethodConfigError, match=words) as refused:
        make()
    assert _one_sentence(refused.value)


def test_an_unknown_domain_or_absent_labels_are_refused_in_one_sentence():
    model = _bert()
    method = DomainExperts(DOMAINS)
    method.apply(model)
    with pytest.raises(MethodConfigError, match=r"\['weather'\] have no expert") as unknown:
        with method.route(model, ["sport", "weather", "tech", "tech"]):
            pass
    with pytest.raises(MethodConfigError, match="got no domain labels") as absent:
        _hidden(model)
    with pytest.raises(MethodConfigError, match="3 domain labels for a batch of 4") as short:
        with method.route(model, ["sport", "tech", "tech"]):
            _hidden(model)
    assert all(_one_sentence(e.value) for e in (unknown, absent, short))


def test_experts_refuse_to_load_onto_another_base(tmp_path):
    model = _bert()
    method = DomainExperts(DOMAINS)
    method.apply(model)
    method.export(model, tmp_path)
    other = _bert()
    with torch.no_grad():
        other.encoder.layer[0].intermediate.dense.weight.mul_(2)
    with pytest.raises(MethodConfigError, match="another base") as refused:
        DomainExperts().load(other, tmp_path)
    assert _one_sentence(refused.value)
