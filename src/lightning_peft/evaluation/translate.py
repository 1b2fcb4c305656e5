"""Translation conjugates from an offline bilingual dictionary (FreeDict, Debian's `dict-freedict-eng-*`).

Kotha, Springer, Raghunathan, "Understanding Catastrophic Forgetting in Language Models via Implicit
Inference", ICLR 2024 (arXiv:2309.10105): the strongest conjugates are translations, the prompt and
its label words in another language, the output translated back. Here the translation is word by
word through a FreeDict English-X dictionary (dictd format, installed as a Debian package, read
offline): each suite word gets its first single-word translation that no other word took, so the
table inverts exactly; words the dictionary cannot translate stay English and are reported.
"""

from __future__ import annotations

import gzip
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..tasks import TaskConfigError
from .conjugate import DEMO_INPUTS, ICL_TASKS, NUMBER_WORDS, Translation

FREEDICT_DIR = Path("/usr/share/dictd")
LANGUAGES = {"german": ("deu", "German"), "french": ("fra", "French"), "spanish": ("spa", "Spanish"),
             "dutch": ("nld", "Dutch"), "italian": ("ita", "Italian")}
LABEL_WORDS = ("Input", "Output")  # the suite's field labels: `Input: ...` / `Output: ...`
SUITE_TEXTS = (*(instruction for instruction, _ in ICL_TASKS.values()), *DEMO_INPUTS, "what is", *NUMBER_WORDS,
               *LABEL_WORDS)

_WORD = re.compile(r"[^\W\d_]+")
_BRACKETED = re.compile(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}")
_SKIPPED_LINE = re.compile(r'^("|Note:|see:|Synonyms?:)')
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
log = logging.getLogger(__name__)


class TranslationError(TaskConfigError):
    """A translation conjugate that cannot be built (one sentence: what is wrong and how to fix it)."""


def words_of(texts: tuple[str, ...] | list[str]) -> list[str]:
    """Distinct lowercase words of `texts`, in order of first appearance."""
    return list(dict.fromkeys(w.lower() for text in texts for w in _WORD.findall(text)))


def _number(b64: str) -> int:
    """A dictd index offset or length: base-64 digits, most significant first."""
    value = 0
    for digit in b64:
        value = value * 64 + _B64.index(digit)
    return value


def entry_translations(entry: str) -> list[str]:
    """Single-word translations in one dictd entry, in order (the first line is the headword).

    Handles both FreeDict layouts: numbered senses (`1. livre` / `2. commander, demander`) and one
    sense per line with grammar in brackets (`Tür <fem>, Türe <fem>`); examples, notes and cross
    references are skipped, and multi-word translations ("befindet sich") are dropped because a word
    table could not invert them.
    """
    found = []
    for line in entry.split("\n")[1:]:
        line = line.strip()
        if not line or _SKIPPED_LINE.match(line):
            continue
        line = _BRACKETED.sub("", re.sub(r"^\d+\.\s*", "", line))
        found += [c.strip() for c in re.split(r"[,;|]", line) if _WORD.fullmatch(c.strip())]
    return list(dict.fromkeys(found))


def _headword_rank(entry: str, word: str) -> int:
    """0 for an entry headed by the word itself, 1 by it in another case ("She"), 2 by another word ("inch (in)")."""
    head = entry.split("\n", 1)[0].split(" /", 1)[0].strip()
    return 0 if head == word else 1 if head.lower() == word else 2


def read_freedict(index: Path, data: Path, words: list[str]) -> dict[str, list[str]]:
    """Candidate translations of each of `words` (lowercase) from a dictd index and its dictzip data file,
    entries headed by the word itself first (`in` before `inch (in)`), otherwise in dictionary order."""
    wanted, spans = set(words), {}
    with open(index, encoding="utf-8") as lines:
        for line in lines:
            headword, offset, length = line.rstrip("\n").split("\t")
            if headword.lower() in wanted:
                spans.setdefault(headword.lower(), []).append((_number(offset), _number(length)))
    text = gzip.open(data).read()  # dictzip is gzip with a random-access table; one sequential read is enough
    candidates = {}
    for word in words:
        entries = [text[start: start + size].decode("utf-8") for start, size in spans.get(word, [])]
        entries.sort(key=lambda entry: _headword_rank(entry, word))
        candidates[word] = list(dict.fromkeys(c for entry in entries for c in entry_translations(entry)))
    return {word: found for word, found in candidates.items() if found}


def word_table(words: list[str], candidates: dict[str, list[str]]) -> dict[str, str]:
    """An injective table: each word gets its first candidate that no other word maps to.

    A word left untranslated keeps its own spelling, so no other word may translate onto it either
    (the inverse would turn it into the wrong English word); the assignment is redone until that holds.
    """
    kept: set[str] = {w for w in words if not candidates.get(w)}
    while True:
        table, taken = {}, set(kept)
        for word in words:
            choice = next((c for c in candidates.get(word, []) if c.lower() not in taken), None)
            if choice is not None:
                table[word] = choice
                taken.add(choice.lower())
        clashes = {w for w in words if w not in table and w not in kept}
        if not clashes:
            return table
        kept |= clashes


