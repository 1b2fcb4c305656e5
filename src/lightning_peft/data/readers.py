"""Read local data files (JSONL, JSON, CSV, Parquet) into a list of plain record dicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

from lightning_peft.data.errors import DataConfigError


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataConfigError(
                    f"Line {line_number} of {path} is not valid JSON ({err.msg}); fix the file or pass a .json/.csv file."
                ) from None
    return records


def _read_json(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}-style wrappers
    if not isinstance(data, list):
        raise DataConfigError(f"{path} must hold a JSON list of objects (one per example); reshape the file.")
    return data


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


READERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


def read_file(path: Path) -> list[dict[str, Any]]:
    """Records of a local file, chosen by its extension."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataConfigError(
            f"Cannot read {path}: the extension {path.suffix or '(none)'!r} is not supported; "
            f"convert it to one of {', '.join(READERS)}."
        )
    records = reader(path)
    if records and not all(isinstance(record, dict) for record in records):
        raise DataConfigError(f"{path} must contain one object (column -> value) per example; reshape the file.")
    return records


def file_identity(path: Path) -> str:
    """What identifies a local file's contents cheaply: resolved path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
