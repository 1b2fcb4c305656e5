"""ParaphraseClassificationData: training batches carry the same example under another instruction phrasing."""

from __future__ import annotations

import json

import pytest

from lightning_peft.data import DataConfigError
from lightning_peft.data.paraphrase import ParaphraseClassificationData

TEMPLATES = ["Question: {text}\nType:", "Classify this: {text}\nType:", "{text}\nWhich kind?"]


@pytest.fixture
def small_file(tmp_path):
    rows = [{"text": f"sample {i} " + "word " * (i % 5), "label": ["yes", "no"][i % 2]} for i in range(40)]
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _data(path, tokenizer, templates=TEMPLATES, **kwargs):
    dm = ParaphraseClassificationData(templates, dataset=path, tokenizer=tokenizer, val_size=8, test_size=4,
                                      batch_size=4, **kwargs)
    dm.setup()
    return dm


def _rows(batch, tokenizer, prefix=""):
    ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"]
    return [tokenizer.decode(ids[row, : int(mask[row].sum())]) for row in range(ids.shape[0])]


def test_train_batches_pair_each_example_with_a_paraphrase(small_file, tokenizer, data_cache):
    dm = _data(small_file, tokenizer)
    used = set()
    for batch in dm.train_dataloader():
        assert batch["paraphrase_input_ids"].shape == batch["paraphrase_attention_mask"].shape
        assert batch["paraphrase_input_ids"].shape[0] == batch["labels"].shape[0]
        for original, paraphrase in zip(_rows(batch, tokenizer), _rows(batch, tokenizer, "paraphrase_")):
            assert original.startswith("Question: ")
            text = original[len("Question: ") : -len("\nType:")]
            matches = [t for t in TEMPLATES[1:] if paraphrase == t.format(text=text)]
            assert len(matches) == 1, (original, paraphrase)
            used.add(matches[0])
    assert used == set(TEMPLATES[1:])  # both paraphrases occur among 28 examples


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_batches_use_the_primary_template_only(small_file, tokenizer, data_cache, split):
    dm = _data(small_file, tokenizer)
    batch = next(iter(getattr(dm, f"{split}_dataloader")()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(row.startswith("Question: ") for row in _rows(batch, tokenizer))


def test_pairs_are_seeded(small_file, tokenizer, data_cache):
    def pairs(seed):
        data = _data(small_file, tokenizer, split_seed=seed).datasets["train"]
        return {example: int(data.choices[example]) for example in data.indices}

    assert pairs(1) == pairs(1)
    assert pairs(1) != pairs(2)


def test_changing_a_paraphrase_is_not_served_from_a_stale_cache(small_file, tokenizer, data_cache):
    first = _data(small_file, tokenizer, templates=TEMPLATES[:2])
    second = _data(small_file, tokenizer, templates=[TEMPLATES[0], "Say which: {text}"])
    assert tokenizer.decode(first.datasets["train"][0]["paraphrase_input_ids"]).startswith("Classify this: ")
    assert tokenizer.decode(second.datasets["train"][0]["paraphrase_input_ids"]).startswith("Say which: ")
    assert first.datasets["train"][0]["input_ids"] == second.datasets["train"][0]["input_ids"]


@pytest.mark.parametrize("templates, message", [
    (["Question: {text}"], "at least two"),
    ("Question: {text}", "at least two"),
    (["Question: {text}", "Question without a slot"], "no {text} slot"),
    (["Q: {text}", "Q: {text}"], "same phrasing twice"),
    (["Q: {text}", "Q: {text"], "not a valid format string"),
    (["Q: {text}", "Q: {text} ({label})"], "The templates entry 'Q: {text} \\({label}\\)' fills {label}, the class being"),
])
def test_bad_templates_fail_at_construction(templates, message):
    with pytest.raises(DataConfigError, match=message):
        ParaphraseClassificationData(templates, dataset="trec6")


def test_template_argument_is_refused():
    with pytest.raises(DataConfigError, match="not template"):
        ParaphraseClassificationData(TEMPLATES, dataset="trec6", template="{text}")


def test_a_template_field_the_records_lack_names_the_argument(small_file, tokenizer, data_cache):
    with pytest.raises(DataConfigError, match="templates .* uses the field 'topic'"):
        _data(small_file, tokenizer, templates=["Q: {text}", "{topic}: {text}"])

