"""Console entry points of the fitting commands (``gnerf-fit-image``, ``-occupancy``, ``-video``).

Each parses its task's config dataclass with tyro and runs the task. Bad input is named where it is
detected, with :class:`~gnerf.errors.InputError` (a missing or unreadable file, an empty mesh, a video
with no frames, an option out of range, a run folder that is in use or cannot be written, a NaN loss):
that error alone becomes one ``error: ...`` line and exit status 1. Ctrl-C becomes one ``error: interrupted ...``
line saying what was kept and how to continue, and exit status 130. Where a run can continue (after a NaN stop
or Ctrl-C) the line spells out the command to run. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable, List, Optional, Sequence, Type, TypeVar

import tyro

from gnerf.errors import InputError, Interrupted, NonFiniteLossError, Retry, exit_interrupted, exit_with_error
from gnerf.tasks.dist import launched_rank, session
from gnerf.tasks.image import ImageFitConfig, fit_image
from gnerf.tasks.occupancy import OccupancyFitConfig, fit_occupancy
from gnerf.tasks.video import VideoFitConfig, fit_video

__all__ = ["image_main", "occupancy_main", "retry_command", "run_cli", "video_main"]

C = TypeVar("C")


def run_cli(
    config_cls: Type[C], run: Callable[[C], object], args: Optional[Sequence[str]] = None, prog: Optional[str] = None
) -> None:
    """Parse ``args`` (default: ``sys.argv``) into ``config_cls`` and call ``run`` on it; an
    :class:`~gnerf.errors.InputError` ends the process with one ``error:`` line (naming the rank under torchrun),
    Ctrl-C with one ``error: interrupted ...`` line. ``prog`` names the command in the commands those lines
    suggest (default: ``sys.argv[0]``'s name)."""
    argv = list(sys.argv[1:] if args is None else args)
    prog = prog or os.path.basename(sys.argv[0] or "")
    cfg = tyro.cli(config_cls, args=argv, description=config_cls.__doc__)
    try:
        with session(getattr(cfg, "dist_timeout", 600.0)):
            run(cfg)
    except InputError as err:
        if isinstance(err, NonFiniteLossError) and err.retry is not None and _rank_prefix() == "":
            err = NonFiniteLossError(
                f"{err.what}; {_kept(err.retry)}: with a 10x lower lr, run "
                f"`{retry_command(prog, argv, err.retry)}`; or check the input data"
            )
        exit_with_error(err, where=_rank_prefix())
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted) and err.retry is not None and _rank_prefix() == "":
            verb = "to continue" if err.retry.saved_epoch else "to start over"
            err = Interrupted(f"{err.what}: {verb}, run `{retry_command(prog, argv, err.retry)}`")
        exit_interrupted(err, where=_rank_prefix())


def _kept(retry: Retry) -> str:
    return f"the checkpoint of epoch {retry.saved_epoch} is kept" if retry.saved_epoch else "no epoch was saved"


#: Options without a value that :func:`retry_command` replaces.
_RETRY_FLAGS = ("--resume", "--no-resume", "--allow-changed-optim", "--no-allow-changed-optim")


def retry_command(prog: str, argv: Sequence[str], retry: Retry) -> str:
    """The command line ``prog argv`` changed to run as ``retry`` says: when a checkpoint was saved, in its run
    folder with ``--resume`` (and ``--allow-changed-optim`` with a new lr); ``optim:NAME --optim.lr LR`` when
    ``retry`` gives an lr. The run's options stay before the subcommands (``optim:``, ``schedule:``), as tyro
    needs them."""
    replaced = (("--output-dir",) if retry.saved_epoch else ()) + (("--optim.lr",) if retry.lr is not None else ())
    kept: List[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0].replace("_", "-")
        if name in _RETRY_FLAGS:
            continue
        if name in replaced:
            skip = "=" not in token
            continue
        kept.append(token)
    first_sub = next((i for i, t in enumerate(kept) if t.startswith(("optim:", "schedule:"))), len(kept))
    run_options = []
    if retry.saved_epoch:
        run_options = ["--output-dir", retry.output_dir, "--resume"]
        run_options += ["--allow-changed-optim"] if retry.lr is not None else []
    head, tail = kept[:first_sub] + run_options, kept[first_sub:]
    if retry.lr is not None:
        optim = next((i for i, t in enumerate(tail) if t.startswith("optim:")), None)
        if optim is None:
            tail = [f"optim:{retry.optim}"] + tail
            optim = 0
        tail = tail[: optim + 1] + ["--optim.lr", f"{retry.lr:g}"] + tail[optim + 1 :]
    return shlex.join([prog or "gnerf-fit", *head, *tail])


def _rank_prefix() -> str:
    """``rank N: `` under torchrun, else nothing (also when torchrun's environment is what was wrong)."""
    try:
        rank = launched_rank()
    except InputError:
        return ""
    return f"rank {rank}: " if rank is not None else ""


def image_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-image``: fit an RGB image (see :mod:`gnerf.tasks.image`)."""
    run_cli(ImageFitConfig, fit_image, args, "gnerf-fit-image")


def occupancy_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-occupancy``: fit the occupancy of a mesh (see :mod:`gnerf.tasks.occupancy`)."""
    run_cli(OccupancyFitConfig, fit_occupancy, args, "gnerf-fit-occupancy")


def video_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-video``: fit a video (see :mod:`gnerf.tasks.video`)."""
    run_cli(VideoFitConfig, fit_video, args, "gnerf-fit-video")
