"""`refuse`: how every command ends on a user error: one `error: ...` sentence on stderr, exit status 2."""

from __future__ import annotations

import sys
from typing import NoReturn

USER_ERROR_STATUS = 2  # what argparse (and `lightning-peft fit`) exit with on bad input


class Refused(SystemExit):
    """Exit status 2 for bad input; `str()` is the `error: ...` line that was printed (for callers and tests)."""

    def __init__(self, line: str) -> None:
        super().__init__(USER_ERROR_STATUS)
        self.line = line

    def __str__(self) -> str:
        return self.line


def refuse(message: str) -> NoReturn:
    """Print `error: <message>` (one sentence: what is wrong, how to fix it) and exit with status 2."""
    line = f"error: {message}"
    print(line, file=sys.stderr)
    raise Refused(line)
