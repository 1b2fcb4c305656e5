"""modules.defaults.lazy_default: the lazy defaults of the modules' task and method arguments."""

from __future__ import annotations

import pickle

import pytest

from lightning_peft.methods import Lora
from lightning_peft.modules import LoraModule
from lightning_peft.modules.defaults import lazy_default


def test_a_default_is_its_class_with_its_arguments_and_each_call_is_its_own_instance():
    first, second = lazy_default(Lora, r=4), lazy_default(Lora)
    assert isinstance(first, Lora) and first is not second
    assert first.lazy_get_init_data().as_dict() == {"class_path": "lightning_peft.methods.Lora", "init_args": {"r": 4}}
    # built on first use (a method call), with the given arguments
    assert first.peft_config(["q_proj"], []).r == 4 and second.peft_config(["q_proj"], []).r == Lora().r
    assert type(pickle.loads(pickle.dumps(first))) is type(first)  # its lazy class is importable by name


def test_the_modules_defaults_are_lazy_instances_of_their_classes():
    import inspect

    defaults = inspect.signature(LoraModule.__init__).parameters
    assert defaults["method"].default.lazy_get_init_data().class_path == "lightning_peft.methods.Lora"
    assert defaults["task"].default.lazy_get_init_data().class_path == "lightning_peft.tasks.VerbalizerClassification"


def test_an_error_while_making_a_default_reaches_the_caller():
    with pytest.raises(AttributeError):  # jsonargparse reads the class's __name__, raised in the worker thread
        lazy_default(42)
