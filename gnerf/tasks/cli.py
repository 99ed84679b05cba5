"""Console entry points of the fitting commands (``gnerf-fit-image``, ``-occupancy``, ``-video``).

Each parses its task's config dataclass with tyro, runs the task, and turns the errors that
bad input raises (a missing or unreadable file, an empty mesh, a video with no frames, an
unknown optimizer or activation, a run folder that is in use or cannot be written, a NaN loss)
into one ``error: ...`` line and exit status 1.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence, Type, TypeVar

import tyro

from gnerf.tasks.dist import launched_rank, session
from gnerf.tasks.image import ImageFitConfig, fit_image
from gnerf.tasks.occupancy import OccupancyFitConfig, fit_occupancy
from gnerf.tasks.run import RunFolderError
from gnerf.tasks.video import VideoFitConfig, fit_video

__all__ = ["image_main", "occupancy_main", "run_cli", "video_main"]

C = TypeVar("C")

#: Errors that mean "bad input or options", reported without a traceback.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, FloatingPointError, RunFolderError)


def run_cli(config_cls: Type[C], run: Callable[[C], object], args: Optional[Sequence[str]] = None) -> None:
    """Parse ``args`` (default: ``sys.argv``) into ``config_cls`` and call ``run`` on it."""
    cfg = tyro.cli(config_cls, args=args, description=config_cls.__doc__)
    try:
        with session(getattr(cfg, "dist_timeout", 600.0)):
            run(cfg)
    except USER_ERRORS as err:
        where = f"rank {launched_rank()}: " if launched_rank() is not None else ""
        sys.stderr.write(f"error: {where}{err}\n")  # one write: ranks share the terminal
        raise SystemExit(1) from None


def image_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-image``: fit an RGB image (see :mod:`gnerf.tasks.image`)."""
    run_cli(ImageFitConfig, fit_image, args)


def occupancy_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-occupancy``: fit the occupancy of a mesh (see :mod:`gnerf.tasks.occupancy`)."""
    run_cli(OccupancyFitConfig, fit_occupancy, args)


def video_main(args: Optional[Sequence[str]] = None) -> None:
    """``gnerf-fit-video``: fit a video (see :mod:`gnerf.tasks.video`)."""
    run_cli(VideoFitConfig, fit_video, args)
