"""Read the JSON spec an exported method folder carries, checked before anything is built from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

Spec = TypeVar("Spec")


def read_spec_file(path: Path, spec_class: type[Spec], expected_format: str, error: type[Exception], kind: str,
                   again: str) -> Spec:
    """`spec_class` from the JSON at `path`, refused in one sentence (`error`) when it does not parse into it
    or names another format. `kind` names the config in messages ("bottleneck adapter"), `again` what to
    export again ("the adapter"). The file's existence is the caller's to check (its message names the run)."""
    try:
        spec = spec_class(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as problem:
        raise error(f"{path} is not a {kind} config this version reads ({problem}); export {again} again.") from None
    if spec.format != expected_format:
        raise error(f"{path} has format {spec.format!r}, not {expected_format!r}; export {again} again.")
    return spec
