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
from dataclasses import dataclass
from typing import NoReturn, Optional

__all__ = [
    "InputError",
    "Interrupted",
    "NonFiniteLossError",
    "Retry",
    "RunFolderError",
    "exit_interrupted",
    "exit_with_error",
]


class InputError(ValueError):
    """Bad input, options or output folder; the message names it and says how to fix it."""


@dataclass(frozen=True)
class Retry:
    """How to run a stopped fitting run again: in ``output_dir``, continuing from the checkpoint of ``saved_epoch``
    (0: none was saved, start again), with ``optim:NAME --optim.lr LR`` when ``lr`` is given (a changed lr on
    ``--resume`` needs ``--allow-changed-optim``)."""

    output_dir: str
    saved_epoch: int
    optim: str = ""
    lr: Optional[float] = None

    def options(self) -> str:
        """The options to add to the command that stopped, in words."""
        lr = f" and optim:{self.optim} --optim.lr {self.lr:g} (last)" if self.lr is not None else ""
        if self.saved_epoch == 0:
            return f"run the same command{lr.replace(' and', ' with', 1)}" if lr else "run the same command again"
        allow = " --allow-changed-optim" if self.lr is not None else ""
        return f"run the same command with --resume{allow} --output-dir {self.output_dir}{lr}"


class NonFiniteLossError(InputError):
    """The training loss became NaN or infinite; the message says which options to change (and ``retry``, when set,
    how to run again, for a front end that can spell out the whole command)."""

    def __init__(self, message: str, retry: Optional[Retry] = None, what: str = "") -> None:
        super().__init__(message)
        self.retry = retry
        self.what = what or message


class RunFolderError(InputError):
    """The run folder cannot be used: another run holds it, it holds files that are not a gnerf run, it holds a run
    already, or it cannot be created or written."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; the message says what was kept and how to continue (and ``retry``, when set,
    how to continue, for a front end that can spell out the whole command)."""

    def __init__(self, message: str, retry: Optional[Retry] = None, what: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry
        self.what = what or message


def exit_with_error(err: InputError, where: str = "") -> NoReturn:
    """Write ``error: <where><err>`` as one line to stderr and exit with status 1 (no traceback).

    One write, so that the lines of the processes of a distributed job sharing a terminal do not interleave.
    """
    sys.stderr.write(f"error: {where}{err}\n")
    raise SystemExit(1) from None


def exit_interrupted(err: KeyboardInterrupt, where: str = "") -> NoReturn:
    """Write one ``error: <where>interrupted ...`` line (what was kept, how to continue, when ``err`` says) and exit
    with status 130, the shell's status of a process stopped by SIGINT."""
    message = err.message if isinstance(err, Interrupted) else "interrupted (Ctrl-C)"
    sys.stderr.write(f"\nerror: {where}{message}\n")
    raise SystemExit(130) from None
