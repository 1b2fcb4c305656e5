"""TokenClassification and EntityF1: entity spans on hand-worked tag sequences, the loss, refusals, the recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightning_peft import zoo
from lightning_peft.cli import main
from lightning_peft.tasks import EntityF1, TaskConfigError, TokenClassification
from lightning_peft.tasks.entity_f1 import entity_spans, is_bio

ROOT = Path(__file__).resolve().parents[2]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
    (["I-PER", "I-PER", "O", "I-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),      # IOB1: I- after O starts an entity
    (["O", "I-ORG", "B-ORG", "I-ORG"], {("ORG", 1, 1), ("ORG", 2, 3)}),      # B- splits two adjacent entities
    (["B-PER", "I-LOC", "I-PER"], {("PER", 0, 0), ("LOC", 1, 1), ("PER", 2, 2)}),  # nested-looking: no nesting
    (["B-PER", "B-PER", "I-PER"], {("PER", 0, 0), ("PER", 1, 2)}),
    (["O", "O"], set()),
    (["B-MISC"], {("MISC", 0, 0)}),                                          # an entity at the sentence end closes
])
def test_entity_spans_follow_conlleval(tags, spans):
    assert entity_spans(tags) == spans


def _ids(tags: list[str]) -> list[int]:
    return [TAGS.index(tag) for tag in tags]


def test_entity_f1_counts_exact_type_and_boundary_matches_and_skips_ignored_positions():
    metric = EntityF1(TAGS)
    gold = _ids(["B-PER", "I-PER", "O", "B-LOC"])
    pred = _ids(["B-PER", "I-PER", "O", "B-PER"])           # PER right, LOC typed wrong: 1 of 2 each way
    skip = -100                                             # later pieces and padding interleaved
    metric.update(torch.tensor([[pred[0], 0, pred[1], pred[2], pred[3], 0]]),
                  torch.tensor([[gold[0], skip, gold[1], gold[2], gold[3], skip]]))
    assert metric.compute().item() == pytest.approx(0.5)
    # a boundary error is both a false positive and a false negative: PER(0, 0) vs PER(0, 1)
    metric.update(torch.tensor([_ids(["B-PER", "O"])]), torch.tensor([_ids(["B-PER", "I-PER"])]))
    assert metric.compute().item() == pytest.approx(2 * 1 / (3 + 3))
    assert EntityF1(TAGS).compute().item() == 0.0  # nothing seen yet


def test_is_bio_tells_entity_tags_from_other_tag_sets():
    assert is_bio(TAGS) and is_bio(["O", "I-PER"])
    assert not is_bio(["NOUN", "VERB"]) and not is_bio(["O"]) and not is_bio(["O", "B-"])


@pytest.fixture(scope="module")
def model_and_tokenizer():
    task = TokenClassification()
    tokenizer = zoo.load_tokenizer("tiny-bert")
    task.bind(tokenizer, TAGS)
    model = task.auto_class().from_pretrained(zoo.resolve("tiny-bert"), **task.model_kwargs()).eval()
    return task, model, tokenizer


def test_step_loss_is_cross_entropy_over_labelled_pieces_and_metrics_read_word_starts(model_and_tokenizer):
    task, model, _ = model_and_tokenizer
    assert task.head_modules(model) == ["classifier"] and model.config.id2label[3] == "B-PER"
    batch = {"input_ids": torch.tensor([[101, 2000, 2001, 2002, 102], [101, 2003, 102, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
             "labels": torch.tensor([[-100, 3, 4, 4, -100], [-100, 1, -100, -100, -100]]),  # word 2 has 2 pieces, all labelled
             "word_starts": torch.tensor([[0, 1, 1, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)}
    output = task.step(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    kept = batch["labels"] != -100
    torch.testing.assert_close(output.loss, F.cross_entropy(logits[kept], batch["labels"][kept]))
    assert output.target.tolist() == [[-100, 3, 4, -100, -100], [-100, 1, -100, -100, -100]]
    words = task.word_tags(output.preds, batch["word_starts"])
    assert [len(sentence) for sentence in words] == [2, 1] and all(tag in TAGS for s in words for tag in s)


def test_metrics_add_entity_f1_for_bio_tags_only(model_and_tokenizer):
    task, _, tokenizer = model_and_tokenizer
    assert set(task.metrics()) == {"acc", "f1", "entity_f1"}
    pos = TokenClassification()
    pos.bind(tokenizer, ["NOUN", "VERB"])
    assert set(pos.metrics()) == {"acc", "f1"}


def test_refusals_are_one_sentence(model_and_tokenizer):
    _, model, tokenizer = model_and_tokenizer
    with pytest.raises(TaskConfigError, match="entity_f1 needs BIO tags"):
        TokenClassification(entity_f1=True).bind(tokenizer, ["NOUN", "VERB"])
    task = TokenClassification()
    task.bind(tokenizer, TAGS)
    sentence_batch = {"input_ids": torch.tensor([[101, 102]]), "attention_mask": torch.tensor([[1, 1]]),
                      "labels": torch.tensor([1])}
    with pytest.raises(TaskConfigError, match="use lightning_peft.data.TokenClassificationData"):
        task.step(model, sentence_batch)


def _conll(path: Path, sentences: int = 24) -> Path:
    people, places = ["Ayşe Yılmaz", "Mehmet Demir", "Zeynep Kaya"], ["İstanbul", "Ankara", "İzmir"]
    lines = []
    for k in range(sentences):
        first, last = people[k % 3].split()
        lines += [f"{first} B-PER", f"{last} I-PER", f"{places[k % 3]}'a O" if k % 2 else f"{places[k % 3]} B-LOC",
                  "gitti O", ". O", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _lora_tagger(tmp_path):
    """A LoRA token classifier on tiny BERT (built) and its data (set up) from a generated CoNLL file."""
    from lightning_peft.data import TokenClassificationData
    from lightning_peft.methods import Lora
    from lightning_peft.modules import LoraModule

    data = TokenClassificationData(str(_conll(tmp_path / "ner.conll")), tokenizer="tiny-bert", val_size=0, test_size=0)
    module = LoraModule(backbone="tiny-bert", task=TokenClassification(), method=Lora(r=4, target_modules=["query", "value"]),
                        label_names=data.label_names)
    module.configure_model()
    data.setup()
    return module, data


def test_lora_trains_its_adapter_and_the_new_head_in_full(tmp_path):
    module, data = _lora_tagger(tmp_path)
    module.task.step(module.model, next(iter(data.train_dataloader()))).loss.backward()
    assert set(module.groups) == {"adapter", "head"}
    with_gradient = {group for group, params in module.groups.items()
                     if any(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())}
    assert with_gradient == {"adapter", "head"}
    assert not any(p.requires_grad for name, p in module.model.named_parameters() if "lora_" not in name
                   and "modules_to_save" not in name)  # the base stays frozen


def test_a_lora_token_classifier_exports_for_auto_peft_model_with_its_head(tmp_path):
    from peft import AutoPeftModelForTokenClassification

    module, data = _lora_tagger(tmp_path)
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():  # move the adapter and the head off their initial values, as training would
        for name, param in module.model.named_parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    module.model.eval()
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = module.model(**inputs).logits
    folder = module.export(tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["task_type"] == "TOKEN_CLS" and config["base_model_name_or_path"] == "tiny-bert"
    # The export names the base by its zoo name; a hub id resolves by itself, a zoo name through lightning-peft
    config["base_model_name_or_path"] = str(zoo.resolve("tiny-bert"))
    (folder / "adapter_config.json").write_text(json.dumps(config))
    reloaded = AutoPeftModelForTokenClassification.from_pretrained(str(folder), num_labels=len(data.label_names)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_prompt_methods_refuse_a_token_classifier_in_one_sentence(method):
    from transformers import AutoModelForTokenClassification

    from lightning_peft.methods import MethodConfigError, PrefixTuning, PromptTuning

    model = AutoModelForTokenClassification.from_pretrained(zoo.resolve("tiny-bert"), num_labels=3)
    prompt = PromptTuning(num_virtual_tokens=4) if method == "prompt_tuning" else PrefixTuning(num_virtual_tokens=4)
    with pytest.raises(MethodConfigError, match="not BertForTokenClassification"):
        prompt.apply(model)


def test_the_recipe_fits_and_tests_through_the_cli_on_a_generated_conll_file(tmp_path):
    data = _conll(tmp_path / "ner.conll")
    main(["fit", "--config", str(ROOT / "configs" / "encoders" / "token_classification_turkish_pos.yaml"),
          "--model.init_args.backbone", "tiny-bert", "--data.init_args.dataset", str(data),
          "--data.init_args.tag_scheme", "bio", "--trainer.fast_dev_run", "2", "--trainer.enable_progress_bar",
          "false", "--trainer.default_root_dir", str(tmp_path)])
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["fit"]["global_step"] == 2
    assert {"test/acc", "test/f1", "test/entity_f1"} <= set(metrics["test"])
    assert 0.0 <= metrics["test"]["test/entity_f1"] <= 1.0 and 0.0 <= metrics["test"]["test/acc"] <= 1.0
