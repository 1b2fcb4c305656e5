"""TokenClassificationData: column files and JSON Lines read, tags aligned to word pieces, bad files refused by file and line."""

from __future__ import annotations

import json

import pytest

from lightning_peft import zoo
from lightning_peft.data import DataConfigError, TokenClassificationData, load_records
from lightning_peft.data.catalog import TURKISH_POS_TAGS
from lightning_peft.data.token_classification import align_tags

CONLL = """-DOCSTART- -X- O O

Mustafa NNP B-PER
Kemal NNP I-PER
visited VBD O
Istanbulluların NNP B-LOC
. . O

The DT O
unbelievably RB O
cheerful JJ O
Ankaralılar NNP I-ORG
sang VBD O
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _data(dataset: str, **kwargs) -> TokenClassificationData:
    return TokenClassificationData(dataset, tokenizer="minilm-l6", val_size=0, test_size=0, batch_size=8, **kwargs)


def test_align_tags_puts_each_words_tag_on_its_first_piece():
    word_ids = [None, 0, 0, 0, 1, 2, 2, None]  # [CLS] w0 w0 w0 w1 w2 w2 [SEP]
    labels, starts = align_tags(word_ids, [3, 1, 4])
    assert labels == [-100, 3, -100, -100, 1, 4, -100, -100]
    assert starts == [0, 1, 0, 0, 1, 1, 0, 0]
    all_labels, all_starts = align_tags(word_ids, [3, 1, 4], label_all_pieces=True)
    assert all_labels == [-100, 3, 3, 3, 1, 4, 4, -100] and all_starts == starts


def test_a_conll_file_gives_one_tag_per_word_at_the_first_piece_of_each_word(tmp_path, cache):
    data = _data(_write(tmp_path, "ner.conll", CONLL))
    assert data.label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    data.setup()
    batch = next(iter(data.train_dataloader()))
    tokenizer = zoo.load_tokenizer("minilm-l6")
    seen = []
    for ids, labels, starts in zip(batch["input_ids"], batch["labels"], batch["word_starts"]):
        assert (labels[~starts] == -100).all()  # only first pieces are trained on
        seen.append(list(zip(tokenizer.convert_ids_to_tokens(ids[starts].tolist()),
                             [data.label_names[k] for k in labels[starts].tolist()])))
    sentences = [("Mustafa Kemal visited Istanbulluların .".split(), ["B-PER", "I-PER", "O", "B-LOC", "O"]),
                 ("The unbelievably cheerful Ankaralılar sang".split(), ["O", "O", "O", "I-ORG", "O"])]
    expected = [[(tokenizer.tokenize(word)[0], tag) for word, tag in zip(words, tags)] for words, tags in sentences]
    assert sorted(seen) == sorted(expected)
    assert len(tokenizer.tokenize("Istanbulluların")) > 1  # so a word of several pieces was aligned


def test_label_all_pieces_trains_every_piece_of_a_word(tmp_path, cache):
    data = _data(_write(tmp_path, "ner.conll", CONLL), label_all_pieces=True)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    trained = batch["labels"] != -100
    assert trained.sum() > batch["word_starts"].sum()  # more labelled pieces than words
    assert (batch["attention_mask"].sum(1) - trained.sum(1) == 2).all()  # all but [CLS] and [SEP]


def test_conllu_skips_comments_multiword_ranges_and_empty_nodes(tmp_path, cache):
    text = ("# sent_id = 1\n# text = Gelmedin mi?\n"
            "1-2\tGelmedin\t_\t_\t_\t_\t_\t_\t_\t_\n1\tGel\tgel\tVERB\t_\t_\t0\troot\t_\t_\n"
            "2\tmedin\t_\tVERB\t_\t_\t1\tig\t_\t_\n2.1\tx\t_\tNOUN\t_\t_\t_\t_\t_\t_\n3\tmi\tmi\tPRT\t_\t_\t1\tprt\t_\t_\n"
            "4\t?\t?\tPUNCT\t_\t_\t1\tp\t_\t_\n\n1\tEvet\tevet\tADV\t_\t_\t0\troot\t_\t_\n")
    data = _data(_write(tmp_path, "tr.conllu", text), token_column=1, tag_column=3, tag_scheme="plain")
    records = data.read_data().records
    assert [r["tokens"] for r in records] == [["Gel", "medin", "mi", "?"], ["Evet"]]
    assert records[0]["tags"] == ["VERB", "VERB", "PRT", "PUNCT"] and records[1]["line"] == 10
    assert data.label_names == ["ADV", "PRT", "PUNCT", "VERB"] and data.dataset.endswith("tr.conllu")


def test_the_turkish_treebanks_are_in_the_catalog_with_their_tags():
    records = load_records("turkish_pos")
    assert len(records) >= 4800
    assert all(len(r["tokens"]) == len(r["tags"]) > 0 for r in records)
    assert {tag for r in records for tag in r["tags"]} == set(TURKISH_POS_TAGS)


@pytest.mark.parametrize("name, text, kwargs, message", [
    ("bad.conll", "Ali B-PER\nkoştu O\n\nAyşe PER\n", {}, r"bad.conll, sentence at line 4: tag 'PER' is not a BIO tag"),
    ("short.conll", "Ali B-PER\nkoştu\n", {"tag_column": 1}, r"short.conll, line 2: has 1 column\(s\), too few"),
    ("empty.conll", "\n\n-DOCSTART- O\n", {}, r"empty.conll holds no token lines"),
    ("pos.conll", "Ali NOUN\nkoştu VERB\n", {"tag_scheme": "bio"}, r"sentence at line 1: tag 'NOUN' is not a BIO tag.*tag_scheme: plain"),
])
def test_bad_column_files_are_refused_naming_file_and_line(tmp_path, cache, name, text, kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        _data(_write(tmp_path, name, text), **kwargs).label_names


def test_a_missing_or_non_utf8_column_file_is_refused(tmp_path):
    with pytest.raises(DataConfigError, match="does not exist"):
        _data(str(tmp_path / "missing.conll"))
    (tmp_path / "latin1.conll").write_bytes("Ali B-PER\nİzmir O\n".encode("utf-8") + "Çorum O\n".encode("latin-1"))
    with pytest.raises(DataConfigError, match=r"is not UTF-8 text \(byte 0xc7 on line 3\)"):
        _data(str(tmp_path / "latin1.conll"))


def test_bad_jsonl_records_are_refused_naming_the_example(tmp_path, cache):
    lines = [{"tokens": ["Ali", "koştu"], "tags": ["B-PER", "O"]}, {"tokens": ["Ayşe", "geldi"], "tags": ["B-PER"]}]
    path = _write(tmp_path, "ner.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataConfigError, match=r"ner.jsonl, example 2: 2 tokens but 1 tags"):
        _data(path).label_names
    with pytest.raises(DataConfigError, match=r"is empty"):
        _data(_write(tmp_path, "none.jsonl", "")).label_names
    path = _write(tmp_path, "blank.jsonl", json.dumps({"tokens": ["Ali", " "], "tags": ["B-PER", "O"]}) + "\n")
    with pytest.raises(DataConfigError, match=r"blank.jsonl, example 1: token 2 is empty"):
        _data(path).label_names


def test_a_tag_outside_the_training_tags_is_refused_at_setup(cache):
    from datasets import Dataset, DatasetDict

    parts = {"train": [{"tokens": ["Ali", "koştu"], "tags": ["B-PER", "O"]}],
             "test": [{"tokens": ["THY", "uçtu"], "tags": ["B-ORG", "O"]}]}
    data = _data(DatasetDict({name: Dataset.from_list(rows) for name, rows in parts.items()}))
    assert data.label_names == ["O", "B-PER", "I-PER"]
    with pytest.raises(DataConfigError, match=r"example 1: tag 'B-ORG' is not among the tags"):
        data.setup()


@pytest.mark.parametrize("kwargs, message", [
    ({"tag_scheme": "bioes"}, "tag_scheme='bioes' is not one of bio, plain"),
    ({"max_length": 2}, "max_length must be an integer >= 3"),
    ({"label_names": ["O", "PER"]}, r"\['PER'\], which are not BIO tags"),
])
def test_bad_arguments_are_refused_at_construction(tmp_path, kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        _data(_write(tmp_path, "ner.conll", CONLL), **kwargs)


def test_help_explains_the_new_options():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(TokenClassificationData, "data")  # what LightningCLI's --data.help shows
    text = " ".join(parser.format_help().split())
    for option, doc in {"tag_scheme": "for entity tags", "label_all_pieces": "Give every piece of a word",
                        "token_column": "Column files only", "tags_column": "list of tags"}.items():
        assert f"--data.{option}" in text and doc in text, option
