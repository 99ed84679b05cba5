"""Standalone fitting tasks on the shared field and optimizer modules: images, occupancy, video.

All three share one configuration (:mod:`gnerf.tasks.config`), one run set-up and folder lock
(:mod:`gnerf.tasks.run`), one fitting loop (:mod:`gnerf.tasks.loop`) with its checkpoints
(:mod:`gnerf.tasks.checkpoint`) and metrics files (:mod:`gnerf.tasks.metrics_log`), the optimizer
configs (:mod:`gnerf.optim.configs`), the field builder (:func:`gnerf.tasks.build.build_field`
over :class:`gnerf.fields.CoordinateMLP`), its readers (:mod:`gnerf.tasks.io`) and writers (:mod:`gnerf.files`).
Their command lines are in :mod:`gnerf.tasks.cli`.
"""

from gnerf.tasks.build import build_field
from gnerf.tasks.config import FieldConfig, FitConfig, FitResult, Problem
from gnerf.tasks.image import ImageFitConfig, fit_image
from gnerf.tasks.loop import fit
from gnerf.tasks.mesh import inside_mesh, winding_number
from gnerf.tasks.occupancy import OccupancyFitConfig, fit_occupancy
from gnerf.tasks.video import VideoFitConfig, fit_video

__all__ = [
    "FieldConfig",
    "FitConfig",
    "FitResult",
    "ImageFitConfig",
    "OccupancyFitConfig",
    "Problem",
    "VideoFitConfig",
    "build_field",
    "fit",
    "fit_image",
    "fit_occupancy",
    "fit_video",
    "inside_mesh",
    "winding_number",
]
