"""A personal codebase split by file: next-token text to train on, single-line completions to test.

Paper: Zlotchevski, Drain, Svyatkovskiy, Clement, Sundaresan & Tufano 2022, "Exploring and
Evaluating Personalized Models for Code Generation" (https://arxiv.org/abs/2208.13928). A model is
personalised to one project by fine-tuning on its own code, and judged on code it has not seen
from the same project. The paper's task is generating unit tests for a Java project's methods; ours
(see docs/code_personalisation.md) is next-token loss and single-line completion on Python files,
which a 135M model can be scored on offline. The split is by *file*, so no held-out line was trained on.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Union

from lightning_peft.data.base import Record, require_columns
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.sft import SFTData
from lightning_peft.data.source import ALL, OWN_SPLITS, Loaded, load_source
from lightning_peft.data.splits import split_indices


def split_files(files: Loaded, val_size: Any, test_size: Any, seed: int) -> dict[str, list[Record]]:
    """The files of each split: a dataset's own splits as they are, else the seeded shuffle of `split_indices`."""
    if ALL not in files.parts:
        return {name: files.parts.get(name, []) for name in OWN_SPLITS}
    records = files.parts[ALL]
    return {name: [records[k] for k in indices]
            for name, indices in split_indices(len(records), val_size, test_size, seed).items()}


def chunks(text: str, lines_per_example: int) -> list[str]:
    """`text` cut into consecutive blocks of `lines_per_example` lines (each ending in a newline), blank ones dropped."""
    lines = text.splitlines()
    blocks = ("\n".join(lines[k:k + lines_per_example]) + "\n" for k in range(0, len(lines), lines_per_example))
    return [block for block in blocks if block.strip()]


def completions(text: str, count: int, seed: str) -> list[tuple[str, str]]:
    """Up to `count` (prefix, line) pairs of a file: `line` is a non-blank line after the first, `prefix` every
    line before it (ending in a newline). Lines are drawn with `random.Random(seed)` and kept in file order."""
    lines = text.splitlines()
    candidates = [k for k in range(1, len(lines)) if lines[k].strip()]
    chosen = sorted(random.Random(seed).sample(candidates, min(count, len(candidates))))
    return [("\n".join(lines[:k]) + "\n", lines[k]) for k in chosen]


class CodeCompletionData(SFTData):
    """A codebase (one record per source file) split by file into train/validation/test.

    - train and validation: each file cut into blocks of `lines_per_example` lines, learned whole
      (next-token loss on every token; no EOS, since a block stops at an arbitrary line);
    - test: single-line completions, `prompt` = every line of a held-out file before a chosen line (cut
      from the left to fit `max_length`), `response` = that line; the test loss is on that line only.
      `test_completions()` returns the same pairs for exact-match scoring by generation
      (`lightning_peft.evaluation.code_completion`).

    `val_size` and `test_size` count files (a fraction of the files, or a number of them), so no file
    lands in two splits; `split_seed` seeds both the file split and the choice of completion lines.

    Args:
        dataset: A catalog name of kind text with one record per file (`stdlib_email`, the Python standard
            library's email package), or a local .jsonl/.json/.csv/.parquet file with a path and a text column.
        tokenizer: Model name or tokenizer object; may be null here if the CLI links it from the model.
        path_column: Column naming each file (completion lines are drawn per path).
        text_column: Column holding each file's source text.
        lines_per_example: Lines per training and validation block.
        completions_per_file: Completion lines drawn from each test file (fewer when the file is shorter).
        max_length: Maximum tokens per example; a completion's prefix is cut from the left first.
        **shared: packing, max_tokens_per_batch (see `SFTData`); batch_size, eval_batch_size, val_size, test_size,
            max_train_examples, max_eval_examples, split_seed, order_seed, bucket_by_length, num_workers
            (see `TokenizedDataModule`).

    Example::

        dm = CodeCompletionData("stdlib_email", tokenizer="smollm2-135m", val_size=3, test_size=4)
    """

    accepted_kinds = ("text",)

    def __init__(
        self,
        dataset: Union[str, Any] = "stdlib_email",
        tokenizer: Union[str, Any, None] = None,
        path_column: str = "path",
        text_column: str = "text",
        lines_per_example: int = 12,
        completions_per_file: int = 40,
        max_length: int = 256,
        **shared: Any,
    ) -> None:
        # The records are built here (`read_data`), so their columns, template and targets are fixed.
        super().__init__(dataset, tokenizer, prompt_column="prompt", response_column="response",
                         prompt_template="{prompt}", chat_template=False, max_length=max_length, messages_column=None,
                         edit_targets=None, end_with_eos=False, **shared)
        for name, value in (("lines_per_example", lines_per_example), ("completions_per_file", completions_per_file)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataConfigError(f"{name} must be a positive integer, got {value!r}.")
        self.path_column = path_column
        self.text_column = text_column
        self.lines_per_example = lines_per_example
        self.completions_per_file = completions_per_file

    def file_splits(self) -> dict[str, list[Record]]:
        """The file records of each split (`train`, `validation`, `test`)."""
        files = load_source(self.source, self.accepted_kinds, self.dataset_config, self.dataset_split)
        if not files.records:
            raise DataConfigError(f"Dataset {self.dataset!r} has no files; point dataset at a codebase.")
        require_columns(files.records, [self.path_column, self.text_column], self.dataset, "path_column/text_column")
        return split_files(files, self.val_size, self.test_size, self.split_seed)

    def test_completions(self) -> list[tuple[str, str]]:
        """(prefix, next line) pairs of the test files, the same ones the test split holds (before `max_eval_examples`)."""
        return self._completions(self.file_splits()["test"])

    def _completions(self, files: list[Record]) -> list[tuple[str, str]]:
        return [pair for f in files
                for pair in completions(str(f[self.text_column]), self.completions_per_file,
                                        f"{self.split_seed}:{f[self.path_column]}")]

    def read_data(self) -> Loaded:
        if self._loaded is None:
            splits = self.file_splits()
            blocks = {name: [{"prompt": "", "response": block} for f in splits[name]
                             for block in chunks(str(f[self.text_column]), self.lines_per_example)]
                      for name in ("train", "validation")}
            tests = [{"prompt": prefix, "response": line} for prefix, line in self._completions(splits["test"])]
            digest = hashlib.sha256("\0".join(f"{f[self.path_column]}\0{f[self.text_column]}"
                                              for name in OWN_SPLITS for f in splits[name]).encode()).hexdigest()
            self._loaded = Loaded({**blocks, "test": tests}, f"code:{self.dataset}:{digest[:16]}")
        return self._loaded

    def cache_fields(self) -> dict[str, Any]:
        return {**super().cache_fields(), "lines_per_example": self.lines_per_example,
                "completions_per_file": self.completions_per_file, "split_seed": self.split_seed,
                "file_split": [self.val_size, self.test_size]}
