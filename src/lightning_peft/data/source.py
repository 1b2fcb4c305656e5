"""The `dataset` argument of the data modules, resolved: what it names and its records, split or not.

A data module's `dataset` may be

- a catalog name (`lightning-peft datasets` lists them),
- a local .jsonl/.json/.csv/.parquet file (read through `datasets.load_dataset`),
- a Hugging Face Hub dataset name (with `dataset_config`/`dataset_split` passed to `load_dataset`),
- a `datasets.Dataset` or `datasets.DatasetDict` (from Python; the CLI passes strings).

A catalog name, a file, a Hub split and a `Dataset` are one pool of records that the data module
splits with its seed (`ALL`). A `DatasetDict`, and a Hub dataset loaded without `dataset_split`,
bring their own splits: `train` is required, `validation` and `test` are used as they are when
present, and any other split (e.g. imdb's `unsupervised`) is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from lightning_peft.data.catalog import CATALOG, check_dataset, dataset_identity, load_records, resolve_local
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.readers import BUILDERS, file_records, load_file
from lightning_peft.data.hf import class_names, describe, identity, is_datasets_object, load_hub, records_of

Record = dict[str, Any]
ALL = "all"  # the key of an unsplit pool of records
OWN_SPLITS = ("train", "validation", "test")


@dataclass
class Loaded:
    """The records of a dataset.

    Attributes:
        parts: `{ALL: records}` for data to split with the seed, else the dataset's own splits
            (`train`, and `validation`/`test` where it has them), in that order.
        identity: Changes when the records may have changed (goes into the tokenization cache key).
        class_names: Class names in index order of each `ClassLabel` column (datasets objects only).
    """

    parts: dict[str, list[Record]]
    identity: str
    class_names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def records(self) -> list[Record]:
        """Every record, the parts concatenated in order."""
        return [record for part in self.parts.values() for record in part]


def _check_own_splits(splits: Sequence[str], name: str) -> None:
    if "train" not in splits:
        raise DataConfigError(
            f"Dataset {name!r} has the splits {', '.join(splits) or 'none'} but no 'train' split; pass a DatasetDict "
            f"with 'train' (and optionally 'validation', 'test'), or a single split as a Dataset or dataset_split."
        )


def check_source(dataset: Any, kind: Sequence[str], config: Optional[str], split: Optional[str]) -> str:
    """Fail early (reading no data) on a `dataset` argument that cannot work; returns its short name.

    The short name is the string itself, or `hf.describe` of a datasets object; it is what messages,
    metric keys and checkpoints call the data (`DataFacts.dataset`).
    """
    for argument, value in (("dataset_config", config), ("dataset_split", split)):
        if value is not None and (not isinstance(value, str) or not value):
            raise DataConfigError(f"{argument} must be a non-empty string or null, got {value!r}.")
    if isinstance(dataset, str) and dataset:
        where = check_dataset(dataset, kind)
        if where != "hub" and (config is not None or split is not None):
            raise DataConfigError(f"dataset_config and dataset_split apply to Hub datasets only, and {dataset!r} is a "
                                  f"{'catalog name' if where == 'catalog' else 'local file'}; remove them.")
        return dataset
    if not is_datasets_object(dataset):
        raise DataConfigError(
            f"dataset must be a catalog name, a file path, a Hub dataset name, or a datasets.Dataset/DatasetDict, "
            f"got {type(dataset).__name__} {str(dataset)[:60]!r}."
        )
    name = describe(dataset)
    if config is not None or split is not None:
        raise DataConfigError(f"dataset_config and dataset_split apply to Hub dataset names only, and {name!r} is a "
                              "datasets object; select its split in Python instead.")
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        _check_own_splits(list(dataset), name)
    return name


def _from_datasets(value: Any, name: str, origin: str = "") -> Loaded:
    from datasets import Dataset

    if isinstance(value, Dataset):
        return Loaded({ALL: records_of(value)}, origin + identity(value), class_names(value))
    _check_own_splits(list(value), name)
    parts = {split: records_of(value[split]) for split in OWN_SPLITS if split in value}
    return Loaded(parts, origin + identity(value), class_names(value["train"]))


def load_source(dataset: Any, kind: Sequence[str], config: Optional[str] = None, split: Optional[str] = None) -> Loaded:
    """The records of `dataset` (already checked by `check_source`), with their identity for the cache key.

    A Hub name is not looked up again here: `load_hub` reports what went wrong since the check.
    """
    if not isinstance(dataset, str):
        return _from_datasets(dataset, describe(dataset))
    if dataset in CATALOG:
        return Loaded({ALL: load_records(dataset, kind)}, dataset_identity(dataset))
    path = Path(dataset).expanduser()
    if resolve_local(dataset) is not None or path.suffix.lower() in BUILDERS:  # a file, or one removed since
        loaded = load_file(path)
        return Loaded({ALL: file_records(loaded, path)}, dataset_identity(dataset), class_names(loaded))
    return _from_datasets(load_hub(dataset, config, split), dataset, origin=f"hub:{dataset}:{config}:{split}|")
