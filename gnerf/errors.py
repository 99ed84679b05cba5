"""The errors a user can fix, and how the front ends report them.

:class:`InputError` is raised where bad input is detected: an option value out of range, a missing or
malformed input file, an output folder that cannot be written. :class:`NonFiniteLossError` says that the
loss became NaN or infinite under the options given. Their messages name the option or file and the fix.
The front ends (the ``gnerf-fit-*`` commands, and ``ns-train``'s calls into gnerf's trainer) report
them with :func:`exit_with_error`: one ``error: ...`` line and exit status 1. Every other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["InputError", "NonFiniteLossError", "exit_with_error"]


class InputError(ValueError):
    """Bad input, options or output folder; the message names it and says how to fix it."""


class NonFiniteLossError(InputError):
    """The training loss became NaN or infinite; the message says which options to change."""


def exit_with_error(err: InputError, where: str = "") -> NoReturn:
    """Write ``error: <where><err>`` as one line to stderr and exit with status 1 (no traceback).

    One write, so that the lines of the processes of a distributed job sharing a terminal do not interleave.
    """
    sys.stderr.write(f"error: {where}{err}\n")
    raise SystemExit(1) from None
