"""Data layer: offline catalog, local files and Hub datasets (through `datasets`), `datasets` objects,
seeded splits, cached tokenization, bucketed batches.

`ClassificationData`, `SFTData` and `Seq2SeqData` are LightningDataModules whose constructor
signatures are the config schema; `load_records` and `list_datasets` read the catalog directly.

The catalog and the error class are imported here; the data modules (which import torch,
Lightning and transformers, seconds on a CPU) are imported on first use of their name, so
`lightning-peft datasets` lists the catalog without loading those libraries.
`import_data_modules` imports them all at once, for the CLI's class lookup.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from lightning_peft.data.catalog import list_datasets, load_records
from lightning_peft.data.errors import DataConfigError

# Public name -> the module that defines it, imported when the name is first read.
_LAZY = {
    "ClassificationData": "lightning_peft.data.classification",
    "CodeCompletionData": "lightning_peft.data.code",
    "DataFacts": "lightning_peft.data.facts",
    "EmbeddingPairData": "lightning_peft.data.embedding_pairs",
    "FewShotClassificationData": "lightning_peft.data.fewshot",
    "LengthBucketBatchSampler": "lightning_peft.data.sampler",
    "ParaphraseClassificationData": "lightning_peft.data.paraphrase",
    "PossibilityData": "lightning_peft.data.possibility",
    "SFTData": "lightning_peft.data.sft",
    "SetFitData": "lightning_peft.data.setfit",
    "Seq2SeqData": "lightning_peft.data.seq2seq",
    "TaskSequenceData": "lightning_peft.data.sequence",
    "TokenClassificationData": "lightning_peft.data.token_classification",
}

if TYPE_CHECKING:
    from lightning_peft.data.classification import ClassificationData
    from lightning_peft.data.code import CodeCompletionData
    from lightning_peft.data.embedding_pairs import EmbeddingPairData
    from lightning_peft.data.facts import DataFacts
    from lightning_peft.data.fewshot import FewShotClassificationData
    from lightning_peft.data.paraphrase import ParaphraseClassificationData
    from lightning_peft.data.possibility import PossibilityData
    from lightning_peft.data.sampler import LengthBucketBatchSampler
    from lightning_peft.data.seq2seq import Seq2SeqData
    from lightning_peft.data.sequence import TaskSequenceData
    from lightning_peft.data.setfit import SetFitData
    from lightning_peft.data.sft import SFTData
    from lightning_peft.data.token_classification import TokenClassificationData


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = import_module(_LAZY[name]).__dict__[name]
    globals()[name] = value  # later reads skip this function
    return value


def import_data_modules() -> None:
    """Import every data module class now.

    LightningCLI resolves a short class name (`--data ClassificationData`) and lists the known
    data classes in `--help` from the LightningDataModule subclasses imported so far.
    """
    for name in _LAZY:
        __getattr__(name)


__all__ = [
    "ClassificationData",
    "CodeCompletionData",
    "DataConfigError",
    "DataFacts",
    "EmbeddingPairData",
    "FewShotClassificationData",
    "LengthBucketBatchSampler",
    "ParaphraseClassificationData",
    "PossibilityData",
    "SFTData",
    "SetFitData",
    "Seq2SeqData",
    "TaskSequenceData",
    "TokenClassificationData",
    "list_datasets",
    "load_records",
]
