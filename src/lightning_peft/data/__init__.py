"""Data layer: offline catalog, local files, seeded splits, cached tokenization, bucketed batches.

`ClassificationData`, `SFTData` and `Seq2SeqData` are LightningDataModules whose constructor
signatures are the config schema; `load_records` and `list_datasets` read the catalog directly.
"""

from lightning_peft.data.catalog import list_datasets, load_records
from lightning_peft.data.classification import ClassificationData
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.facts import DataFacts
from lightning_peft.data.paraphrase import ParaphraseClassificationData
from lightning_peft.data.sampler import LengthBucketBatchSampler
from lightning_peft.data.seq2seq import Seq2SeqData
from lightning_peft.data.sequence import TaskSequenceData
from lightning_peft.data.sft import SFTData

__all__ = [
    "ClassificationData",
    "DataConfigError",
    "DataFacts",
    "LengthBucketBatchSampler",
    "ParaphraseClassificationData",
    "SFTData",
    "Seq2SeqData",
    "TaskSequenceData",
    "list_datasets",
    "load_records",
]
