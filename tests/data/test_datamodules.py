from __future__ import annotations

import json

import pytest
import torch

from lightning_peft.data import ClassificationData, DataConfigError, Seq2SeqData, SFTData
from lightning_peft.data.sft import truncate_pair


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def qa_file(tmp_path):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    records = [{"question": " ".join(words[: 1 + i % 10]) + f" {i}", "answer": f"reply number {i}",
                "topic": "short" if i % 10 < 5 else "long"} for i in range(60)]
    return write_jsonl(tmp_path / "qa.jsonl", records)


def test_classification_batches_are_padded_right_with_masks(data_cache, tokenizer):
    dm = ClassificationData("trec6", tokenizer=tokenizer, template="Question: {text}\nAnswer type:", batch_size=8,
                            max_train_examples=64)
    dm.setup()
    assert dm.label_names == ["abbreviation", "description", "entity", "human", "location", "number"]
    assert len(dm.datasets["train"]) == 64 and len(dm.datasets["test"]) == 545
    for batch in dm.train_dataloader():
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.dtype == mask.dtype == batch["labels"].dtype == torch.long
        assert ids.shape == mask.shape and batch["labels"].shape == (ids.shape[0],)
        lengths = mask.sum(1)
        assert lengths.max() == ids.shape[1]  # padded to the longest in the batch, no further
        for row, length in enumerate(lengths.tolist()):
            assert mask[row, :length].all() and not mask[row, length:].any()  # right padding
            assert (ids[row, length:] == tokenizer.pad_token_id).all()
        assert tokenizer.decode(ids[0, : lengths[0]]).startswith("Question: ")
        assert batch["labels"].min() >= 0 and batch["labels"].max() < 6


def test_labels_index_label_names(data_cache, tokenizer):
    dm = ClassificationData("sms_spam", tokenizer=tokenizer, max_train_examples=32, max_length=16)
    dm.setup()
    data = dm.datasets["train"]
    from lightning_peft.data.catalog import load_records

    records = load_records("sms_spam")
    first = records[data.indices[0]]
    assert dm.label_names[data[0]["label"]] == first["label"]
    assert len(data[0]["input_ids"]) <= 16


