"""Edit-span targets (Kaneko & Okazaki 2023): extraction, application, serialisation, decoding model output."""

from __future__ import annotations

import random

import pytest

from lightning_peft.data import DataConfigError, load_records
from lightning_peft.data.edits import Edit, EditError, apply, check, decode, edit_records, extract, parse, serialise
from lightning_peft.data.noise import Noise

SENTENCES = [r["response"] for r in load_records("dialog_corrections")[:300]]


def _noisy_pairs(count: int, noise: Noise = Noise(typo=0.3, drop=0.15, swap=0.15)) -> list[tuple[str, str]]:
    return [(noise(clean, seed=3, index=k), clean) for k, clean in enumerate(SENTENCES[:count])]


def test_applying_the_extracted_edits_gives_the_target_on_many_noisy_pairs():
    pairs = _noisy_pairs(300)
    assert sum(source != target for source, target in pairs) > 200  # the noise really changes most sentences
    for source, target in pairs + [(t, s) for s, t in pairs]:  # and the reverse direction
        assert apply(source, extract(source, target)) == " ".join(target.split()), (source, target)


def test_serialised_edits_parse_back_to_the_same_edits():
    for source, target in _noisy_pairs(300):
        edits = extract(source, target)
        assert parse(serialise(edits)) == (edits, 0)
    tricky = [Edit(0, 1, "a|b"), Edit(2, 2, "back\\slash | pipe"), Edit(3, 5, "")]
    assert parse(serialise(tricky)) == (tricky, 0)
    assert serialise([]) == "none" and parse("none") == ([], 0)


def test_edit_targets_are_short_and_readable():
    source, target = "i has went to the the store yesterday", "i have gone to the store yesterday"
    assert serialise(extract(source, target)) == "1 3 have gone|4 5 "
    assert apply(source, [Edit(8, 8, "again")]) == source + " again"  # an insertion at the end


def test_malformed_model_output_is_skipped_and_counted_never_raised():
    source = "one two three four five"
    decoded = decode(source, "0 1 ONE|garbage|9 12 far|3 2 backwards|1 3 TWO|2 3 overlaps|x y z|4 5 |")
    assert decoded.text == "ONE TWO four"
    assert (decoded.applied, decoded.malformed, decoded.out_of_range, decoded.overlapping) == (3, 2, 2, 1)
    assert decoded.skipped == 5
    assert decode(source, "none").text == source and decode(source, "").text == source
    for junk in ["|||", "\\", "0", "-1 2 x", "²  3 x", "1 1 a|1 1 b"]:
        decode(source, junk)  # never raises
    assert decode(source, "1 1 a|1 1 b").overlapping == 1


def test_noise_is_deterministic_per_seed_and_index():
    noise = Noise()
    first = [noise(s, seed=0, index=k) for k, s in enumerate(SENTENCES[:100])]
    assert first == [noise(s, seed=0, index=k) for k, s in enumerate(SENTENCES[:100])]
    assert first != [noise(s, seed=1, index=k) for k, s in enumerate(SENTENCES[:100])]
    # one sentence's noise does not depend on the others
    assert noise(SENTENCES[7], seed=0, index=7) == first[7]
    assert Noise(typo=0, drop=0, swap=0)(SENTENCES[0], seed=0, index=0) == " ".join(SENTENCES[0].split())
    with pytest.raises(ValueError, match="probability"):
        Noise(typo=1.5)


def test_catalog_sources_are_the_targets_with_seeded_noise():
    records = load_records("dialog_corrections")
    assert len(records) == 10_000 and records == load_records("dialog_corrections")
    changed = [r for r in records if r["prompt"] != r["response"]]
    assert 0.5 < len(changed) / len(records) < 0.8
    word_ratio = sum(len(r["prompt"].split()) for r in records) / sum(len(r["response"].split()) for r in records)
    assert 0.95 < word_ratio < 1.0  # words are dropped, never added


@pytest.mark.parametrize("edits, message", [
    ([Edit(0, 2, "x"), Edit(1, 3, "y")], "overlap"),
    ([Edit(2, 2, "x"), Edit(2, 2, "y")], "overlap"),
    ([Edit(0, 3, "x"), Edit(1, 1, "y")], "overlap"),
    ([Edit(4, 6, "x")], "falls outside the source's 5 words"),
    ([Edit(3, 2, "x")], "falls outside"),
])
def test_bad_user_edits_are_refused_in_one_sentence(edits, message):
    with pytest.raises(EditError, match=message) as error:
        check("one two three four five", edits)
    assert str(error.value).count(". ") == 0 and str(error.value).endswith(".")


def test_an_empty_source_is_refused():
    with pytest.raises(EditError, match="source is empty"):
        extract("  ", "something")
    with pytest.raises(EditError, match="source of example 1 of 'mine' is empty"):
        edit_records([{"p": "a b", "r": "a c"}, {"p": "", "r": "x"}], "p", "r", "from_rewrite", "mine")


def test_given_edit_targets_are_checked_against_their_source():
    good = edit_records([{"p": "a b c", "r": "1 2 B"}], "p", "r", "given", "mine")
    assert good == [{"p": "a b c", "r": "1 2 B"}]
    with pytest.raises(EditError, match="example 0 of 'mine' overlap"):
        edit_records([{"p": "a b c", "r": "0 2 x|1 3 y"}], "p", "r", "given", "mine")
    with pytest.raises(EditError, match="do not all parse"):
        edit_records([{"p": "a b c", "r": "1 2 B|oops"}], "p", "r", "given", "mine")


def test_random_edits_round_trip_through_apply_and_extract():
    rng = random.Random(0)
    for _ in range(200):
        source = " ".join(rng.choice("abcde") for _ in range(rng.randint(1, 12)))
        target = " ".join(rng.choice("abcdef") for _ in range(rng.randint(0, 12)))
        assert apply(source, extract(source, target)) == target


def test_sft_data_learns_the_serialised_edits_instead_of_the_rewrite(tokenizer, data_cache):
    from lightning_peft.data import SFTData

    data = SFTData("dialog_corrections", tokenizer=tokenizer, prompt_template="Fix: {prompt}\nEdits:",
                   edit_targets="from_rewrite", max_train_examples=64, val_size=0, test_size=0)
    data.setup()
    records = load_records("dialog_corrections")
    targets = {serialise(extract(r["prompt"], r["response"])) for r in records}
    for k in range(len(data.datasets["train"])):
        example = data.datasets["train"][k]
        learned = tokenizer.decode(example["input_ids"][example["prompt_length"]:-1])
        assert learned in targets
    with pytest.raises(DataConfigError, match="edit_targets must be one of from_rewrite, given or null"):
        SFTData("dialog_corrections", edit_targets="yes")
