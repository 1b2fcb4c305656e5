"""`EpochRichProgressBar`: no negative epoch total for a run limited by max_steps; the CLI uses it by default."""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_peft.callbacks import EpochRichProgressBar

QUICKSTART = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")


def _rendered(bar_class: type[RichProgressBar], **trainer_args) -> str:
    screen = io.StringIO()
    bar = bar_class(console_kwargs={"file": screen, "force_terminal": True, "width": 160})
    L.Trainer(limit_val_batches=0, logger=False, enable_checkpointing=False, enable_model_summary=False,
              callbacks=[bar], **trainer_args).fit(BoringModel())
    return screen.getvalue()


def test_a_run_limited_by_steps_shows_the_epoch_without_a_negative_total():
    shown = _rendered(EpochRichProgressBar, max_steps=3)  # Lightning's own bar shows "Epoch 0/-2" up to 2.6.6
    assert "Epoch 0" in shown and "/-" not in shown


def test_a_run_limited_by_epochs_shows_the_total_as_lightning_does():
    assert "Epoch 1/1" in _rendered(EpochRichProgressBar, max_epochs=2, limit_train_batches=2)


def _cli_trainer(tmp_path, *extra: str, **cli_kwargs) -> L.Trainer:
    from lightning_peft.cli import LightningPeftCLI
    from lightning_peft.modules import FineTuneModule

    args = ["--config", QUICKSTART, "--model.init_args.backbone", "tiny-llama",
            "--trainer.default_root_dir", str(tmp_path), *extra]
    return LightningPeftCLI(FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                            run=False, args=args, **cli_kwargs).trainer


@pytest.mark.parametrize(("extra", "expected"), [
    ((), EpochRichProgressBar),
    (("--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",), TQDMProgressBar),
    (("--trainer.callbacks+=lightning.pytorch.callbacks.RichProgressBar",), RichProgressBar),
    (("--trainer.enable_progress_bar", "false"), type(None)),
])
def test_the_cli_uses_its_bar_only_where_none_is_given(tmp_path, extra, expected):
    assert type(_cli_trainer(tmp_path, *extra).progress_bar_callback) is expected


def test_a_bar_from_the_clis_trainer_defaults_is_kept(tmp_path):
    chosen = RichProgressBar(refresh_rate=7)
    assert _cli_trainer(tmp_path, trainer_defaults={"callbacks": [chosen]}).progress_bar_callback is chosen