def test_splits_are_deterministic_disjoint_and_cover_everything(data_cache, tokenizer):
    def splits(seed):
        dm = ClassificationData("trec6", tokenizer=tokenizer, val_size=0.2, test_size=500, split_seed=seed)
        dm.setup()
        return {name: data.indices for name, data in dm.datasets.items()}

    a, b, c = splits(1), splits(1), splits(2)
    assert a == b and a != c
    assert len(a["test"]) == 500 and len(a["validation"]) == round(0.2 * 5452)
    sets = [set(a[name]) for name in ("train", "validation", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(range(5452))


def test_order_seed_reshuffles_the_batches_of_the_same_split(data_cache, tokenizer):
    def run(**seeds):
        dm = ClassificationData("trec6", tokenizer=tokenizer, batch_size=8, max_train_examples=64, **seeds)
        dm.setup()
        # each batch as its examples' unpadded token ids (the first token alone is the same BOS for all)
        batches = [[tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
                   for batch in dm.train_dataloader()]
        return {name: data.indices for name, data in dm.datasets.items()}, batches

    (split, order), (same_split, same_order) = run(), run(order_seed=42)  # the default order is the split seed's
    other_split, other_order = run(order_seed=7)
    assert split == same_split == other_split and order == same_order
    assert other_order != order and sorted(sum(other_order, [])) == sorted(sum(order, []))  # same examples, reordered


def test_local_file_with_custom_columns_and_inferred_labels(data_cache, tokenizer, qa_file):
    dm = ClassificationData(qa_file, tokenizer=tokenizer, text_column="question", label_column="topic",
                            template="Q: {text} ({answer})", val_size=6, test_size=6, batch_size=4)
    dm.setup()
    assert dm.label_names == ["long", "short"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape[0] == 6
    assert "Q: " in tokenizer.decode(batch["input_ids"][0]) and "reply number" in tokenizer.decode(batch["input_ids"][0])


def test_sft_labels_mask_exactly_the_prompt_and_padding(data_cache, tokenizer, qa_file):
    dm = SFTData(qa_file, tokenizer=tokenizer, prompt_column="question", response_column="answer",
                 prompt_template="Q: {prompt}\nA:", batch_size=8, val_size=0, test_size=0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    for row in range(batch["input_ids"].shape[0]):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        text = tokenizer.decode(ids[mask.bool()])
        prompt_length = len(tokenizer(text.split("\nA:")[0] + "\nA:")["input_ids"])
        assert (labels[:prompt_length] == -100).all()
        response = ids[prompt_length:int(mask.sum())]
        assert labels[prompt_length:int(mask.sum())].tolist() == response.tolist()
        assert (labels[int(mask.sum()):] == -100).all()
        assert response[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(response[:-1]).strip().startswith("reply number")
    assert dm.val_dataloader() == []


def test_sft_chat_template_and_movie_dialog(data_cache, tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": f"hello {i}", "response": f"hi {i}"} for i in range(20)])
    dm = SFTData(path, tokenizer=tokenizer, chat_template=True, val_size=0, test_size=0, batch_size=20)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    row = batch["labels"][0]
    first_label = int((row != -100).nonzero()[0])
    prompt = tokenizer.decode(batch["input_ids"][0, :first_label])
    assert "<|im_start|>user\nhello" in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_truncation_keeps_response():
    assert truncate_pair(list(range(10)), [100, 101], 6) == ([6, 7, 8, 9], [100, 101])
    prompt, response = truncate_pair(list(range(10)), list(range(100, 120)), 8)
    assert prompt == [6, 7, 8, 9] and response == [100, 101, 102, 103]
    assert truncate_pair([1, 2], [3], 8) == ([1, 2], [3])


def test_seq2seq_on_classification_and_sft_entries(data_cache, tokenizer, qa_file):
    dm = Seq2SeqData("trec6", tokenizer=tokenizer, source_template="question: {text}", max_train_examples=16,
                     batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    targets = [tokenizer.decode([t for t in row if t != -100][:-1]) for row in batch["labels"].tolist()]
    assert set(targets) <= {"abbreviation", "description", "entity", "human", "location", "number"}
    for row in batch["labels"].tolist():  # -100 only as right padding after the EOS
        kept = [t for t in row if t != -100]
        assert row[: len(kept)] == kept and kept[-1] == tokenizer.eos_token_id
    sft = Seq2SeqData("movie_dialog", tokenizer=tokenizer)
    assert (sft.source_column, sft.target_column) == ("prompt", "response")
    local = Seq2SeqData(qa_file, tokenizer=tokenizer, source_column="question", target_column="answer",
                        max_target_length=3, val_size=0, test_size=0)
    local.setup()
    labels = next(iter(local.train_dataloader()))["labels"]
    assert labels.shape[1] == 3 and (labels[:, -1] == tokenizer.eos_token_id).all()


def test_second_setup_reads_the_cache_without_tokenizing(data_cache, tokenizer, qa_file, monkeypatch):
    first = SFTData(qa_file, tokenizer=tokenizer, val_size=0, test_size=0, prompt_column="question",
                    response_column="answer")
    first.setup()
    files = list(data_cache.glob("*.pt"))
    assert len(files) == 1 and not list(data_cache.glob("*.tmp"))

    calls = []
    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: calls.append(1))
    second = SFTData(qa_file, tokenizer=tokenizer, val_size=0, test_size=0, prompt_column="question",
                     response_column="answer")
    second.setup()
    assert calls == []
    assert second.datasets["train"][0] == first.datasets["train"][0]
    other = SFTData(qa_file, tokenizer=tokenizer, val_size=0, test_size=0, prompt_column="question",
                    response_column="answer", max_length=8)
    with pytest.raises(TypeError):  # a different max_length is a cache miss: it must tokenize (patched out)
        other.setup()


def test_cache_key_changes_when_the_file_changes(data_cache, tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t {i}", "label": "a" if i % 2 else "b"} for i in range(20)])
    ClassificationData(path, tokenizer=tokenizer, val_size=0, test_size=0).setup()
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"changed {i} x", "label": "a" if i % 2 else "b"} for i in range(21)])
    ClassificationData(path, tokenizer=tokenizer, val_size=0, test_size=0).setup()
    assert len(list(data_cache.glob("*.pt"))) == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dataset": "nope"}, r"Unknown dataset 'nope'.*trec6"),
    ({"dataset": "movie_dialog"}, r"is a sft dataset"),
    ({"batch_size": 0}, r"batch_size must be a positive integer"),
    ({"val_size": 1.5}, r"val_size=1.5 is not a fraction"),
    ({"label_names": ["a"]}, r"at least two distinct"),
    ({"max_train_examples": 0}, r"max_train_examples must be a positive integer"),
    ({"order_seed": -1}, r"order_seed must be a non-negative integer or null"),
])
def test_bad_construction_arguments(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        ClassificationData(**kwargs)


def test_setup_errors(data_cache, tokenizer, tmp_path, qa_file):
    with pytest.raises(DataConfigError, match="has no tokenizer; pass tokenizer="):
        ClassificationData("trec6").setup()
    with pytest.raises(DataConfigError, match=r"no column 'text' \(it has question, answer, topic\); set text_column"):
        ClassificationData(qa_file, tokenizer=tokenizer).setup()
    with pytest.raises(DataConfigError, match=r"no column 'prompt'.*set prompt_column"):
        SFTData(qa_file, tokenizer=tokenizer).setup()
    with pytest.raises(DataConfigError, match=r"labels \['long'\] that are not in label_names"):
        ClassificationData(qa_file, tokenizer=tokenizer, text_column="question", label_column="topic",
                           label_names=["short", "other"]).setup()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataConfigError, match="is empty"):
        ClassificationData(str(empty), tokenizer=tokenizer).setup()
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"prompt": "p", "response": " "}] * 3)
    with pytest.raises(DataConfigError, match="no usable examples"):
        SFTData(blank, tokenizer=tokenizer).setup()
    small = write_jsonl(tmp_path / "small.jsonl", [{"text": "t", "label": "ab"[i % 2]} for i in range(4)])
    with pytest.raises(DataConfigError, match="val_size=0.1 leaves the val split empty"):
        ClassificationData(small, tokenizer=tokenizer, test_size=0).setup()
    with pytest.raises(DataConfigError, match="leave nothing to train on"):
        ClassificationData(small, tokenizer=tokenizer, val_size=2, test_size=2).setup()
    with pytest.raises(DataConfigError, match="uses the field 'missing'"):
        ClassificationData(small, tokenizer=tokenizer, val_size=0, test_size=0, template="{text} {missing}").setup()


