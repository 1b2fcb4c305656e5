"""Refuse a `--ckpt_path` whose module, method or task settings differ from the run's config, naming the differences.

LightningCLI replaces the config's model settings with the ones the checkpoint recorded
(`hyper_parameters`, written by `save_hyperparameters`) before anything is built, so a resume
under a config with another LoRA rank, or a prompt-tuning checkpoint under a LoRA config, used to
train the checkpoint's settings without a word. Here both sides are compared first, as the
declared `__init__` arguments they are (the module's `class_path`, the method's and the task's
`class_path` and `init_args`), before any weights load. `--use_checkpoint_settings true` keeps
Lightning's behaviour on purpose: the run continues with the checkpoint's settings, and says which.
"""

from __future__ import annotations

import sys
from typing import Any

from ..checkpoint import CheckpointMismatchError

COMPARED = ("method", "task")  # the module's init arguments whose settings decide what is trained and how
_SHOWN = 6  # differences named in the sentence; the rest are counted


def _plain(value: Any) -> Any:
    """Config values as plain data, so a tuple in the parsed config equals the list the checkpoint stored."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _short(class_path: Any) -> str:
    return str(class_path).rpartition(".")[2]


def _component(name: str, saved: Any, wanted: Any) -> list[tuple[str, Any, Any]]:
    """(setting, checkpoint's value, config's value) for one `{class_path, init_args}` argument (method or task)."""
    saved = saved if isinstance(saved, dict) else {}
    wanted = wanted if isinstance(wanted, dict) else {}
    if saved.get("class_path") != wanted.get("class_path"):
        return [(name, _short(saved.get("class_path")), _short(wanted.get("class_path")))]
    ours, theirs = saved.get("init_args") or {}, wanted.get("init_args") or {}
    return [(f"{name}.{key}", ours[key], theirs[key]) for key in sorted(set(ours) & set(theirs)) if ours[key] != theirs[key]]


def settings_differences(hparams: dict[str, Any], model_config: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Where a checkpoint's recorded module settings differ from the run's model config.

    Args:
        hparams: The checkpoint's `hyper_parameters` (LightningCLI records the module's
            `_class_path` beside its `__init__` arguments).
        model_config: The config's `model` entry as plain data: `{"class_path": ..., "init_args": {...}}`.

    Returns:
        `(setting, checkpoint's value, config's value)` for the module class, then for the method
        and the task: their class when it differs, else each `init_args` entry that differs (an
        entry only one side records, e.g. an argument added to the class since, is not a difference).
        Empty when the checkpoint records no settings (a module built in Python).
    """
    hparams, model_config = _plain(hparams), _plain(model_config)
    init_args = model_config.get("init_args") or {}
    found = []
    saved_module = hparams.get("_class_path")
    if saved_module is not None and saved_module != model_config.get("class_path"):
        found.append(("module", _short(saved_module), _short(model_config.get("class_path"))))
    for name in COMPARED:
        if name in hparams:
            found += _component(name, hparams[name], init_args.get(name))
    return found


def _listed(pairs: list[str]) -> str:
    shown = ", ".join(pairs[:_SHOWN])
    return shown if len(pairs) <= _SHOWN else f"{shown} and {len(pairs) - _SHOWN} more"


def check_settings(ckpt_path: str, hparams: dict[str, Any], model_config: dict[str, Any], use_checkpoint_settings: bool) -> None:
    """Refuse (`CheckpointMismatchError`) a checkpoint trained with other module settings than the config, or say
    on stderr that the checkpoint's are used when `use_checkpoint_settings` is set."""
    differences = settings_differences(hparams, model_config)
    if not differences:
        return
    theirs = _listed([f"{key}={saved!r}" for key, saved, _ in differences])
    ours = _listed([f"{key}={wanted!r}" for key, _, wanted in differences])
    if use_checkpoint_settings:
        print(f"--use_checkpoint_settings: continuing with the checkpoint's {theirs} (the config had {ours}).",
              file=sys.stderr)
        return
    raise CheckpointMismatchError(
        f"--ckpt_path {ckpt_path} was trained with {theirs}, but this config has {ours}; set model.init_args as the "
        "checkpoint has them, or add --use_checkpoint_settings true to continue with the checkpoint's settings."
    )
