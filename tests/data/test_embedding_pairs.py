"""EmbeddingPairData: bbc_news as (title, body, topic) batches; pair files; refusals."""

from __future__ import annotations

import json

import pytest

from lightning_peft import zoo
from lightning_peft.data import DataConfigError, EmbeddingPairData, load_records
from lightning_peft.data.embedding_pairs import title_and_body


def test_bbc_news_batches_are_titles_then_bodies_with_their_topic():
    data = EmbeddingPairData("bbc_news", tokenizer="tiny-bert", batch_size=4, max_length=24, val_size=0.1, test_size=0.1)
    data.setup()
    assert data.domain_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(data.datasets["train"]) + len(data.datasets["validation"]) + len(data.datasets["test"]) == 2225
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["domain"].shape == (4,) and batch["input_ids"].shape[1] <= 24
    tokenizer = zoo.load_tokenizer("tiny-bert")
    encode = lambda text: tuple(tokenizer(text, truncation=True, max_length=24)["input_ids"])  # noqa: E731
    articles = {encode(title_and_body(r["text"])[0]): (encode(title_and_body(r["text"])[1]), r["label"])
                for r in load_records("bbc_news")}
    mask = batch["attention_mask"].bool()
    for row in range(4):
        body, topic = articles[tuple(batch["input_ids"][row][mask[row]].tolist())]  # the anchor is an article's title
        assert tuple(batch["input_ids"][4 + row][mask[4 + row]].tolist()) == body  # its positive: that article's body
        assert data.domain_names[int(batch["domain"][row])] == topic


def test_a_pair_file_with_its_own_columns_and_no_domains(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"q": f"question {k}", "a": f"answer {k}"}) + "\n" for k in range(10)))
    data = EmbeddingPairData(str(path), tokenizer="tiny-bert", anchor_column="q", positive_column="a", domain_column=None,
                             val_size=0, test_size=0, batch_size=10)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert data.domain_names == ["all"] and batch["domain"].tolist() == [0] * 10


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"anchor_column": "text"}, "Set both anchor_column and positive_column"),
    ({"max_length": 1}, "max_length must be an integer >= 2"),
    ({"domain_names": ["a", "a"]}, "distinct domains"),
])
def test_bad_settings_are_one_sentence(kwargs, words):
    with pytest.raises(DataConfigError, match=words):
        EmbeddingPairData("bbc_news", tokenizer="tiny-bert", **kwargs)


def test_texts_without_a_second_line_are_refused(tmp_path):
    path = tmp_path / "one_line.jsonl"
    path.write_text("".join(json.dumps({"text": f"only a title {k}", "label": "x"}) + "\n" for k in range(4)))
    with pytest.raises(DataConfigError, match="no \\(anchor, positive\\) pair"):
        EmbeddingPairData(str(path), tokenizer="tiny-bert").setup()