def test_a_long_text_is_cut_inside_the_text_keeping_the_template_cue(tmp_path):
    import json

    from lightning_peft import zoo

    tokenizer = zoo.load_tokenizer("smollm2-135m")
    path = tmp_path / "long.jsonl"
    long_text = " ".join(["word"] * 200)
    path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in [(long_text, "a"), ("short one", "b")] * 4))
    data = ClassificationData(str(path), tokenizer=tokenizer, template="Text: {text}\nAnswer type:", max_length=24,
                              val_size=0, test_size=0)
    data.setup("fit")
    cue = tokenizer("\nAnswer type:", add_special_tokens=False)["input_ids"]
    lengths = []
    for example in data.datasets["train"]:
        ids = list(example["input_ids"])
        lengths.append(len(ids))
        assert ids[-len(cue):] == cue, tokenizer.decode(ids)
        assert len(ids) <= 24
    assert max(lengths) >= 22  # the long texts fill the budget rather than being cut to nothing


def test_a_template_longer_than_max_length_is_refused(tmp_path):
    import json

    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"text": "x " * 50, "label": l}) + "\n" for l in "abab"))
    data = ClassificationData(str(path), tokenizer="smollm2-135m", template="A very long instruction " * 5 + "{text}",
                              max_length=8, val_size=0, test_size=0)
    with pytest.raises(DataConfigError, match=r"alone takes \d+ tokens, more than max_length=8; raise max_length"):
        data.setup("fit")
