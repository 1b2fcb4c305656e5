"""PossibilityData: contexts grouped with their distinct responses, possibility prompts, matching and mismatched rows."""

from __future__ import annotations

import json
import re

import pytest

from lightning_peft.constants import IGNORE_INDEX
from lightning_peft.data import DataConfigError, PossibilityData
from lightning_peft.data.content_words import content_words, lead_token_mask
from lightning_peft.data.possibility_batches import mismatched_pairs

TEMPLATE = "Context: {context}\nPossibility #{possibility}:"


def _write(path, rows):
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    return str(path)


def _dialog(path):
    rows = [("hi.", "hello there."), ("hi.", "Hello there."), ("hi.", "go away, stranger."), ("hi.", "who are you?"),
            ("bye.", "see you tomorrow."), ("bye.", "farewell, old friend."), ("bye.", "wait!"),
            ("what?", "nothing.")]  # "what?" has one response: dropped
    return _write(path, rows)


def _data(path, tokenizer, **kwargs):
    settings = dict(tokenizer=tokenizer, prompt_template=TEMPLATE, chat_template=False, min_responses=2, val_size=0,
                    test_size=0, batch_size=2, max_negatives=2)
    dm = PossibilityData(path, **{**settings, **kwargs})
    dm.setup("fit")
    return dm


def test_contexts_are_grouped_with_distinct_responses_and_distinct_possibility_numbers(tmp_path, tokenizer, data_cache):
    dm = _data(_dialog(tmp_path / "d.jsonl"), tokenizer)
    records = dm.prepare_records(list(dm.read_data().records))
    by_context = {r["context"]: r for r in records}
    assert set(by_context) == {"hi.", "bye."}  # "what?" has a single response
    assert sorted(by_context["hi."]["responses"]) == ["go away, stranger.", "hello there.", "who are you?"]
    for record in records:
        numbers = record["possibilities"]
        assert len(set(numbers)) == len(numbers) == len(record["responses"]) and set(numbers) <= set(range(1, 10))
    assert len(dm.datasets["train"]) == 2  # one example per context


def test_batch_has_matching_rows_then_capped_mismatched_rows(tmp_path, tokenizer, data_cache):
    dm = _data(_dialog(tmp_path / "d.jsonl"), tokenizer, batch_size=1)
    batch = next(iter(dm.train_dataloader()))
    rows = [tokenizer.decode(ids[mask == 1]) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert len(rows) == 3 + 2  # 3 responses of the context, max_negatives=2 mismatched rows
    prompt_of = [re.search(r"Possibility #(\d):", row).group(1) for row in rows]
    assert len(set(prompt_of[:3])) == 3
    for row in range(3):  # matching: the labels are the response and EOS, nothing of the prompt
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(labelled).endswith(tokenizer.eos_token)
        assert "Possibility" not in tokenizer.decode(labelled)
        assert (batch["unlikelihood_labels"][row] == IGNORE_INDEX).all()
    for row in (3, 4):  # mismatched: no MLE label; the pushed tokens belong to another possibility's response
        assert (batch["labels"][row] == IGNORE_INDEX).all()
        assert (batch["unlikelihood_labels"][row] != IGNORE_INDEX).any()
        response = rows[row].split(":", 2)[-1]
        assert response not in [rows[k].split(":", 2)[-1] for k in range(3) if prompt_of[k] == prompt_of[row]]


def test_only_content_word_lead_tokens_are_pushed_down(tokenizer):
    text = "I think the weather is lovely today"
    assert [w for _, w in content_words(text)] == ["think", "weather", "lovely", "today"]
    (mask,) = lead_token_mask([text], tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pushed = [tokenizer.decode([t]).strip() for t, m in zip(ids, mask) if m]
    assert pushed == ["think", "weather", "lovely", "today"]


def test_mismatched_pairs_are_balanced_and_capped():
    assert mismatched_pairs(3, 10) == [(0, 1), (1, 2), (2, 0), (0, 2), (1, 0), (2, 1)]
    assert mismatched_pairs(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 0)]  # every prompt once before any twice
    assert mismatched_pairs(3, 0) == []


def test_without_negatives_the_rows_are_plain_sft_rows(tmp_path, tokenizer, data_cache):
    dm = _data(_dialog(tmp_path / "d.jsonl"), tokenizer, batch_size=2, max_negatives=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 3 + 3
    assert (batch["unlikelihood_labels"] == IGNORE_INDEX).all()
    assert ((batch["labels"] != IGNORE_INDEX).sum(1) > 0).all()


def test_chat_template_wraps_the_filled_prompt_as_the_user_turn(tmp_path, tokenizer, data_cache):
    dm = _data(_dialog(tmp_path / "d.jsonl"), tokenizer, chat_template=True, batch_size=1, max_negatives=0)
    ids = next(iter(dm.train_dataloader()))["input_ids"][0]
    text = tokenizer.decode(ids)
    assert "<|im_start|>user\nContext: " in text and "<|im_start|>assistant\n" in text


@pytest.mark.parametrize("kwargs, words", [
    (dict(prompt_template="Context: {context}\nReply:"), "no {possibility} slot"),
    (dict(prompt_template="{context} #{possibility} {speaker}"), "exactly {context} and {possibility}"),
    (dict(min_responses=1), "min_responses must be an integer >= 2"),
    (dict(responses_per_context=10), "from 2 to 9"),
    (dict(max_negatives=-1), "max_negatives must be an integer >= 0"),
])
def test_bad_settings_get_one_sentence_before_any_data_is_read(kwargs, words):
    with pytest.raises(DataConfigError, match=re.escape(words)):
        PossibilityData("movie_dialog", **kwargs)


def test_data_without_repeated_contexts_is_refused_at_setup(tmp_path, tokenizer, data_cache):
    path = _write(tmp_path / "single.jsonl", [("a?", "b."), ("c?", "d."), ("c?", "D.")])  # "d." twice: one response
    with pytest.raises(DataConfigError, match="No context .* has 2 or more distinct responses .the most is 1."):
        _data(path, tokenizer)
