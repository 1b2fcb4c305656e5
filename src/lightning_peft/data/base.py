"""What every DataModule here shares: tokenizer resolution, seeded splits, cached tokenization,
length-bucketed loaders and mid-epoch resume. Subclasses say how records become token ids."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from lightning_peft import zoo
from lightning_peft.data.catalog import CATALOG, CatalogEntry
from lightning_peft.data.collate import PadCollator
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.formats import InputFormat
from lightning_peft.data.sampler import LengthBucketBatchSampler
from lightning_peft.data.source import ALL, Loaded, check_source, load_source
from lightning_peft.data.splits import SplitSize, check_split_size, own_split_indices, split_indices
from lightning_peft.data.tokenized import Store, TokenizedDataset, cached, tokenizer_identity

Record = dict[str, Any]
SPLITS = ("train", "validation", "test")


def require_columns(records: list[Record], columns: Sequence[str], dataset: str, argument_hint: str) -> None:
    """Raise when a needed column is absent from the first record, naming the columns that exist."""
    present = list(records[0])
    missing = [column for column in columns if column not in records[0]]
    if missing:
        raise DataConfigError(
            f"Dataset {dataset!r} has no column {', '.join(map(repr, missing))} (it has {', '.join(present)}); "
            f"set {argument_hint} to one of those."
        )


class TokenizedDataModule(LightningDataModule):
    """Base of the data modules: the arguments every one of them takes (subclasses pass them on as `**shared`).

    Args:
        dataset: Catalog name (`lightning-peft datasets` lists them), a local .jsonl/.json/.csv/.parquet file,
            a Hugging Face Hub dataset name (when the Hub is reachable), or from Python a `datasets.Dataset`
            (split with the seed, like a file) or `datasets.DatasetDict` (its train/validation/test splits
            are used; see `lightning_peft.data.source`).
        tokenizer: Model name (zoo short name, hub id or folder) or a tokenizer object; linked from the model
            by the CLI, so it may be null here but must be set before `setup()`.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size.
        val_size: Validation split: a fraction in [0, 1) or an example count; 0 for none.
        test_size: Test split, like `val_size`; taken first from the seeded shuffle.
        max_train_examples: Use only this many (seeded) training examples; null for all.
        max_eval_examples: Use only this many validation and test examples each; null for all.
        split_seed: Seed of the split, of the subsets, and (unless `order_seed` is set) of the per-epoch batch order.
        order_seed: Seed of the per-epoch training batch order only; null: `split_seed`. Set it to repeat a run
            on another batch order over the very same split (seeds of a benchmark).
        bucket_by_length: Batch examples of similar length together (less padding); else a plain seeded shuffle.
            Either way each epoch's largest training batch comes first, so an out-of-memory shows at step 1.
        num_workers: DataLoader worker processes.
        dataset_config: Hub datasets only: the configuration (subset) to load, e.g. "sst2" of "nyu-mll/glue".
        dataset_split: Hub datasets only: load this split (or slice, e.g. "train[:2000]") and split it with the
            seed like a file; null loads every split and uses the dataset's own train/validation/test.
    """

    accepted_kinds: tuple[str, ...] = ()
    collate_kind: str = ""
    # `DataFacts` (what modules read); subclasses override what applies to them
    packing: bool = False  # batches are packed rows (SFTData may set it)
    label_names: Optional[list[str]] = None
    templates: Sequence[str] = ()

    @property
    def input_length_limit(self) -> Optional[int]:
        """The longest input in tokens (the truncation length); None: not bounded here."""
        return None

    @property
    def input_format(self) -> Optional[InputFormat]:
        """How a record becomes the model's input (saved with checkpoints for `predict` and `generate`)."""
        return None

    def __init__(
        self,
        dataset: Union[str, Any],
        tokenizer: Union[str, Any, None] = None,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        val_size: SplitSize = 0.1,
        test_size: SplitSize = 0.1,
        max_train_examples: Optional[int] = None,
        max_eval_examples: Optional[int] = None,
        split_seed: int = 42,
        order_seed: Optional[int] = None,
        bucket_by_length: bool = True,
        num_workers: int = 0,
        dataset_config: Optional[str] = None,
        dataset_split: Optional[str] = None,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise DataConfigError(f"{name} must be a positive integer, got {value!r}.")
        for name, value in (("max_train_examples", max_train_examples), ("max_eval_examples", max_eval_examples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise DataConfigError(f"{name} must be a positive integer or null (all), got {value!r}.")
        if not isinstance(split_seed, int) or isinstance(split_seed, bool) or split_seed < 0:
            raise DataConfigError(f"split_seed must be a non-negative integer, got {split_seed!r}.")
        if order_seed is not None and (not isinstance(order_seed, int) or isinstance(order_seed, bool) or order_seed < 0):
            raise DataConfigError(f"order_seed must be a non-negative integer or null (split_seed's order), got {order_seed!r}.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise DataConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}.")
        check_split_size("val_size", val_size)
        check_split_size("test_size", test_size)
        # `dataset` is the short name (`DataFacts.dataset`); `source` is what was given, perhaps a datasets object.
        self.dataset = check_source(dataset, self.accepted_kinds, dataset_config, dataset_split)
        self.source = dataset
        self.dataset_config = dataset_config
        self.dataset_split = dataset_split
        self._loaded: Optional[Loaded] = None
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.test_size = test_size
        self.max_train_examples = max_train_examples
        self.max_eval_examples = max_eval_examples
        self.split_seed = split_seed
        self.order_seed = split_seed if order_seed is None else order_seed
        self.bucket_by_length = bucket_by_length
        self.num_workers = num_workers
        self.datasets: dict[str, TokenizedDataset] = {}
        self._resume: Optional[tuple[int, int]] = None  # (epoch, batches already trained in it)

    # --- what subclasses define -------------------------------------------------------------
    def prepare_records(self, records: list[Record]) -> list[Record]:
        """Check columns and labels, drop unusable records; raise `DataConfigError` on bad data."""
        raise NotImplementedError

    def tokenize(self, records: list[Record], tokenizer: Any) -> Store:
        raise NotImplementedError

    def pair_records(self, records: list[Record], source: tuple[str, str], target: tuple[str, str]) -> list[Record]:
        """Check an (input, output) column pair, given as (column, argument name); drop records without an input
        (None or absent: a JSON object without that field) or with an empty output."""
        if not records:
            raise DataConfigError(f"Dataset {self.dataset!r} is empty; point dataset at a file with examples.")
        for column, argument in (source, target):
            require_columns(records, [column], self.dataset, argument)
        return [r for r in records if r.get(source[0]) is not None and str(r.get(target[0]) or "").strip()]

    def cache_fields(self) -> dict[str, Any]:
        """Every argument that changes the token ids (goes into the cache key)."""
        raise NotImplementedError

    # --- shared machinery --------------------------------------------------------------------
    @property
    def catalog_entry(self) -> Optional[CatalogEntry]:
        """The catalog entry `dataset` names, or None for a file, a Hub dataset or a datasets object."""
        return CATALOG.get(self.source) if isinstance(self.source, str) else None

    def read_data(self) -> Loaded:
        """The dataset's records (read once; `setup` lets go of them after tokenizing)."""
        if self._loaded is None:
            self._loaded = load_source(self.source, self.accepted_kinds, self.dataset_config, self.dataset_split)
        return self._loaded

    def resolve_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise DataConfigError(
                f"{type(self).__name__} has no tokenizer; pass tokenizer=<model name> (or link it from the model)."
            )
        if isinstance(self.tokenizer, str):
            self.tokenizer = zoo.load_tokenizer(self.tokenizer)
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is None:
            raise DataConfigError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first.")
        return self.tokenizer

    @property
    def pad_token_id(self) -> int:
        tokenizer = self.resolve_tokenizer()
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        tokenizer = self.resolve_tokenizer()
        loaded, parts, records, splits = self._split_records()
        key = {"dataset": loaded.identity, "tokenizer": tokenizer_identity(tokenizer),
               "module": type(self).__name__, "count": len(records), **self.cache_fields()}
        if ALL not in parts:
            key["splits"] = {name: len(part) for name, part in parts.items()}
        store = cached(key, lambda: self.tokenize(records, tokenizer))
        self._loaded = None  # the store holds what training needs; the records may be large
        self.datasets = {name: TokenizedDataset(store, indices) for name, indices in splits.items()}

    def _split_records(self) -> tuple[Loaded, dict[str, list[Record]], list[Record], dict[str, list[int]]]:
        """The data read and checked, every usable record, and each split's positions among them (seeded, limited)."""
        loaded = self.read_data()
        if not loaded.records:
            raise DataConfigError(f"Dataset {self.dataset!r} is empty; point dataset at a file with examples.")
        # Each part is checked and filtered on its own, so the dataset's own splits keep their boundaries.
        parts = {name: self.prepare_records(part) if part else [] for name, part in loaded.parts.items()}
        records = [record for part in parts.values() for record in part]
        if not records:
            raise DataConfigError(f"Dataset {self.dataset!r} has no usable examples; check the file and columns.")
        if ALL in parts:
            splits = split_indices(len(records), self.val_size, self.test_size, self.split_seed)
        else:
            splits = own_split_indices({name: len(part) for name, part in parts.items()}, self.val_size,
                                       self.test_size, self.split_seed)
        limits = {"train": self.max_train_examples, "validation": self.max_eval_examples, "test": self.max_eval_examples}
        # Each split is already a seeded random order, so its first `limit` examples are a seeded subset.
        return loaded, parts, records, {name: splits[name][: limits[name]] for name in SPLITS}

    def split_records(self, split: str) -> list[Record]:
        """The records of one split ("train", "validation" or "test"), as read, in the split's order.

        Read again from the source: after `setup` the data module keeps token ids only. For methods that
        read the task's raw text, e.g. SciPrompt's label-word expansion from the training split alone.
        """
        if split not in SPLITS:
            raise DataConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
        _, _, records, splits = self._split_records()
        self._loaded = None
        return [records[position] for position in splits[split]]

    def _loader(self, split: str, train: bool) -> Union[DataLoader, list]:
        if not self.datasets:
            raise DataConfigError(f"Call {type(self).__name__}.setup() before asking for dataloaders.")
        data = self.datasets[split]
        if len(data) == 0:
            return []  # e.g. val_size=0: Lightning skips a loop with no dataloader
        sampler = self.batch_sampler(data, train)
        if train and self._resume is not None:
            sampler.skip_batches(self._resume[1], epoch=self._resume[0])
            self._resume = None
        # A private generator: otherwise each `iter()` draws a worker seed from the global RNG, and a run
        # resumed at an epoch boundary would draw it before its RNG state is restored, shifting every dropout mask.
        return DataLoader(data, batch_sampler=sampler, collate_fn=self.collator(),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.order_seed))

    def batch_sampler(self, data: TokenizedDataset, train: bool) -> LengthBucketBatchSampler:
        """Which examples form each batch (subclasses may batch by token budget instead)."""
        return LengthBucketBatchSampler(
            data.lengths(), self.batch_size if train else self.eval_batch_size, shuffle=train, seed=self.order_seed,
            # Without bucketing a 1-batch megabatch is a plain seeded shuffle that can still resume mid-epoch.
            megabatch_batches=50 if self.bucket_by_length else 1,
            packed=self.packing,  # a packed batch's size is its summed lengths (which batch is largest)
        )

    def collator(self) -> Any:
        """Turns a list of examples into a batch of tensors (padded here; subclasses may pack)."""
        return PadCollator(self.pad_token_id, self.collate_kind)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Union[DataLoader, list]:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> Union[DataLoader, list]:
        return self._loader("test", train=False)

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the current epoch, so a resumed run skips the batches already trained.

        Checkpoints are written from `on_train_batch_end` (after Lightning increments
        `batch_progress.current.processed`, before `completed`) or after validation; in both cases
        `processed` counts the batches of this epoch whose optimizer step has run.
        """
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        fit_loop = trainer.fit_loop
        return {"epoch": fit_loop.epoch_progress.current.processed,
                "batches_processed": fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "batches_processed" in state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["batches_processed"]))