def check_labels(table: dict[str, str], labels: tuple[str, ...], name: str) -> None:
    """Refuse a table that leaves a label word in English or gives two labels one translation."""
    for label in labels:
        if label.lower() not in table:
            raise TranslationError(f"The {name!r} conjugate has no translation of the label word {label!r}, so its "
                                   "prompts would keep English labels; pick another language or add the word to its table.")
    targets = [table[label.lower()].lower() for label in labels]
    if len(set(targets)) < len(targets):
        raise TranslationError(f"The {name!r} conjugate translates two label words of {labels} to the same word, so its "
                               "outputs could not be told apart; give each label its own translation in the table.")


@dataclass(frozen=True)
class Coverage:
    """How much of a text a word table translates, counted over its distinct (lowercase) words."""

    translated: int
    words: int
    untranslated: tuple[str, ...]

    @property
    def share(self) -> float:
        return self.translated / self.words if self.words else 1.0


def coverage(table: dict[str, str], texts: tuple[str, ...] | list[str]) -> Coverage:
    words = words_of(texts)
    missing = tuple(w for w in words if w not in table)
    return Coverage(len(words) - len(missing), len(words), missing)


class DictionaryTranslation(Translation):
    """A `Translation` whose word table is built from a FreeDict English-X dictionary for the suite's words.

    Example::

        german = DictionaryTranslation("german")            # needs `apt-get install dict-freedict-eng-deu`
        german.forward("Repeat the input.")                  # word by word, through the dictionary
        german.coverage.share                                 # share of the suite's distinct words translated
    """

    def __init__(self, language: str, directory: Path | str | None = None, texts: tuple[str, ...] = SUITE_TEXTS,
                 labels: tuple[str, ...] = LABEL_WORDS) -> None:
        directory = FREEDICT_DIR if directory is None else directory  # looked up now: tests point it elsewhere
        if language not in LANGUAGES:
            raise TranslationError(f"No dictionary translation into {language!r}; pick one of {', '.join(LANGUAGES)}.")
        code, english_name = LANGUAGES[language]
        index, data = Path(directory) / f"freedict-eng-{code}.index", Path(directory) / f"freedict-eng-{code}.dict.dz"
        if not (index.is_file() and data.is_file()):
            raise TranslationError(f"The {language!r} conjugate needs FreeDict's English-{english_name} dictionary, "
                                   f"which is not in {directory}; install it with `apt-get install dict-freedict-eng-{code}`.")
        words = words_of(texts)
        table = word_table(words, read_freedict(index, data, words))
        check_labels(table, labels, language)
        super().__init__(language, table=table)
        self.table, self.coverage = table, coverage(table, texts)
        if self.coverage.untranslated:
            log.warning("%s conjugate: FreeDict eng-%s translates %d of the suite's %d words; left in English: %s.",
                        language, code, self.coverage.translated, self.coverage.words, ", ".join(self.coverage.untranslated))


def coverage_report(directory: Path | str | None = None, num_prompts: int = 20) -> list[str]:
    """One line per FreeDict dictionary found in `directory`: how much of the suite it translates, in distinct
    words and in word occurrences of `num_prompts` rendered suite prompts plus their answers, and its missing labels."""
    from .conjugate import Identity, icl_suite

    directory = Path(FREEDICT_DIR if directory is None else directory)
    suite = icl_suite(num_prompts)
    occurrences = [w.lower() for p in suite for text in (p.render(Identity()), p.answer) for w in _WORD.findall(text)]
    lines, words = [], words_of(SUITE_TEXTS)
    for language, (code, _) in LANGUAGES.items():
        index, data = directory / f"freedict-eng-{code}.index", directory / f"freedict-eng-{code}.dict.dz"
        if not (index.is_file() and data.is_file()):
            continue
        table = word_table(words, read_freedict(index, data, words))
        found, hits = coverage(table, SUITE_TEXTS), sum(w in table for w in occurrences)
        missing = [label for label in LABEL_WORDS if label.lower() not in table]
        lines.append(f"{language} (eng-{code}): {found.translated}/{found.words} distinct words, {hits}/{len(occurrences)} "
                     f"occurrences ({hits / len(occurrences):.1%}); labels missing: {', '.join(missing) or 'none'}; "
                     f"left in English: {', '.join(found.untranslated) or 'none'}")
    return lines


if __name__ == "__main__":  # python -m lightning_peft.evaluation.translate [DICTD_DIRECTORY]
    import sys

    print("\n".join(coverage_report(sys.argv[1] if len(sys.argv) > 1 else None) or ["no FreeDict dictionary found"]))
