"""Dictionary translation conjugates: FreeDict entries parsed, tables invertible, labels and coverage checked.

The dictionaries here are tiny dictd files written by the tests in FreeDict's two layouts; the real
English-German one is a Debian package (`dict-freedict-eng-deu`) that CI does not install.
"""

import gzip

import pytest

from lightning_peft.evaluation import translate as T
from lightning_peft.evaluation.conjugate import Identity, Translation, get_transform, icl_suite, is_in_context_answer

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(number: int) -> str:
    digits = ""
    while True:
        digits, number = B64[number % 64] + digits, number // 64
        if not number:
            return digits


def write_freedict(directory, code: str, entries: dict[str, list[str]]) -> None:
    """A dictd dictionary: `headword -> entry texts`, the index in base-64 offsets, the data gzipped."""
    data, index = b"", []
    for headword, texts in entries.items():
        for text in texts:
            raw = text.encode()
            index.append(f"{headword}\t{_b64(len(data))}\t{_b64(len(raw))}")
            data += raw
    (directory / f"freedict-eng-{code}.index").write_text("\n".join(index) + "\n", encoding="utf-8")
    (directory / f"freedict-eng-{code}.dict.dz").write_bytes(gzip.compress(data))


GERMAN = {  # one sense per line, grammar in brackets (the eng-deu layout)
    "repeat": ["repeat /rɪˈpiːt/\nkurze wiederholte Sequenz\n", "repeat /rɪˈpiːt/ <v>\nwiederholen <v>\n"],
    "the": ["the /ðə/\ndas <art>\n         Note: des; dem\n"],
    "input": ["input /ˈɪnpʊt/\nEingabe <fem>, Input <masc> [comp.]\n      \"real-time input\"  - Echtzeiteingabe\n"],
    "output": ["output /ˈaʊtpʊt/\nAusgabe <fem> [comp.]\n"],
    "what": ["what /wɒt/\nwas, wie <pron>\n"],
    "is": ["is /ɪz/\nbefindet sich\n see: {be}\n"],  # only a multi-word translation: stays English
    "door": ["door /dɔː/\nTür <fem>, Türe <fem>\n"],
    "in": ["inch /ˈɪntʃ/ (in /ɪn/)\nZoll <neut>\n", "in /ɪn/\nin <prep>\n"],
}


@pytest.fixture
def german_dir(tmp_path):
    write_freedict(tmp_path, "deu", GERMAN)
    return tmp_path


def test_entry_translations_reads_both_freedict_layouts():
    assert T.entry_translations("book /buk/\n1. livre\n2. commander, demander, retenir\n") == [
        "livre", "commander", "demander", "retenir"]
    assert T.entry_translations(GERMAN["input"][0]) == ["Eingabe", "Input"]  # the example line is skipped
    assert T.entry_translations(GERMAN["is"][0]) == []  # "befindet sich" cannot be inverted word by word


def test_read_freedict_puts_entries_headed_by_the_word_first(german_dir):
    found = T.read_freedict(german_dir / "freedict-eng-deu.index", german_dir / "freedict-eng-deu.dict.dz",
                            ["in", "repeat", "is", "cat"])
    assert found["in"] == ["in", "Zoll"]  # "inch (in)" comes after the entry for "in" itself
    assert found["repeat"] == ["wiederholen"] and "is" not in found and "cat" not in found


def test_word_table_is_injective_and_never_translates_onto_a_word_left_in_english():
    table = T.word_table(["what", "was", "who"], {"what": ["was", "wie"], "who": ["wie", "wer"]})
    # "was" has no translation, so it stays "was": "what" may not become "was" too
    assert table == {"what": "wie", "who": "wer"}
    assert T.word_table(["a", "b"], {"a": ["x"], "b": ["x"]}) == {"a": "x"}  # b keeps its English spelling


def test_dictionary_translation_round_trips_and_reports_coverage(german_dir):
    texts = ("Repeat the input.", "what is in the door", "Input Output")
    german = T.DictionaryTranslation("german", german_dir, texts=texts)
    assert german.forward("Repeat the input.\nInput: what is in the door\nOutput:") == (
        "wiederholen das Eingabe.\nEingabe: was is in das Tür\nAusgabe:")
    assert german.inverse(german.forward("what is in the door")) == "what is in the door"
    assert german.inverse("WAS IS IN DAS TÜR") == "WHAT IS IN THE DOOR"  # the capitalize task's answers
    assert german.coverage == T.Coverage(translated=7, words=8, untranslated=("is",))
    assert german.coverage.share == pytest.approx(7 / 8)


def test_translated_prompts_score_like_the_original(german_dir):
    german = T.DictionaryTranslation("german", german_dir)
    repeat = icl_suite(1)[0]
    assert is_in_context_answer(" " + german.forward(repeat.query), repeat, german)
    assert not is_in_context_answer(" 19", repeat, german)


def test_suite_texts_hold_every_word_of_the_suite():
    words = set(T.words_of(T.SUITE_TEXTS))
    rendered = [p.render(Identity()) for p in icl_suite(40, seed=1)]
    assert set(T.words_of(rendered)) <= words and {"input", "output"} <= words


def test_refuses_untranslated_or_merged_labels_and_missing_dictionaries(german_dir, tmp_path_factory):
    no_output = tmp_path_factory.mktemp("no_output")
    write_freedict(no_output, "deu", {k: v for k, v in GERMAN.items() if k != "output"})
    with pytest.raises(T.TranslationError, match="no translation of the label word 'Output'"):
        T.DictionaryTranslation("german", no_output)
    with pytest.raises(T.TranslationError, match="two label words"):
        T.check_labels({"input": "Feld", "output": "feld"}, ("Input", "Output"), "german")
    with pytest.raises(T.TranslationError, match=r"apt-get install dict-freedict-eng-fra"):
        T.DictionaryTranslation("french", german_dir)
    with pytest.raises(T.TranslationError, match="pick one of german"):
        T.DictionaryTranslation("klingon", german_dir)


def test_german_is_a_transform_by_name(german_dir, monkeypatch):
    monkeypatch.setattr(T, "FREEDICT_DIR", german_dir)
    german = get_transform("german")
    assert isinstance(german, T.DictionaryTranslation) and german.name == "german"
    assert german.forward("the door") == "das Tür"
    from lightning_peft.callbacks import ConjugatePromptEval

    callback = ConjugatePromptEval(transforms=["german"], num_prompts=2, tokenizer="tiny-llama")
    assert [t.name for t in callback.transforms] == ["original", "german"]


def test_word_tables_handle_letters_outside_ascii():
    fr = Translation("fr", table={"door": "porte", "summer": "été"})
    assert fr.forward("the summer door") == "the été porte"
    assert fr.inverse("the ÉTÉ porte") == "the SUMMER door"


def test_coverage_report_counts_the_rendered_suite(german_dir):
    (line,) = T.coverage_report(german_dir, num_prompts=2)
    translated = {"repeat", "the", "input", "output", "what", "door", "in"}  # GERMAN's headwords but "is"
    words = [w.lower() for p in icl_suite(2) for text in (p.render(Identity()), p.answer) for w in text.split()]
    words = [w.strip(".?:") for w in words if w.strip(".?:").isalpha()]
    hits = sum(w in translated for w in words)
    assert line.startswith(f"german (eng-deu): 7/45 distinct words, {hits}/{len(words)} occurrences")
    assert "labels missing: none" in line and ", is," in line
