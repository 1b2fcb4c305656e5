"""Read local data files (JSONL, JSON, CSV, Parquet) through `datasets.load_dataset`, as plain record dicts.

`datasets` parses the file and keeps an Arrow copy in its cache (`HF_DATASETS_CACHE`), so a large
file is parsed once. What `datasets` accepts silently or reports in its own terms is checked here,
so a bad file still fails in one `DataConfigError` sentence:

- an unsupported extension is refused before anything is read;
- a file with no examples (empty, blank lines only, a CSV header only, a Parquet file of 0 rows)
  gives no records (the data modules then say the dataset is empty);
- JSON whose examples are not objects (`["a", "b"]`, a line `3`) is refused, although `datasets`
  would turn a list of strings into a `text` column;
- a JSONL line that is not JSON is named by its line number, and so is a line that is not UTF-8;
- a `.json` file holding one object with one list of objects (`{"data": [...]}`) reads that list.

CSV cells are read as text, exactly as written (`007` stays `007`, an empty cell is `""`), since a
CSV file has no types; `datasets` would otherwise let pandas guess numbers and missing values.
"""

from __future__ import annotations

import csv
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from lightning_peft.data.errors import DataConfigError

if TYPE_CHECKING:
    from datasets import Dataset

Record = dict[str, Any]

# extension -> the `datasets` packaged builder that reads it
BUILDERS: dict[str, str] = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def check_extension(path: Path) -> str:
    """The `datasets` builder for `path`'s extension, or `DataConfigError` naming the supported ones."""
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataConfigError(
            f"Cannot read {path}: the extension {path.suffix or '(none)'!r} is not supported; "
            f"convert it to one of {', '.join(BUILDERS)}."
        )
    return builder


def _not_objects(path: Path) -> DataConfigError:
    return DataConfigError(f"{path} must contain one object (column -> value) per example; reshape the file.")


def _first_chars(path: Path, count: int = 2) -> str:
    """The first `count` non-whitespace characters of a text file ('' for a blank file)."""
    found = ""
    with path.open(encoding="utf-8", errors="replace") as handle:
        while len(found) < count:
            chunk = handle.read(1 << 16)
            if not chunk:
                break
            found += "".join(chunk.split())[: count - len(found)]
    return found


def _has_no_examples(path: Path, builder: str) -> bool:
    """True when the file holds no example, which `datasets` reports as an error rather than 0 rows."""
    if builder == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows == 0
        except Exception as err:  # pyarrow's error for a file that is not Parquet
            raise DataConfigError(f"Cannot read {path} as Parquet ({_reason(err)}); fix or re-export the file.") from None
    if builder == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            rows = csv.reader(handle)
            return next(rows, None) is None or next(rows, None) is None  # no header, or a header only
    return _first_chars(path) in ("", "[]")  # blank, or a JSON list that closes at once


def _not_utf8(path: Path) -> Optional[DataConfigError]:
    """Where a text file stops being UTF-8, as our sentence; None when it is UTF-8 throughout.

    Used only after reading failed, so a good file is not read an extra time.
    """
    import codecs

    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                # the decoder may hold up to 3 bytes of the previous chunk; count lines in this chunk up to the error
                bad = max(err.start - (len(err.object) - len(chunk)), 0)
                line += chunk[:bad].count(b"\n")
                return DataConfigError(
                    f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} on line {line}); re-save it as UTF-8 "
                    "(e.g. `iconv -f latin1 -t utf-8`).")
            if not chunk:
                return None
            line += chunk.count(b"\n")


