"""`lightning-peft models` and `lightning-peft datasets`: the offline model zoo and data catalog."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from .tables import print_table


def models_command(argv: list[str]) -> None:
    ArgumentParser(prog="lightning-peft models", description="List the offline model zoo's short names.").parse_args(argv)
    from ..zoo import list_models

    print_table(list_models(), ("name", "description"))
    print("\nAny other name is passed to from_pretrained unchanged (hub id or local folder).")


def datasets_command(argv: list[str]) -> None:
    ArgumentParser(prog="lightning-peft datasets", description="List the offline data catalog.").parse_args(argv)
    from ..data import list_datasets

    rows = [(d["name"], d["kind"], str(d["size"]), str(d.get("labels") or "-"), d["description"]) for d in list_datasets()]
    print_table(rows, ("name", "kind", "size", "labels", "description"))
    print("\nAny other value is read as a local .jsonl/.json/.csv/.parquet file.")
