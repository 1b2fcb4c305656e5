"""Edit-span targets for rewriting tasks.

Paper: Kaneko & Okazaki 2023, "Reducing Sequence Length by Predicting Edit Operations with Large
Language Models" (https://arxiv.org/abs/2305.11862). For a rewrite that keeps most of its source
(grammatical error correction, paraphrase with small changes), the model predicts only the spans
that change, as (start, end, replacement) over the source, instead of the whole rewrite; a decoder
applies them. The target shrinks to a few tokens, so training and generation get cheaper.

Our choices (the paper's setup differs in the details; see docs/methods/edit_spans.md):

- **Word spans.** Positions count whitespace-separated words of the source, half-open `[start,
  end)`: an insertion is `start == end`, a deletion has an empty replacement. Word positions do
  not depend on the tokenizer (the same targets serve every model) and stay small numbers, and a
  subword tokenizer would split a word inside a typo anyway. The rewrite is compared and produced
  with single spaces between words (`" ".join(text.split())`).
- **Serialisation** (what the LM learns): edits in source order, each `"start end replacement"`,
  joined by `|`; no edit at all is `none`. In `"3 5 fixed words|7 8 |9 9 again"` words 3-4 become
  "fixed words", word 7 is deleted and "again" is inserted before word 9. A `|` or `\\` inside a
  replacement is escaped with `\\`.
- **Decoding model output** never raises: an edit that does not parse, points outside the source,
  or overlaps an edit already accepted (kept in the order generated) is skipped and counted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, NamedTuple

from lightning_peft.data.errors import DataConfigError

NO_EDITS = "none"
SEPARATOR = "|"
ESCAPE = "\\"


class EditError(DataConfigError):
    """A user-supplied edit (or source) that cannot be applied; the message is one sentence."""


class Edit(NamedTuple):
    """Replace source words `[start, end)` with `replacement` (words joined by single spaces)."""

    start: int
    end: int
    replacement: str


@dataclass(frozen=True)
class Decoded:
    """The rewrite decoded from generated edit text, and what was left out of it.

    Attributes:
        text: The source with the accepted edits applied.
        applied: Edits applied.
        malformed: Pieces that did not parse as `start end replacement`.
        out_of_range: Edits outside the source (`end` beyond its last word, or `start > end`).
        overlapping: Edits that overlap one accepted before them.
    """

    text: str
    applied: int
    malformed: int
    out_of_range: int
    overlapping: int

    @property
    def skipped(self) -> int:
        return self.malformed + self.out_of_range + self.overlapping


def words(text: str) -> list[str]:
    return text.split()


def _check_source(source: str) -> list[str]:
    tokens = words(source)
    if not tokens:
        raise EditError("The source is empty (no words), so there is nothing to edit; drop the example or give it text.")
    return tokens


def extract(source: str, target: str) -> list[Edit]:
    """The fewest word spans (by `difflib`'s longest matching blocks) that turn `source` into `target`.

    `apply(source, extract(source, target)) == " ".join(target.split())` for every non-empty source.
    """
    src, tgt = _check_source(source), words(target)
    matcher = difflib.SequenceMatcher(a=src, b=tgt, autojunk=False)
    return [Edit(i1, i2, " ".join(tgt[j1:j2])) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def check(source: str, edits: list[Edit], where: str = "the edits") -> None:
    """Raise `EditError` (one sentence naming `where`) if an edit falls outside `source` or overlaps another.

    Two insertions at the same position, or an insertion inside a replaced span, are overlaps too:
    their order in the rewrite would be ambiguous.
    """
    length = len(_check_source(source))
    previous: Edit | None = None
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if not 0 <= edit.start <= edit.end <= length:
            raise EditError(f"The edit {edit.start} {edit.end} in {where} falls outside the source's {length} words "
                            f"(spans are 0 <= start <= end <= {length}); fix or drop that example.")
        if previous is not None and _overlaps(previous, edit):
            raise EditError(f"The edits {previous.start} {previous.end} and {edit.start} {edit.end} in {where} overlap; "
                            "give each source word to at most one edit and at most one insertion per position.")
        previous = edit


def _overlaps(first: Edit, second: Edit) -> bool:
    """Whether two edits, sorted by (start, end), touch the same words or insertion point."""
    if first.start == first.end == second.start == second.end:
        return True  # two insertions at one position: their order would be ambiguous
    if second.start == second.end:
        return first.start < second.start < first.end  # an insertion inside a replaced span
    if first.start == first.end:
        return False  # an insertion before the replaced span
    return second.start < first.end


def apply(source: str, edits: list[Edit]) -> str:
    """`source` with `edits` applied; `EditError` on edits that overlap or fall outside it (see `check`)."""
    check(source, edits)
    return _splice(words(source), edits)


def _splice(tokens: list[str], edits: list[Edit]) -> str:
    out: list[str] = []
    done = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        out += tokens[done:edit.start] + words(edit.replacement)
        done = edit.end
    return " ".join(out + tokens[done:])


def _escape(text: str) -> str:
    return text.replace(ESCAPE, ESCAPE * 2).replace(SEPARATOR, ESCAPE + SEPARATOR)


def serialise(edits: list[Edit]) -> str:
    """The target text an LM learns: `"start end replacement|..."` in source order, or `none`."""
    if not edits:
        return NO_EDITS
    return SEPARATOR.join(f"{e.start} {e.end} {_escape(e.replacement)}" for e in sorted(edits, key=lambda e: e[:2]))


def _pieces(text: str) -> list[str]:
    """Split at unescaped separators and undo the escapes."""
    pieces, current, chars = [], [], iter(text)
    for char in chars:
        if char == ESCAPE:
            current.append(next(chars, ""))
        elif char == SEPARATOR:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    return pieces + ["".join(current)]


def _parse_piece(piece: str) -> Edit | None:
    fields = piece.lstrip().split(" ", 2)
    if len(fields) < 2 or not all(f.isascii() and f.isdigit() for f in fields[:2]):
        return None
    return Edit(int(fields[0]), int(fields[1]), " ".join(words(fields[2] if len(fields) == 3 else "")))


def parse(text: str) -> tuple[list[Edit], int]:
    """Edits in `text` (a `serialise` output or a model's generation) and how many pieces did not parse."""
    if text.strip() in ("", NO_EDITS):
        return [], 0
    parsed = [_parse_piece(piece) for piece in _pieces(text.strip()) if piece.strip()]  # a stray `|` is no edit
    return [e for e in parsed if e is not None], sum(e is None for e in parsed)


def decode(source: str, generated: str) -> Decoded:
    """Apply a model's generated edit text to `source`, skipping (and counting) whatever cannot apply.

    Never raises on `generated`; edits are accepted in the order generated, so of two overlapping
    edits the first wins. An empty source decodes to the empty string.
    """
    edits, malformed = parse(generated)
    tokens = words(source)
    accepted: list[Edit] = []
    out_of_range = overlapping = 0
    for edit in edits:
        if not 0 <= edit.start <= edit.end <= len(tokens):
            out_of_range += 1
        elif any(_overlaps(*sorted((kept, edit), key=lambda e: (e.start, e.end))) for kept in accepted):
            overlapping += 1
        else:
            accepted.append(edit)
    return Decoded(_splice(tokens, accepted), len(accepted), malformed, out_of_range, overlapping)


EDIT_TARGETS = ("from_rewrite", "given")


def edit_records(records: list[dict[str, Any]], source_column: str, target_column: str, mode: str,
                 dataset: str) -> list[dict[str, Any]]:
    """Records whose `target_column` holds serialised edits over `source_column` (what `SFTData(edit_targets=...)` does).

    `mode="from_rewrite"`: the target is the rewrite and becomes `serialise(extract(source, target))`.
    `mode="given"`: the target already holds edits; they are checked against the source (one
    sentence naming the example when one overlaps another, falls outside the source or does not parse).
    """
    converted = []
    for number, record in enumerate(records):
        where = f"example {number} of {dataset!r}"
        source, target = str(record[source_column]), str(record[target_column])
        if not words(source):
            raise EditError(f"The source of {where} is empty, so it has no words to edit; drop it or give it text.")
        if mode == "from_rewrite":
            edits = extract(source, target)
        else:
            edits, malformed = parse(target)
            if malformed:
                raise EditError(f"The edits {target[:60]!r} of {where} do not all parse as 'start end replacement' "
                                "pieces joined by '|'; fix that example.")
            check(source, edits, where)
        converted.append({**record, target_column: serialise(edits)})
    return converted
