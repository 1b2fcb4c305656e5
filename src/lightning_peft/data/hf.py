"""Hugging Face `datasets` as a data source: Hub dataset names and `Dataset`/`DatasetDict` objects.

`datasets` is imported inside the functions, so listing the catalog stays free of it (and of pandas).

- A `dataset` string that is neither a catalog name nor a file is looked up on the Hub
  (`hub_problem`) when the data module is built, so a typo fails at once in one sentence,
  and loaded with `datasets.load_dataset(name, config, split=split)` at `setup()` (`load_hub`).
- Rows become plain dicts (`records_of`); a `ClassLabel` column gives its class names, not indices.
- `identity` keys the tokenization cache on `Dataset._fingerprint`: `datasets` derives it from the
  data's origin and every transform applied (for an in-memory table, from its contents), so it changes
  when the rows may have changed. It is a private attribute with no public accessor; when `datasets`
  cannot hash a transform it draws a random fingerprint, which only costs a cache miss.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Optional, Union

from lightning_peft.data.errors import DataConfigError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

Record = dict[str, Any]
# owner/name or a bare canonical name, as the Hub allows them (letters, digits, '-', '_', '.')
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
HUB_TIMEOUT_S = 10.0


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """True when HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set (read now, not at import as `datasets` does)."""
    return _env_true("HF_DATASETS_OFFLINE") or _env_true("HF_HUB_OFFLINE")


def hub_problem(name: str) -> Optional[str]:
    """Why `name` cannot be loaded from the Hub, as a clause ("and ..."); None when the Hub has it.

    One metadata request (`HfApi.dataset_info`, timeout 10 s); nothing is downloaded. A gated dataset
    counts as present: `load_dataset` then says how to get access.
    """
    if not HUB_ID.match(name):
        return "and it is not a valid Hugging Face Hub dataset name"
    if hub_offline():
        return "and the Hugging Face Hub is offline here (HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set)"
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return None
    except RepositoryNotFoundError:
        return "and the Hugging Face Hub has no dataset of that name (or it is private and you are not logged in)"
    except Exception as err:  # no network, DNS, proxy, timeout: each HTTP stack raises its own classes
        return f"and the Hugging Face Hub could not be reached ({type(err).__name__})"
    return None


def load_hub(name: str, config: Optional[str] = None, split: Optional[str] = None) -> Union["Dataset", "DatasetDict"]:
    """`datasets.load_dataset(name, config, split=split)`; a failure is one `DataConfigError` sentence.

    Without `split` the result is a `DatasetDict` of every split the dataset has.
    """
    from datasets import load_dataset

    try:
        return load_dataset(name, config, split=split)
    except Exception as err:  # DatasetNotFoundError, ValueError (config/split), ConnectionError, ...
        lines = str(err).strip().splitlines()
        reason = lines[0][:300] if lines else type(err).__name__
        what = "".join([f" (dataset_config {config!r})" if config else "", f" (dataset_split {split!r})" if split else ""])
        raise DataConfigError(f"Cannot load Hub dataset {name!r}{what}: {reason}; check the name, "
                              "dataset_config and dataset_split.") from None


def is_datasets_object(value: Any) -> bool:
    """True for a `datasets.Dataset` or `DatasetDict` (imports `datasets` only when `value` is no string)."""
    if isinstance(value, str):
        return False
    from datasets import Dataset, DatasetDict

    return isinstance(value, (Dataset, DatasetDict))


def class_names(dataset: "Dataset") -> dict[str, list[str]]:
    """Class names, in index order, of each `ClassLabel` column."""
    from datasets import ClassLabel

    return {column: list(feature.names) for column, feature in dataset.features.items() if isinstance(feature, ClassLabel)}


def records_of(dataset: "Dataset") -> list[Record]:
    """The rows of `dataset` as dicts; a `ClassLabel` value becomes its class name (-1, "no label", None)."""
    rows = dataset.to_list()
    for column, names in class_names(dataset).items():
        for row in rows:
            value = row[column]
            row[column] = names[value] if value is not None and 0 <= value < len(names) else None
    return rows


def describe(value: Union["Dataset", "DatasetDict"]) -> str:
    """A short name for messages, metric keys and checkpoints: e.g. `imdb[train]`, `datasets.DatasetDict[train,test]`."""
    from datasets import Dataset

    if isinstance(value, Dataset):
        name = value.info.dataset_name or "datasets.Dataset"
        return f"{name}[{value.split}]" if value.split is not None else name
    parts = list(value.values())
    name = (parts[0].info.dataset_name if parts else None) or "datasets.DatasetDict"
    return f"{name}[{','.join(value)}]"


def identity(value: Union["Dataset", "DatasetDict"]) -> str:
    """What changes when the rows may have changed: the fingerprint of the Dataset, or of each split."""
    from datasets import Dataset

    if isinstance(value, Dataset):
        return f"datasets:{value._fingerprint}"
    return "datasets:" + ",".join(f"{name}={part._fingerprint}" for name, part in value.items())
