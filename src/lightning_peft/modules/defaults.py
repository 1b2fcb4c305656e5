"""`lazy_default(cls, **kwargs)`: the default of a module's `task` or `method` argument.

It is jsonargparse's `lazy_instance` (an instance built on first use, which `--help` and `--print_config` show
as its class and arguments), made cheaply. `lazy_instance` finds the module to attach its lazy class to with
`inspect.stack()`, which resolves the source file of every frame on the calling stack. While Python imports our
modules that stack is deep in importlib's frozen frames, whose files never resolve, so each of them scanned all
of `sys.modules`: 0.35 s per default, 6.5 s of the 15 s that `lightning-peft fit --help` took before anything
was parsed (`python -X importtime`, 2026-12-02). Called from a fresh thread, the stack is this module's frame
and `threading`'s, and the lazy classes live here (`lightning_peft.modules.defaults.LazyInstance_<class>`),
importable wherever the modules are.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from jsonargparse import lazy_instance

T = TypeVar("T")


def lazy_default(class_type: type[T], **kwargs: Any) -> T:
    """`jsonargparse.lazy_instance(class_type, **kwargs)`, made on a fresh thread's shallow stack."""
    outcome: dict[str, Any] = {}

    def make() -> None:
        try:
            outcome["instance"] = lazy_instance(class_type, **kwargs)
        except BaseException as error:  # re-raised in the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=make, name="lazy_default")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["instance"]
