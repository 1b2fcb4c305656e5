"""The text of a style corpus: a plain text file, or any dataset `load_records` reads (catalog name, data file).

From records, every string field is kept (a dialogue's prompt and response, an article's text), one
record per line; labels are strings too, but a style prior over "ham"/"spam" costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from ..data.catalog import load_records
from ..data.errors import DataConfigError
from .errors import GenerationError


def corpus_text(corpus: str) -> str:
    """All the text of `corpus`; one sentence if it cannot be read or has none."""
    path = Path(corpus).expanduser()
    if path.suffix.lower() in (".txt", ".md"):
        if not path.is_file():
            raise GenerationError(f"The style corpus {corpus!r} is not a file; give a text file or a catalog name.")
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        try:
            records = load_records(corpus)
        except DataConfigError as error:
            raise GenerationError(f"The style corpus cannot be read: {error}") from error
        text = "\n".join(" ".join(v for v in record.values() if isinstance(v, str)) for record in records)
    if not text.strip():
        raise GenerationError(f"The style corpus {corpus!r} has no text; give a text file or dataset with some.")
    return text
