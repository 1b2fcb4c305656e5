"""Token-labelled sentences: read CoNLL-style column files, check tags, order the tag set.

A record is `{"tokens": [...], "tags": [...]}` (one tag per token), as in a `.jsonl` file; a column
file gives the same records, plus the `line` its sentence starts on, so a bad tag is named by its
file and line.

Column files (CoNLL-2000/2003 style) hold one token per line, whitespace-separated columns, a blank
line between sentences; `-DOCSTART-` lines are skipped. In a `.conllu` file (Universal Dependencies)
columns are tab-separated, `#` lines are comments, and multiword-token ranges (`1-2`) and empty
nodes (`1.1`) are skipped, so the tokens are the syntactic words the tags belong to.

Tag schemes: `bio` accepts `O`, `B-<type>` and `I-<type>` (IOB2, and IOB1 where an entity may start
with `I-`); `plain` accepts any tag (part-of-speech tags, chunk labels without spans).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.readers import _not_utf8

Record = dict[str, Any]
TagScheme = Literal["bio", "plain"]
TAG_SCHEMES = ("bio", "plain")
# Extensions read as column files; every other file goes to the shared readers (.jsonl, .json, .csv, .parquet).
COLUMN_SUFFIXES = (".conll", ".conllu", ".bio", ".iob", ".iob2", ".tsv", ".txt")
DOCUMENT_START = "-DOCSTART-"


def is_column_file(dataset: Any) -> bool:
    """True for a `dataset` string naming a column file by its extension (whether or not it exists)."""
    return isinstance(dataset, str) and Path(dataset).suffix.lower() in COLUMN_SUFFIXES


def _conllu_skips(fields: list[str]) -> bool:
    """A CoNLL-U line that is no syntactic word: a multiword-token range or an empty node."""
    return "-" in fields[0] or "." in fields[0]


def _columns_needed(column: int) -> int:
    """How many columns a line needs for `column` to exist (a negative index counts from the end)."""
    return column + 1 if column >= 0 else -column


def read_column_file(path: Path, token_column: int = 0, tag_column: int = -1) -> list[Record]:
    """The sentences of a column file as records `{"tokens", "tags", "line"}` (`line`: where the sentence starts).

    Raises `DataConfigError` naming the file and line for a line without the columns asked for, and for a
    file without a single token or one that is not UTF-8.
    """
    if not path.is_file():
        raise DataConfigError(f"Data file {path} does not exist; check the path.")
    try:
        records = _sentences(path, token_column, tag_column)
    except UnicodeDecodeError:
        raise _not_utf8(path) or DataConfigError(f"{path} is not UTF-8 text; re-save it as UTF-8.") from None
    if not records:
        raise DataConfigError(f"{path} holds no token lines; point dataset at a file with sentences "
                              "(one token per line, a blank line between sentences).")
    return records


def _sentences(path: Path, token_column: int, tag_column: int) -> list[Record]:
    conllu = path.suffix.lower() == ".conllu"
    needed = max(_columns_needed(token_column), _columns_needed(tag_column), 2)  # a token line has a tag too
    records: list[Record] = []
    sentence: list[tuple[str, str]] = []
    start = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate([*handle, ""], start=1):  # the "" closes a last sentence without a blank line
            fields = line.rstrip("\r\n").split("\t") if conllu else line.split()
            if not line.strip():
                if sentence:
                    records.append({"tokens": [t for t, _ in sentence], "tags": [t for _, t in sentence], "line": start})
                sentence = []
                continue
            if (conllu and (line.startswith("#") or _conllu_skips(fields))) or fields[0] == DOCUMENT_START:
                continue
            if len(fields) < needed:
                raise DataConfigError(
                    f"{path}, line {number}: has {len(fields)} column(s), too few for token_column={token_column} and "
                    f"tag_column={tag_column}; fix the line or set those columns.")
            start = start if sentence else number
            sentence.append((fields[token_column], fields[tag_column]))
    return records


def where(dataset: str, record: Record, index: int) -> str:
    """How a message names one sentence: its file and line when known, else its example number."""
    return f"{dataset}, sentence at line {record['line']}" if "line" in record else f"{dataset}, example {index + 1}"


def is_bio_tag(tag: str) -> bool:
    """True for `O`, `B-<type>` and `I-<type>`."""
    return tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2)


def check_sentence(record: Record, tokens_column: str, tags_column: str, scheme: str, place: str) -> None:
    """Refuse one sentence whose tokens or tags are not lists of strings of equal, non-zero length, or
    whose tag the scheme does not know; `place` names it (see `where`)."""
    tokens, tags = record.get(tokens_column), record.get(tags_column)
    if not isinstance(tokens, list) or not isinstance(tags, list):
        raise DataConfigError(f"{place}: {tokens_column!r} and {tags_column!r} must be lists (one tag per token); "
                              "fix the record or set tokens_column/tags_column.")
    if not tokens:
        raise DataConfigError(f"{place}: the sentence has no tokens; remove it from the file.")
    if len(tokens) != len(tags):
        raise DataConfigError(f"{place}: {len(tokens)} tokens but {len(tags)} tags; give every token exactly one tag.")
    if not all(isinstance(value, str) for value in [*tokens, *tags]):
        raise DataConfigError(f"{place}: tokens and tags must be strings (a Hub dataset's integer tags need mapping to "
                              "their names first); quote them in the file.")
    blank = next((number for number, token in enumerate(tokens, start=1) if not token.strip()), None)
    if blank is not None:
        raise DataConfigError(f"{place}: token {blank} is empty, so no word piece could carry its tag; remove it.")
    if scheme == "bio":
        bad = next((tag for tag in tags if not is_bio_tag(tag)), None)
        if bad is not None:
            raise DataConfigError(
                f"{place}: tag {bad!r} is not a BIO tag (O, B-<type> or I-<type>); fix the tag, or set "
                "tag_scheme: plain for tags without entity spans (e.g. part of speech).")


def ordered_tags(tags: set[str], scheme: str) -> list[str]:
    """The tag set in index order: for `bio`, O first, then B- and I- of each type (both, even when the data
    shows only one, so the model can predict either), types sorted; for `plain`, sorted."""
    if scheme != "bio":
        return sorted(tags)
    types = sorted({tag[2:] for tag in tags if tag != "O"})
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I"))]


def check_scheme(scheme: str) -> None:
    if scheme not in TAG_SCHEMES:
        raise DataConfigError(f"tag_scheme={scheme!r} is not one of {', '.join(TAG_SCHEMES)}; use bio for entity tags "
                              "(O, B-<type>, I-<type>) or plain for any other tag set.")


def check_label_names(label_names: Sequence[str], scheme: str) -> list[str]:
    """The given tag set as strings, refused when it has fewer than two distinct tags or a tag the scheme lacks."""
    names = [str(name) for name in label_names]
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataConfigError(f"label_names must list at least two distinct tags, got {names}.")
    bad = [name for name in names if not is_bio_tag(name)] if scheme == "bio" else []
    if bad:
        raise DataConfigError(f"label_names holds {bad}, which are not BIO tags; fix them or set tag_scheme: plain.")
    return names
