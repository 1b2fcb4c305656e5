"""Data through Hugging Face `datasets`: local files, Hub names, Dataset/DatasetDict objects, chat messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from lightning_peft.data import ClassificationData, DataConfigError, SFTData, load_records
from lightning_peft.data.readers import read_file


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def labelled(count: int) -> list[dict]:
    return [{"text": f"example number {i} " + "word " * (i % 7), "label": "ab"[i % 2]} for i in range(count)]


# --- local files ----------------------------------------------------------------------------------


def test_local_files_are_read_by_datasets_into_its_cache(tmp_path, hermetic_datasets):
    path = write_jsonl(tmp_path / "d.jsonl", labelled(3))
    assert load_records(path)[2] == {"text": "example number 2 word word ", "label": "a"}
    assert list(hermetic_datasets.glob("json/*"))  # datasets.load_dataset("json") kept its Arrow copy there


def test_csv_cells_stay_text_as_written(tmp_path):
    (tmp_path / "d.csv").write_text('text,label\n007,\n"a, b",1\n')
    assert read_file(tmp_path / "d.csv") == [{"text": "007", "label": ""}, {"text": "a, b", "label": "1"}]


def test_json_wrapper_and_json_lines_under_a_json_name(tmp_path):
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [{"text": "hi", "label": "x"}]}))
    (tmp_path / "lines.json").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert read_file(tmp_path / "wrapped.json") == [{"text": "hi", "label": "x"}]
    assert read_file(tmp_path / "lines.json") == [{"text": "a"}, {"text": "b"}]


def test_a_json_record_lacks_the_fields_its_object_lacks(tmp_path, data_cache, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p1", "response": "r1"}, {"response": "r2"},
                                              {"prompt": "p3", "response": "r3", "note": "n"}])
    assert read_file(Path(path)) == [{"prompt": "p1", "response": "r1"}, {"response": "r2"},
                                     {"prompt": "p3", "response": "r3", "note": "n"}]
    dm = SFTData(path, tokenizer=tokenizer, val_size=0, test_size=0)
    dm.setup()
    assert len(dm.datasets["train"]) == 2  # the record without a prompt is dropped, not trained as "None"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", '{"text": "ok"}\n\n{"text": oops}\n', r"^Line 3 of .*bad\.jsonl is not valid JSON \(Expecting value\)"),
    ("strings.json", '["a", "b"]', r"strings\.json must contain one object \(column -> value\) per example"),
    ("mixed.json", '[{"a": 1}, 3]', r"mixed\.json must contain one object"),
    ("numbers.jsonl", "1\n2\n", r"numbers\.jsonl must contain one object"),
    ("broken.json", '[\n{"a": 1}\n', r"broken\.json is not valid JSON \(.* at line 3"),
    ("data.xlsx", "x", r"'\.xlsx' is not supported; convert it to one of \.jsonl, \.json, \.csv, \.parquet"),
    ("fake.parquet", "not parquet", r"Cannot read .*fake\.parquet as Parquet"),
])
def test_bad_files_fail_in_one_sentence(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataConfigError, match=message) as error:
        read_file(tmp_path / name)
    assert "\n" not in str(error.value) and str(error.value).endswith(".")


@pytest.mark.parametrize(("name", "content"), [("blank.jsonl", "\n  \n"), ("header.csv", "text,label\n"),
                                               ("empty.json", "[]")])
def test_files_without_examples_read_as_empty(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    assert read_file(tmp_path / name) == []


# --- Dataset and DatasetDict objects ---------------------------------------------------------------


def test_a_dataset_is_split_by_the_seed_exactly_like_the_same_file(data_cache, tokenizer, tmp_path):
    records = labelled(40)
    from_file = ClassificationData(write_jsonl(tmp_path / "d.jsonl", records), tokenizer=tokenizer, batch_size=8)
    from_object = ClassificationData(Dataset.from_list(records), tokenizer=tokenizer, batch_size=8)
    for dm in (from_file, from_object):
        dm.setup()
    assert from_object.dataset == "datasets.Dataset"  # the name checkpoints and messages use
    for split in ("train", "validation", "test"):
        assert from_object.datasets[split].indices == from_file.datasets[split].indices
        assert [from_object.datasets[split][k] for k in range(3)] == [from_file.datasets[split][k] for k in range(3)]


def test_a_dataset_dict_keeps_its_own_splits(data_cache, tokenizer):
    rows = labelled(60)
    own = DatasetDict({"train": Dataset.from_list(rows[:40]), "validation": Dataset.from_list(rows[40:50]),
                       "test": Dataset.from_list(rows[50:])})
    dm = ClassificationData(own, tokenizer=tokenizer, val_size=0.5, test_size=0.5, max_eval_examples=4,
                            eval_batch_size=64)
    dm.setup()
    assert dm.dataset == "datasets.DatasetDict[train,validation,test]"
    assert len(dm.datasets["train"]) == 40  # val_size/test_size take nothing from train: both splits exist
    for split, expected in (("validation", rows[40:50]), ("test", rows[50:])):
        batch = next(iter(dm.val_dataloader() if split == "validation" else dm.test_dataloader()))
        texts = [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        assert len(texts) == 4 and set(texts) <= {r["text"] for r in expected}


def test_a_dataset_dict_without_validation_carves_it_from_train(data_cache, tokenizer):
    rows = labelled(50)
    own = DatasetDict({"train": Dataset.from_list(rows[:40]), "test": Dataset.from_list(rows[40:]),
                       "unsupervised": Dataset.from_list(rows[:5])})
    dm = ClassificationData(own, tokenizer=tokenizer, val_size=8, test_size=0.5)
    dm.setup()
    sizes = {name: len(data) for name, data in dm.datasets.items()}
    assert sizes == {"train": 32, "validation": 8, "test": 10}


def test_class_label_columns_give_label_names_in_their_order(data_cache, tokenizer):
    features = Features({"text": Value("string"), "label": ClassLabel(names=["positive", "negative"])})
    data = Dataset.from_dict({"text": [f"review {i}" for i in range(20)] + ["unlabelled"],
                              "label": [i % 2 for i in range(20)] + [-1]}, features=features)
    dm = ClassificationData(data, tokenizer=tokenizer, val_size=0, test_size=0, batch_size=32)
    assert dm.label_names == ["positive", "negative"]  # the ClassLabel order, not sorted
    dm.setup()
    assert len(dm.datasets["train"]) == 20  # -1 ("no label") is dropped like a missing label
    batch = next(iter(dm.train_dataloader()))
    for ids, label in zip(batch["input_ids"], batch["labels"].tolist()):
        number = int(tokenizer.decode(ids, skip_special_tokens=True).split()[-1])
        assert label == number % 2


def test_the_cache_is_keyed_by_the_fingerprint(data_cache, tokenizer, monkeypatch):
    def module(rows):
        return SFTData(Dataset.from_list(rows), tokenizer=tokenizer, val_size=0, test_size=0)

    rows = [{"prompt": f"say {i}", "response": f"word {i}"} for i in range(12)]
    module(rows).setup()
    assert len(list(data_cache.glob("*.pt"))) == 1
    module(rows[:-1] + [{"prompt": "say 11", "response": "changed"}]).setup()
    assert len(list(data_cache.glob("*.pt"))) == 2  # other contents, other fingerprint: tokenized again
    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: pytest.fail("tokenized although cached"))
    module(rows).setup()  # an equal Dataset built anew has the same fingerprint: read from the cache


@pytest.mark.parametrize(("argument", "message"), [
    (DatasetDict({"dev": Dataset.from_list([{"text": "t", "label": "a"}])}),
     r"has the splits dev but no 'train' split"),
    ([{"text": "t", "label": "a"}], r"dataset must be a catalog name, a file path, a Hub dataset name, or a "
                                    r"datasets\.Dataset/DatasetDict, got list"),
])
def test_bad_dataset_objects(argument, message):
    with pytest.raises(DataConfigError, match=message):
        ClassificationData(argument)


def test_hub_options_only_with_a_hub_name():
    with pytest.raises(DataConfigError, match=r"apply to Hub datasets only, and 'trec6' is a catalog name"):
        ClassificationData("trec6", dataset_split="train")
    with pytest.raises(DataConfigError, match=r"apply to Hub dataset names only"):
        ClassificationData(Dataset.from_list(labelled(4)), dataset_config="default")


# --- Hub names ---------------------------------------------------------------------------------------


def online(monkeypatch) -> None:
    """Undo the offline switches of tests/conftest.py and tests/data/conftest.py for one test."""
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize("variable", ["HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_a_name_that_is_no_catalog_entry_or_file_fails_in_one_sentence(monkeypatch, variable):
    online(monkeypatch)
    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", lambda *a, **k: pytest.fail("asked the Hub offline"))
    with pytest.raises(DataConfigError) as error:
        SFTData("someone/chat-data")
    assert str(error.value).startswith(
        "Unknown dataset 'someone/chat-data': it is neither a catalog name (trec6, ") and (
        "nor an existing file, and the Hugging Face Hub is offline here (HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is "
        "set); pick a catalog name, pass a path to a .jsonl/.json/.csv/.parquet file, or name a Hub dataset"
    ) in str(error.value)


def test_a_missing_data_file_is_not_looked_up_on_the_hub(monkeypatch):
    online(monkeypatch)
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(DataConfigError, match=r"Unknown dataset 'data/train\.jsonl': .* nor an existing file; pick"):
        SFTData("data/train.jsonl")


def test_online_an_unknown_hub_name_fails_when_the_module_is_built(monkeypatch):
    from huggingface_hub.utils import RepositoryNotFoundError

    def not_found(self, name, **kwargs):
        raise RepositoryNotFoundError(f"404 {name}", response=SimpleNamespace(headers={}, request=None))

    online(monkeypatch)
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", not_found)
    with pytest.raises(DataConfigError, match=r"Unknown dataset 'trec7': .*and the Hugging Face Hub has no dataset "
                                              r"of that name"):
        ClassificationData("trec7")


@pytest.fixture
def fake_hub(monkeypatch):
    """A reachable Hub that has every dataset: `load_dataset` returns what the test put in `served`."""
    calls, served = [], {}

    def load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        return served["value"] if split is None else served["value"][split.split("[")[0]]

    online(monkeypatch)
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", lambda self, name, **kwargs: SimpleNamespace(id=name))
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls, served


def test_a_hub_name_is_loaded_with_its_config_and_split(data_cache, tokenizer, fake_hub):
    calls, served = fake_hub
    rows = [{"prompt": f"say {i}", "response": f"word {i}"} for i in range(30)]
    served["value"] = DatasetDict({"train": Dataset.from_list(rows[:20]), "test": Dataset.from_list(rows[20:])})
    whole = SFTData("someone/pairs", tokenizer=tokenizer, dataset_config="default", val_size=5)
    whole.setup()
    assert calls == [("someone/pairs", "default", None)]
    assert {name: len(data) for name, data in whole.datasets.items()} == {"train": 15, "validation": 5, "test": 10}
    assert whole.dataset == "someone/pairs"
    one_split = SFTData("someone/pairs", tokenizer=tokenizer, dataset_split="train[:20]", val_size=0, test_size=4)
    one_split.setup()
    assert calls[-1] == ("someone/pairs", None, "train[:20]")
    assert {name: len(data) for name, data in one_split.datasets.items()} == {"train": 16, "validation": 0, "test": 4}


def test_a_hub_load_failure_is_one_sentence(data_cache, tokenizer, monkeypatch, fake_hub):
    def missing_config(name, config=None, split=None, **kwargs):
        raise ValueError("Config name is missing.\nPlease pick one among the available configs: ['sst2', 'cola']")

    monkeypatch.setattr(datasets, "load_dataset", missing_config)
    with pytest.raises(DataConfigError, match=r"^Cannot load Hub dataset 'nyu-mll/glue': Config name is missing\.; "
                                              r"check the name, dataset_config and dataset_split\.$"):
        ClassificationData("nyu-mll/glue", tokenizer=tokenizer).setup()


# --- conversations (messages) -------------------------------------------------------------------------


def chat(i: int) -> list[dict]:
    return [{"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": f"Name a colour ({i})."},
            {"role": "assistant", "content": f"Blue{i}"},
            {"role": "user", "content": "And another?"},
            {"role": "assistant", "content": "Red"}]


def runs(labels: list[int]) -> list[list[int]]:
    """The labelled tokens as contiguous runs."""
    found, current = [], []
    for token in labels + [-100]:
        if token != -100:
            current.append(token)
        elif current:
            found, current = found + [current], []
    return found


def test_messages_are_written_by_the_chat_template_and_only_replies_are_learned(data_cache, tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat(i), "source": "x"} for i in range(12)]
                       + [{"messages": chat(99)[:2], "source": "no reply"}])
    dm = SFTData(path, tokenizer=tokenizer, messages_column="messages", val_size=0, test_size=0, batch_size=12)
    dm.setup()
    assert len(dm.datasets["train"]) == 12  # the conversation without an assistant reply teaches nothing: dropped
    batch = next(iter(dm.train_dataloader()))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        ids = ids[mask.bool()].tolist()
        number = int(tokenizer.decode(ids).split("(")[1].split(")")[0])
        # the input is the whole conversation exactly as the chat template writes it
        assert ids == tokenizer(tokenizer.apply_chat_template(chat(number), tokenize=False),
                                add_special_tokens=False)["input_ids"]
        # exactly the two replies, each with its end-of-turn token, are learned; padding is not
        assert [tokenizer.decode(run) for run in runs(labels.tolist())] == [f"Blue{number}<|im_end|>", "Red<|im_end|>"]
        assert (labels[len(ids):] == -100).all()
        learned = (labels != -100).nonzero().flatten().tolist()
        assert labels[learned].tolist() == [ids[k] for k in learned]


def test_packed_messages_learn_the_same_tokens(data_cache, tokenizer):
    data = Dataset.from_list([{"messages": chat(i)} for i in range(6)])
    padded = SFTData(data, tokenizer=tokenizer, messages_column="messages", val_size=0, test_size=0, batch_size=6,
                     bucket_by_length=False)
    packed = SFTData(data, tokenizer=tokenizer, messages_column="messages", val_size=0, test_size=0, batch_size=6,
                     bucket_by_length=False, packing=True)
    for dm in (padded, packed):
        dm.setup()
    rows = next(iter(padded.train_dataloader()))["labels"]
    row = next(iter(packed.train_dataloader()))["labels"][0]
    assert runs(row.tolist()) == [run for labels in rows for run in runs(labels.tolist())]


def test_a_long_conversation_keeps_part_of_a_reply(data_cache, tokenizer):
    long_question = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "Short answer"}]
    dm = SFTData(Dataset.from_list([{"messages": long_question}] * 4), tokenizer=tokenizer,
                 messages_column="messages", max_length=32, val_size=0, test_size=0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] == 32
    assert tokenizer.decode(runs(batch["labels"][0].tolist())[0]) == "Short answer<|im_end|>"


def test_bad_messages_fail_in_one_sentence(data_cache, tokenizer):
    def setup(rows, tok=tokenizer):
        SFTData(Dataset.from_list(rows), tokenizer=tok, messages_column="messages", val_size=0, test_size=0).setup()

    with pytest.raises(DataConfigError, match=r"no column 'messages' \(it has prompt\); set messages_column"):
        setup([{"prompt": "p"}])
    with pytest.raises(DataConfigError, match=r"messages of example 0 of 'datasets.Dataset' must be a non-empty list"):
        setup([{"messages": "hello"}])
    with pytest.raises(DataConfigError, match=r"Message 1 of example 0 .* must be an object with string 'role' and "
                                              r"'content'"):
        setup([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}])
    no_template = copy.deepcopy(tokenizer)
    no_template.chat_template = None
    with pytest.raises(DataConfigError, match=r"needs a tokenizer with a chat template"):
        setup([{"messages": chat(0)}], no_template)
