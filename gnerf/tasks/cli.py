"""Console entry points of the fitting commands (``gnerf-fit-image``, ``-occupancy``, ``-video``).

Each parses its task's config dataclass with tyro and runs the task. Bad input is named where it is
detected, with :class:`~gnerf.errors.InputError` (a missing or unreadable file, an empty mesh, a video
with no frames, an option out of range, a run folder that is in use or cannot be written, a NaN loss):
that error alone becomes one ``error: ...`` line and exit status 1. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Type, TypeVar

import tyro

from gnerf.errors import InputError, exit_with_error
from gnerf.tasks.dist import launched_rank, session
from gnerf.tasks.image import ImageFitConfig, fit_image
from gnerf.tasks.occupancy import OccupancyFitConfig, fit_occupancy
from gnerf.tasks.video import VideoFitConfig, fit_video

__all__ = ["image_main", "occupancy_main", "run_cli", "video_main"]

C = TypeVar("C")


def run_cli(config_cls: Type[C], run: Callable[[C], object], args: Optional[Sequence[str]] = None) -> None:
    """Parse ``args`` (default: ``sys.argv``) into ``config_cls`` and call ``run`` on it; an
    :class:`~gnerf.errors.InputError` ends the process with one ``error:`` line (naming the rank under torchrun)."""
    cfg = tyro.cli(config_cls, args=args, description=config_cls.__doc__)
    try:
        with session(getattr(cfg, "dist_timeout", 600.0)):
            run(cfg)
    except InputError as err:
        exit_with_error(err, where=_rank_prefix())


def _rank_prefix() -> str:
    """``rank N: `` under torchrun, else nothing (also when torchrun's environment is what was wrong)."""
    try:
        rank = launched_rank()
    except InputError:
        return ""
    return f"rank {rank}: " if rank is not None else ""


def image_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-image``: fit an RGB image (see :mod:`gnerf.tasks.image`)."""
    run_cli(ImageFitConfig, fit_image, args)


def occupancy_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-occupancy``: fit the occupancy of a mesh (see :mod:`gnerf.tasks.occupancy`)."""
    run_cli(OccupancyFitConfig, fit_occupancy, args)


def video_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-video``: fit a video (see :mod:`gnerf.tasks.video`)."""
    run_cli(VideoFitConfig, fit_video, args)