def _reason(err: BaseException) -> str:
    """The first line of an exception's message (or its class name), for a one-sentence error."""
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _diagnose_json(path: Path) -> Optional[DataConfigError]:
    """Why `datasets` could not read a .json/.jsonl file, in our sentence; None when no reason is found here.

    Used only after `datasets` failed, so the file is read a second time only when it is bad.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            first = next(line for line in text.splitlines() if line.strip())
            try:
                json.loads(first)  # a whole example on the first line: JSON Lines under a .json name
            except json.JSONDecodeError:
                return DataConfigError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column "
                                       f"{err.colno}); fix the file.")
        else:
            if isinstance(data, list) and not all(isinstance(item, dict) for item in data):
                return _not_objects(path)
            return None
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            return DataConfigError(
                f"Line {line_number} of {path} is not valid JSON ({err.msg}); fix the file or pass a .json/.csv file."
            )
        if not isinstance(value, dict):
            return _not_objects(path)
    return None


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence `datasets`' own error log while it reads a local file: a failure is reported here instead."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _csv_features(path: Path) -> Any:
    """Every column of the CSV header as a string feature, so no cell is converted to a number or None."""
    from datasets import Features, Value

    with path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    return Features({name: Value("string") for name in header})


def _wrapped_field(path: Path, dataset: "Dataset") -> Optional[str]:
    """The key of a `{"key": [objects...]}` wrapper that `datasets` read as one row, else None."""
    if path.suffix.lower() != ".json" or dataset.num_rows != 1 or len(dataset.column_names) != 1:
        return None
    (column,) = dataset.column_names
    value = dataset[0][column]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return column
    return None


def load_file(path: Path) -> "Dataset":
    """A local file as a `datasets.Dataset` (one row per example); `DataConfigError` for a file it cannot be.

    Example::

        >>> load_file(Path("train.jsonl")).column_names  # doctest: +SKIP
        ['text', 'label']
    """
    from datasets import Dataset, load_dataset

    builder = check_extension(path)
    if not path.is_file():
        raise DataConfigError(f"Data file {path} does not exist; check the path.")
    try:
        empty = _has_no_examples(path, builder)
    except UnicodeDecodeError:
        raise _not_utf8(path) or DataConfigError(f"{path} is not UTF-8 text; re-save it as UTF-8.") from None
    if empty:
        return Dataset.from_list([])
    if path.suffix.lower() == ".json" and _first_chars(path) not in ("[{", "[]") and _first_chars(path, 1) == "[":
        raise _not_objects(path)  # a list of strings or numbers, which datasets would read as a `text` column
    options: dict[str, Any] = {}
    try:
        if builder == "csv":
            options = {"features": _csv_features(path), "keep_default_na": False, "na_filter": False}
        with _quiet_datasets():
            dataset = load_dataset(builder, data_files=str(path), split="train", **options)
            field = _wrapped_field(path, dataset)
            if field is not None:
                dataset = load_dataset(builder, data_files=str(path), split="train", field=field)
    except Exception as err:  # datasets, pyarrow and pandas each raise their own classes for a malformed file
        diagnosis = _not_utf8(path) if builder != "parquet" else None
        if diagnosis is None and builder == "json":
            diagnosis = _diagnose_json(path)
        if diagnosis is not None:
            raise diagnosis from None
        raise DataConfigError(f"Cannot read {path} with datasets.load_dataset({builder!r}) ({_reason(err)}); "
                              "fix the file.") from None
    return dataset


def file_records(dataset: "Dataset", path: Path) -> list[Record]:
    """The rows `load_file(path)` gave, as records.

    Arrow gives every row every column, so a field that a JSON object lacks comes back as None; for
    JSON such fields are dropped again, and a record lacks the field as it does in the file (an
    explicit null is dropped alike: every reader of records treats the two the same way).
    """
    from lightning_peft.data.hf import records_of

    try:
        records = records_of(dataset)
    except UnicodeDecodeError:  # datasets' JSON reader keeps bytes that are not UTF-8; they fail only here
        raise _not_utf8(path) or DataConfigError(f"{path} is not UTF-8 text; re-save it as UTF-8.") from None
    if check_extension(path) == "json":
        records = [{key: value for key, value in record.items() if value is not None} for record in records]
    return records


def read_file(path: Path) -> list[Record]:
    """Records of a local file, chosen by its extension (see `load_file` and `file_records`)."""
    return file_records(load_file(path), path)


def file_identity(path: Path) -> str:
    """What identifies a local file's contents cheaply: resolved path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
