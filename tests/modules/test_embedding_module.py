"""EmbeddingModule on a tiny random BERT: the recipes run, batches are routed by domain, refusals are one sentence."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_peft.cli import main
from lightning_peft.data import ClassificationData, EmbeddingPairData
from lightning_peft.methods import DomainExperts, MethodConfigError
from lightning_peft.modules import EmbeddingModule
from lightning_peft.tasks import TaskConfigError

ROOT = Path(__file__).resolve().parents[2]
BACKBONE = "tiny-bert"


def _pairs(tmp_path: Path, domains: list[str], count: int = 8) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"text": f"title number {k}\n\nthe body of article {k} is here",
                                        "label": domains[k % len(domains)]}) + "\n" for k in range(count)))
    return path


def _fit(module: EmbeddingModule, data, steps: int = 1) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    return trainer


@pytest.mark.parametrize("recipe", ["mnr_bbc_news", "mnr_experts_bbc_news"])
def test_the_recipe_trains_and_scores_retrieval_per_domain_on_a_tiny_model(tmp_path, recipe):
    main(["fit", "--config", str(ROOT / "configs" / "encoders" / f"{recipe}.yaml"), "--model.init_args.backbone", BACKBONE,
          "--trainer.fast_dev_run", "2", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir",
          str(tmp_path), "--data.init_args.max_eval_examples", "64", "--data.init_args.eval_batch_size", "32"])
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["fit"]["global_step"] == 2
    test = metrics["test"]
    for prefix in ["", "business/", "entertainment/", "politics/", "sports/", "tech/"]:
        assert {f"test/{prefix}recall@1", f"test/{prefix}recall@10", f"test/{prefix}mrr"} <= set(test), prefix
        assert 0.0 <= test[f"test/{prefix}recall@1"] <= test[f"test/{prefix}recall@10"] <= 1.0


def test_batches_train_the_experts_of_their_domains_in_the_methods_order(tmp_path):
    # The data knows domains a and b (in that order) but gives only "a" pairs; the method lists b first.
    data = EmbeddingPairData(str(_pairs(tmp_path, ["a"])), tokenizer=BACKBONE, domain_names=["a", "b"], val_size=0,
                             test_size=0, batch_size=4)
    method = DomainExperts(["b", "a"])
    module = EmbeddingModule(BACKBONE, method=method, optimizer=partial(torch.optim.AdamW, lr=1e-2))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    _fit(module, data)
    changed = {n for n, p in module.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == set(module.groups["expert_a"])  # expert b saw no example, the base stays frozen


def test_a_single_expert_serves_every_domain(tmp_path):
    data = EmbeddingPairData(str(_pairs(tmp_path, ["a", "b"])), tokenizer=BACKBONE, val_size=0, test_size=0, batch_size=4)
    module = EmbeddingModule(BACKBONE, method=DomainExperts(), optimizer=partial(torch.optim.AdamW, lr=1e-2))
    assert _fit(module, data).global_step == 1


def test_a_data_domain_without_an_expert_is_refused_in_one_sentence(tmp_path):
    data = EmbeddingPairData(str(_pairs(tmp_path, ["a", "c"])), tokenizer=BACKBONE, val_size=0, test_size=0)
    with pytest.raises(MethodConfigError, match=r"\['c'\] have no expert"):
        _fit(EmbeddingModule(BACKBONE, method=DomainExperts(["a", "b"])), data)


def test_data_without_pairs_is_refused_at_setup(tmp_path):
    data = ClassificationData(str(_pairs(tmp_path, ["a", "b"])), tokenizer=BACKBONE, val_size=0, test_size=0)
    with pytest.raises(TaskConfigError, match="use lightning_peft.data.EmbeddingPairData"):
        _fit(EmbeddingModule(BACKBONE), data)


def test_a_decoder_only_backbone_is_refused_before_loading():
    with pytest.raises(TaskConfigError, match="MNR embedding training embeds sentences with a bidirectional encoder"):
        EmbeddingModule("tiny-llama")
