"""A sequence of tasks trained one after another (continual learning), evaluated on all of them.

Stage k trains on task k for `epochs_per_task` epochs; validation and test run on every task's
split, so each stage ends with a per-task evaluation. HFT (Hui et al. 2024) draws a new half per
stage: pair this with `HalfFineTuning(every_n_epochs=epochs_per_task)`.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from lightning_peft.data.base import TokenizedDataModule
from lightning_peft.data.errors import DataConfigError
from lightning_peft.data.formats import InputFormat


class TaskSequenceData(LightningDataModule):
    """Train on `tasks` in order, one stage each; evaluate on every task.

    Needs `trainer.reload_dataloaders_every_n_epochs` to divide `epochs_per_task`, so the
    training loader is rebuilt when a stage starts.

    Args:
        tasks: Data modules in training order; all must produce batches for the same objective
            (e.g. SFTData on several data sets).
        names: One name per task for metric keys (`val/<name>/perplexity`); default: each dataset's name.
        epochs_per_task: Length of a stage in epochs.
        tokenizer: Model name for every task that has none (the CLI links it from the model).

    Example::

        TaskSequenceData([SFTData("movie_dialog"), SFTData("trec6", prompt_column="text", response_column="label")])
    """

    def __init__(
        self,
        tasks: list[TokenizedDataModule],
        names: Optional[list[str]] = None,
        epochs_per_task: int = 1,
        tokenizer: Union[str, Any, None] = None,
    ) -> None:
        super().__init__()
        if not tasks:
            raise DataConfigError("TaskSequenceData needs at least one task in `tasks`.")
        if epochs_per_task < 1:
            raise DataConfigError(f"epochs_per_task must be at least 1, got {epochs_per_task}.")
        names = list(names) if names is not None else [t.dataset for t in tasks]
        if len(names) != len(tasks) or len(set(names)) != len(names):
            raise DataConfigError(f"names must give one distinct name per task; got {names} for {len(tasks)} tasks.")
        self.tasks, self.task_names, self.epochs_per_task, self.tokenizer = list(tasks), names, epochs_per_task, tokenizer

    # `DataFacts`: the facts that hold for every task of the sequence
    label_names = None  # each task has its own classes
    templates = ()
    dataset = None

    @property
    def packing(self) -> bool:
        return any(task.packing for task in self.tasks)

    @property
    def input_length_limit(self) -> Optional[int]:
        limits = [task.input_length_limit for task in self.tasks]
        return None if None in limits else max(limits)

    @property
    def input_format(self) -> Optional[InputFormat]:
        """The last task's: the final weights were trained on it last."""
        return self.tasks[-1].input_format

    def current_task(self) -> int:
        """Index of the task the current epoch trains on (the last task once the sequence is done)."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return min(epoch // self.epochs_per_task, len(self.tasks) - 1)

    def setup(self, stage: Optional[str] = None) -> None:
        reload = self.trainer.reload_dataloaders_every_n_epochs if self.trainer is not None else 1
        if self.trainer is not None and stage == "fit" and (reload < 1 or self.epochs_per_task % reload):
            raise DataConfigError(
                f"TaskSequenceData switches tasks every {self.epochs_per_task} epoch(s), but the trainer reloads "
                f"dataloaders every {reload}; set trainer.reload_dataloaders_every_n_epochs: 1."
            )
        for task in self.tasks:
            if task.tokenizer is None:
                task.tokenizer = self.tokenizer
            task.trainer = self.trainer  # lets each task record its resume position
            task.setup(stage)

    def train_dataloader(self) -> DataLoader:
        return self.tasks[self.current_task()].train_dataloader()

    def val_dataloader(self) -> list:
        return [task.val_dataloader() for task in self.tasks]

    def test_dataloader(self) -> list:
        return [task.test_dataloader() for task in self.tasks]

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.tasks[self.current_task()].state_dict()} if self.trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "current" in state_dict:
            epoch = int(state_dict["current"].get("epoch", 0))
            self.tasks[min(epoch // self.epochs_per_task, len(self.tasks) - 1)].load_state_dict(state_dict["current"])
