from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from lightning_peft.data import ClassificationData, DataConfigError, FewShotClassificationData

COUNTS = {"sport": 30, "politics": 20, "tech": 6}


@pytest.fixture
def topics_file(tmp_path):
    records = [{"text": f"{label} story number {i} " + "word " * (i % 7), "label": label}
               for label, count in COUNTS.items() for i in range(count)]
    path = tmp_path / "topics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _fewshot(path, tokenizer, **kwargs):
    settings = {"template": "{text} Topic:", "val_size": 0, "test_size": 0, "batch_size": 4, **kwargs}
    dm = FewShotClassificationData(path, tokenizer=tokenizer, **settings)
    dm.setup()
    return dm


def _labels(data):
    return [data[i]["label"] for i in range(len(data))]


def test_every_class_gets_exactly_k_shots_and_the_rest_is_an_unlabelled_pool(data_cache, tokenizer, topics_file):
    dm = _fewshot(topics_file, tokenizer, shots_per_class=5, shot_seed=1)
    train, pool = dm.datasets["train"], dm.datasets["unlabelled"]
    assert Counter(_labels(train)) == {index: 5 for index in range(3)}
    assert len(pool) == sum(COUNTS.values()) - 15
    assert set(train.indices).isdisjoint(pool.indices)
    assert all("label" not in pool[i] for i in range(len(pool)))
    batches = list(dm.unlabelled_dataloader(batch_size=8))
    assert sum(len(b["input_ids"]) for b in batches) == len(pool)
    assert set(batches[0]) == {"input_ids", "attention_mask"}
    assert tokenizer.decode(batches[0]["input_ids"][0][: int(batches[0]["attention_mask"][0].sum())]).endswith("Topic:")
    labelled = next(iter(dm.train_dataloader()))
    assert set(labelled) == {"input_ids", "attention_mask", "labels"}


def test_same_seed_same_shots_other_seed_other_shots(data_cache, tokenizer, topics_file):
    first = _fewshot(topics_file, tokenizer, shots_per_class=4, shot_seed=7).datasets["train"].indices
    again = _fewshot(topics_file, tokenizer, shots_per_class=4, shot_seed=7).datasets["train"].indices
    other = _fewshot(topics_file, tokenizer, shots_per_class=4, shot_seed=8).datasets["train"].indices
    assert first == again
    assert set(first) != set(other)


def test_validation_and_test_are_those_of_classification_data(data_cache, tokenizer):
    settings = {"tokenizer": tokenizer, "template": "Question: {text}\nAnswer type:", "split_seed": 3,
                "max_eval_examples": 50}
    plain = ClassificationData("trec6", **settings)
    plain.setup()
    for seed in (0, 1):
        dm = FewShotClassificationData("trec6", shots_per_class=8, shot_seed=seed, **settings)
        dm.setup()
        assert len(dm.datasets["train"]) == 8 * len(dm.label_names)
        for split in ("validation", "test"):
            assert dm.datasets[split].indices == plain.datasets[split].indices
        # the shots and the pool together are the plain training split
        assert sorted(dm.datasets["train"].indices + dm.datasets["unlabelled"].indices) == sorted(plain.datasets["train"].indices)


def test_k_larger_than_the_smallest_class_names_it_at_setup(data_cache, tokenizer, topics_file):
    dm = FewShotClassificationData(topics_file, tokenizer=tokenizer, shots_per_class=7, val_size=0, test_size=0)
    with pytest.raises(DataConfigError, match=r"shots_per_class=7 is more than the training split's 6 examples of class 'tech'"):
        dm.setup()


@pytest.mark.parametrize("k", [0, -2, 1.5, True])
def test_k_below_one_or_not_an_integer_is_one_sentence(k):
    with pytest.raises(DataConfigError, match="shots_per_class must be a positive integer"):
        FewShotClassificationData("trec6", shots_per_class=k)


def test_a_pattern_without_the_text_slot_is_one_sentence():
    with pytest.raises(DataConfigError, match=r"has no \{text\} slot"):
        FewShotClassificationData("trec6", template="Answer type:")
    with pytest.raises(DataConfigError, match="not a valid format string"):
        FewShotClassificationData("trec6", template="{text} {")


def test_ipet_adds_pool_examples_with_the_ensembles_labels_not_their_own(data_cache, tokenizer, topics_file):
    dm = _fewshot(topics_file, tokenizer, shots_per_class=2, shot_seed=0)
    pool = dm.datasets["unlabelled"]
    shots = list(dm.datasets["train"].indices)
    dm.add_pseudo_labelled([0, 3, 3], [2, 1, 1])
    train = dm.datasets["train"]
    assert train.indices == shots + [pool.indices[0], pool.indices[3], pool.indices[3]]
    assert _labels(train)[6:] == [2, 1, 1]  # the given labels, whatever the file says
    assert "label" not in pool.store  # the pool itself still carries no labels
    assert set(next(iter(dm.train_dataloader()))) == {"input_ids", "attention_mask", "labels"}
    with pytest.raises(DataConfigError, match="one label per position"):
        dm.add_pseudo_labelled([0, 1], [2])


def test_distillation_trains_on_the_pool_with_soft_labels_and_evaluates_with_labels(data_cache, tokenizer, topics_file):
    dm = _fewshot(topics_file, tokenizer, shots_per_class=2, shot_seed=0, test_size=6)
    size = dm.pool_size()
    soft = torch.arange(size * 3, dtype=torch.float32).view(size, 3)
    dm.train_on_soft_labels(soft)
    batches = list(dm.train_dataloader())
    assert sum(len(b["soft_labels"]) for b in batches) == size and "labels" not in batches[0]
    ordered = torch.cat([b["soft_labels"] for b in _in_order(dm)])
    assert torch.equal(ordered, soft)  # row i of the soft labels goes with pool example i
    assert set(next(iter(dm.test_dataloader()))) == {"input_ids", "attention_mask", "labels"}
    with pytest.raises(DataConfigError, match="soft labels for 2 examples but the pool has"):
        dm.train_on_soft_labels(soft[:2])


def _in_order(dm):
    from torch.utils.data import DataLoader

    return DataLoader(dm.datasets["train"], batch_size=5, collate_fn=dm.collator())


def test_ordered_loaders_keep_the_stored_order(data_cache, tokenizer, topics_file):
    dm = _fewshot(topics_file, tokenizer, shots_per_class=2, shot_seed=0, test_size=6)
    for split in ("train", "test", "unlabelled"):
        ids = [row for batch in dm.ordered_dataloader(split, batch_size=4) for row in batch["input_ids"].tolist()]
        stored = [dm.datasets[split][i]["input_ids"] for i in range(len(dm.datasets[split]))]
        assert [row[: len(s)] for row, s in zip(ids, stored)] == stored
    assert dm.pool_identity() == list(dm.datasets["unlabelled"].indices)
