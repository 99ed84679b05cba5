"""Dataparser for forward-facing captures in LLFF format (``poses_bounds.npy`` + ``images*/``).

Layout of a scene folder::

    <scene>/poses_bounds.npy     # N x 17 float array
    <scene>/images/              # full-resolution images (N files)
    <scene>/images_<factor>/     # optional pre-downscaled copies (e.g. images_4, images_8)

Each row of ``poses_bounds.npy`` holds a flattened 3x5 matrix followed by the near/far depth bounds of that
view. The 3x5 matrix is ``[R | t | hwf]``: a camera-to-world rotation whose columns are the camera's
``[down, right, backwards]`` axes, the camera centre ``t``, and the column ``[H, W, focal]`` of the images
the poses were estimated on (full resolution). BLEFF scenes use the same format.

Processing follows the LLFF / NeRF reference loaders (re-implemented here):

1. the rotation columns are reordered to nerfstudio's OpenGL convention ``[right, up, backwards]``;
2. translations and bounds are scaled by ``1 / (min(bounds) * bd_factor)``;
3. poses are recentred so that the average pose becomes the identity;
4. every ``holdout_every``-th view (index ``i % holdout_every == 0``) is held out for evaluation.

Intrinsics come from the ``[H, W, focal]`` column, rescaled to the size of the image files actually on disk,
so nothing assumes 4032x3024 captures or the existence of an ``images_8`` folder.

With ``image_size`` set (e.g. ``480 640``, the paper's forward-facing size), the images are instead resized
from the smallest copy on disk (``images/`` or any ``images_<k>/``) that is at least that large in both
dimensions, and ``fx``, ``fy``, ``cx``, ``cy`` are scaled by the per-axis ratios. The resized copies are
written as PNG files into a cache folder outside the scene folder (``$XDG_CACHE_HOME/gnerf/llff/``, by default
``~/.cache/gnerf/llff/``), keyed by the source files and the size, and reused while complete.

The model reads ``metadata["near_plane"]``, ``metadata["far_plane"]`` and ``metadata["forward_facing"]``
to set its collider and switch to sampling linear in disparity (as GARF / NeRF do for LLFF).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Type

import numpy as np
import torch
from PIL import Image
from rich.markup import escape

from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE

from gnerf.errors import InputError
from gnerf.nerf.checks import near_far_planes
from gnerf.nerf.llff_images import (
    IMAGE_EXTENSIONS,
    checked_image_size,
    find_source_folder,
    list_image_files,
    resized_copies,
)

POSES_BOUNDS_FILENAME = "poses_bounds.npy"


# -- pose helpers (numpy, float64) ----------------------------------------------------------------------------


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def llff_to_opengl(poses_llff: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Split LLFF ``N x 3 x 5`` matrices into OpenGL camera-to-world ``N x 3 x 4`` poses and ``N x 3`` hwf.

    LLFF rotation columns are ``[down, right, back]``; OpenGL wants ``[right, up, back]``, i.e.
    ``[col1, -col0, col2]``. The world frame itself is left untouched.
    """
    down, right, back = poses_llff[:, :, 0], poses_llff[:, :, 1], poses_llff[:, :, 2]
    c2w = np.stack([right, -down, back, poses_llff[:, :, 3]], axis=-1)
    hwf = poses_llff[:, :, 4].copy()
    return c2w, hwf


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """Average camera-to-world pose (``3 x 4``) as in LLFF's ``poses_avg``.

    Centre = mean camera centre; backward axis = normalised sum of backward axes; the up axis is the sum of up
    axes orthogonalised against it (Gram-Schmidt via cross products).
    """
    center = c2w[:, :, 3].mean(axis=0)
    back = _normalize(c2w[:, :, 2].sum(axis=0))
    up_hint = c2w[:, :, 1].sum(axis=0)
    right = _normalize(np.cross(up_hint, back))
    up = _normalize(np.cross(back, right))
    return np.stack([right, up, back, center], axis=-1)


def _to_homogeneous(pose: np.ndarray) -> np.ndarray:
    out = np.eye(4, dtype=pose.dtype)
    out[:3, :4] = pose
    return out


def apply_transform(transform: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Left-multiply ``N x 3 x 4`` poses by a ``3 x 4`` rigid transform."""
    T = _to_homogeneous(transform)
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (c2w.shape[0], 1, 4))
    return (T @ np.concatenate([c2w, bottom], axis=1))[:, :3, :]


def holdout_indices(num_images: int, holdout_every: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train, eval) indices: eval views are ``i % holdout_every == 0`` as in the LLFF / NeRF code."""
    all_idx = np.arange(num_images)
    if holdout_every <= 0:
        return all_idx, all_idx
    eval_idx = all_idx[::holdout_every]
    train_idx = np.setdiff1d(all_idx, eval_idx)
    return train_idx, eval_idx


# -- config and parser -------------------------------------------------------------------------------------------


@dataclass
class LLFFDataParserConfig(DataParserConfig):
    """LLFF / BLEFF forward-facing scene (``poses_bounds.npy`` + ``images/`` or ``images_<factor>/``)."""

    _target: Type = field(default_factory=lambda: LLFF)
    """target class to instantiate"""
    data: Path = Path("data/nerf_llff_data/fern")
    """Scene folder containing ``poses_bounds.npy`` and the image folder(s)."""
    downscale_factor: int = 8
    """Read images from ``images_<downscale_factor>/``; if that folder is missing, fall back to ``images/``
    (intrinsics always follow the size of the files on disk). 1 means ``images/``."""
    holdout_every: int = 8
    """Every n-th view (index % n == 0) is held out for val/test; <= 0 disables the hold-out (all views in
    every split)."""
    bd_factor: Optional[float] = 0.75
    """Scale translations and bounds by ``1 / (min(bounds) * bd_factor)``; None disables the rescaling."""
    recenter: bool = True
    """Recentre the poses so that the average camera pose is the identity."""
    near_factor: float = 0.9
    """``near_plane = near_factor * min(scaled bounds)`` (NeRF's choice for non-NDC LLFF)."""
    far_factor: float = 1.0
    """``far_plane = far_factor * max(scaled bounds)``."""
    image_size: Optional[Tuple[int, int]] = None
    """(height, width) to train at, e.g. 480 640 as the paper does: the images are resized (Lanczos) from the
    smallest copy on disk (images/ or any images_<k>/) at least that large, and the intrinsics scaled; overrides
    downscale_factor. None: the files of images_<downscale_factor>/ as they are."""
    image_cache_dir: Optional[Path] = None
    """Where the resized copies of image_size are written (a subfolder per scene and size); never inside the
    scene folder. None: $XDG_CACHE_HOME/gnerf/llff (default ~/.cache/gnerf/llff)."""


@dataclass
class LLFF(DataParser):
    """LLFF-format forward-facing dataparser (also loads BLEFF scenes)."""

    config: LLFFDataParserConfig

    def __init__(self, config: LLFFDataParserConfig):
        super().__init__(config=config)

    # -- input checks --------------------------------------------------------------------------------------------

    def _load_poses_bounds(self) -> np.ndarray:
        data = Path(self.config.data)
        if not data.is_dir():
            raise InputError(
                f"LLFF data folder {data} does not exist (or is not a folder). Point --data at a scene folder "
                f"containing {POSES_BOUNDS_FILENAME} and images/ (e.g. data/nerf_llff_data/fern)."
            )
        path = data / POSES_BOUNDS_FILENAME
        if not path.is_file() and (data / "transforms_train.json").is_file():
            raise InputError(
                f"{data} holds transforms_train.json, not {POSES_BOUNDS_FILENAME}: it is a Blender-format scene. "
                f"Drop llff-data from the command (ns-train gaussian-nerf-esgd --data {data})."
            )
        if not path.is_file():
            raise InputError(
                f"Missing {path}. An LLFF/BLEFF scene needs {POSES_BOUNDS_FILENAME} (N x 17 poses and bounds) next "
                f"to its images/ folder; generate it with LLFF's imgs2poses.py or check the --data path."
            )
        try:
            arr = np.load(path)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(
                f"{path} is not a readable .npy array ({err}); regenerate it with LLFF's imgs2poses.py."
            ) from None
        if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
            raise InputError(
                f"{path} has shape {tuple(arr.shape)}, expected (N, 17) with N >= 1: one row per image holding a "
                f"flattened 3x5 [R|t|hwf] matrix and the near/far bounds. Regenerate it with LLFF's imgs2poses.py."
            )
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{path} contains non-finite values; regenerate it with LLFF's imgs2poses.py.")
        return arr

    def _find_image_folder(self) -> Path:
        data = Path(self.config.data)
        factor = int(self.config.downscale_factor)
        full = data / "images"
        looked_for: List[Path] = []
        if factor > 1:
            scaled = data / f"images_{factor}"
            looked_for.append(scaled)
            if scaled.is_dir():
                return scaled
        looked_for.append(full)
        if full.is_dir():
            if factor > 1:
                CONSOLE.print(
                    f"[bold yellow]LLFF: {looked_for[0]} not found; falling back to {full}. Images are used at their "
                    f"on-disk size and intrinsics are scaled to it (no on-the-fly resize by {factor}).[/bold yellow]"
                )
            return full
        raise InputError(
            f"No image folder found for LLFF scene {data}: looked for "
            + " and ".join(str(p) for p in looked_for)
            + ". Put the images in images/ (or pre-downscaled copies in images_<factor>/) or change "
            "--downscale-factor."
        )

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"Unknown split {split!r} for the LLFF dataparser; expected 'train', 'val' or 'test'.")
        cfg = self.config
        arr = self._load_poses_bounds()
        num_poses = arr.shape[0]
        poses_llff = arr[:, :15].reshape(-1, 3, 5)
        bounds = arr[:, 15:17].copy()

        target = checked_image_size(cfg.image_size)
        image_dir = self._find_image_folder() if target is None else find_source_folder(cfg.data, target)
        image_files = list_image_files(image_dir)
        if len(image_files) != num_poses:
            raise InputError(
                f"{Path(cfg.data) / POSES_BOUNDS_FILENAME} has {num_poses} pose rows but {image_dir} contains "
                f"{len(image_files)} images ({'/'.join(IMAGE_EXTENSIONS)}, hidden files ignored). Each image needs "
                f"exactly one row: remove extra images or regenerate {POSES_BOUNDS_FILENAME}."
            )

        c2w, hwf = llff_to_opengl(poses_llff)  # [down, right, back] -> OpenGL [right, up, back]
        c2w, bounds, transform, scale = self._normalise_poses(c2w, bounds)
        fx, fy, cx, cy, widths, heights = self._intrinsics(hwf, image_dir, image_files)
        if target is not None:
            image_files, (fx, fy, cx, cy, widths, heights) = self._at_image_size(
                target, image_dir, image_files, (fx, fy, cx, cy, widths, heights)
            )
        near_plane, far_plane = near_far_planes(cfg.near_factor, cfg.far_factor, bounds, cfg.data)
        scene_box = SceneBox(aabb=torch.from_numpy(self._scene_aabb(c2w, fx, fy, cx, cy, widths, heights, far_plane)))
        indices = self._split_indices(num_poses, split)

        def sel(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x[indices])).float()

        cameras = Cameras(
            camera_to_worlds=sel(c2w),
            fx=sel(fx)[:, None],
            fy=sel(fy)[:, None],
            cx=sel(cx)[:, None],
            cy=sel(cy)[:, None],
            width=torch.from_numpy(widths[indices]).long()[:, None],
            height=torch.from_numpy(heights[indices]).long()[:, None],
            camera_type=CameraType.PERSPECTIVE,
        )

        return DataparserOutputs(
            image_filenames=[image_files[i] for i in indices],
            cameras=cameras,
            scene_box=scene_box,
            alpha_color=None,
            dataparser_transform=torch.from_numpy(transform).float(),
            dataparser_scale=float(scale),
            metadata={
                "near_plane": near_plane,
                "far_plane": far_plane,
                "forward_facing": True,
                "bounds": sel(bounds),  # per-view scaled [near, far] depth bounds of this split
                "image_indices": torch.from_numpy(indices.copy()).long(),  # indices into poses_bounds.npy
            },
        )

    def _at_image_size(self, target, image_dir, image_files, intrinsics):
        """``(files, intrinsics)`` at ``--image-size`` ``target`` (height, width): the resized copies and the
        intrinsics ``(fx, fy, cx, cy, widths, heights)`` scaled by the per-axis ratios; as they are when the files
        have that size already."""
        fx, fy, cx, cy, widths, heights = intrinsics
        if (widths[0], heights[0]) == (target[1], target[0]):
            msg = f"LLFF: the images of {image_dir} are {target[0]} x {target[1]} already, read as they are"
            CONSOLE.print(escape(msg), soft_wrap=True)
            return image_files, intrinsics
        sx, sy = target[1] / widths, target[0] / heights
        files = resized_copies(self.config.data, self.config.image_cache_dir, image_dir, image_files, target)
        size = (np.full_like(widths, target[1]), np.full_like(heights, target[0]))
        return files, (fx * sx, fy * sy, cx * sx, cy * sy, *size)

    def _normalise_poses(self, c2w: np.ndarray, bounds: np.ndarray):
        """Steps 2 and 3 of the module docstring: ``(c2w, bounds, transform, scale)`` after scaling and recentring."""
        cfg = self.config
        if cfg.bd_factor is not None and cfg.bd_factor > 0:  # the nearest bound becomes 1 / bd_factor
            min_bound = float(bounds.min())
            if min_bound <= 0:
                raise InputError(
                    f"{Path(cfg.data) / POSES_BOUNDS_FILENAME} has a non-positive near bound ({min_bound}); cannot "
                    f"rescale by 1/(min(bounds)*bd_factor). Fix the bounds or set --bd-factor None."
                )
            scale = 1.0 / (min_bound * cfg.bd_factor)
        else:
            scale = 1.0
        # recentre: the average pose (computed before scaling; rotation-equivalent and the centre scales
        # linearly, so this equals LLFF's scale-then-recentre) is mapped to the identity.
        if cfg.recenter:
            transform = np.linalg.inv(_to_homogeneous(average_pose(c2w)))[:3, :]
        else:
            transform = np.eye(4)[:3, :]
        c2w = apply_transform(transform, c2w)
        c2w[:, :, 3] *= scale
        return c2w, bounds * scale, transform, scale

    def _intrinsics(self, hwf: np.ndarray, image_dir: Path, image_files: List[Path]):
        """``(fx, fy, cx, cy, widths, heights)``: hwf refers to the images the poses were estimated on,
        rescaled here to the files on disk."""
        num_poses = len(image_files)
        widths, heights = np.empty(num_poses), np.empty(num_poses)
        for i, f in enumerate(image_files):
            with Image.open(f) as im:  # reads the header only
                widths[i], heights[i] = im.size
        h0, w0, focal = hwf[:, 0], hwf[:, 1], hwf[:, 2]
        if np.any(h0 <= 0) or np.any(w0 <= 0) or np.any(focal <= 0):
            raise InputError(
                f"{Path(self.config.data) / POSES_BOUNDS_FILENAME} has a non-positive H, W or focal in its hwf column."
            )
        odd = [i for i in range(num_poses) if (widths[i], heights[i]) != (widths[0], heights[0])]
        if odd:
            i = odd[0]
            raise InputError(
                f"the images in {image_dir} differ in size: {image_files[0].name} is {int(widths[0])}x{int(heights[0])} "
                f"but {image_files[i].name} is {int(widths[i])}x{int(heights[i])}; an LLFF scene needs one image "
                "size: resize them to a common size."
            )
        sx, sy = widths / w0, heights / h0
        if np.any(np.abs(sx - sy) > 0.01 * np.maximum(sx, sy)):
            CONSOLE.print(
                f"[bold yellow]LLFF: images in {image_dir} do not have the aspect ratio of the poses' hwf column "
                f"({int(w0[0])}x{int(h0[0])}); fx and fy are scaled separately.[/bold yellow]"
            )
        return focal * sx, focal * sy, widths / 2.0, heights / 2.0, widths, heights

    def _split_indices(self, num_poses: int, split: str) -> np.ndarray:
        """The views of ``split`` (every ``holdout_every``-th held out for val and test)."""
        cfg = self.config
        train_idx, eval_idx = holdout_indices(num_poses, cfg.holdout_every)
        if len(train_idx) == 0:
            raise InputError(
                f"--holdout-every {cfg.holdout_every} holds out every one of the {num_poses} view(s) of {cfg.data}, "
                "leaving none to train on: use a value >= 2 with at least 2 views, or <= 0 to train and evaluate "
                "on all views."
            )
        if cfg.holdout_every <= 0 and split != "train":
            CONSOLE.print("[bold yellow]LLFF: holdout_every <= 0, evaluating on the training views.[/bold yellow]")
        return train_idx if split == "train" else eval_idx

    @staticmethod
    def _scene_aabb(
        c2w: np.ndarray,
        fx: np.ndarray,
        fy: np.ndarray,
        cx: np.ndarray,
        cy: np.ndarray,
        widths: np.ndarray,
        heights: np.ndarray,
        far: float,
    ) -> np.ndarray:
        """Axis-aligned box around all camera centres and the four image-corner points of every view at depth
        ``far`` (z-depth, like the LLFF bounds). The frustum between near and far is the convex hull of these
        points, so it lies inside the box. Computed over all views so train and eval share one box."""
        us = np.stack([np.zeros_like(widths), widths, widths, np.zeros_like(widths)], axis=1)  # N x 4
        vs = np.stack([np.zeros_like(heights), np.zeros_like(heights), heights, heights], axis=1)
        # OpenGL camera frame: x right, y up, looking down -z
        dirs = np.stack(
            [(us - cx[:, None]) / fx[:, None], -(vs - cy[:, None]) / fy[:, None], -np.ones_like(us)], axis=-1
        )  # N x 4 x 3
        corners = np.einsum("nij,nkj->nki", c2w[:, :, :3], dirs * far) + c2w[:, None, :, 3]
        pts = np.concatenate([c2w[:, :, 3], corners.reshape(-1, 3)], axis=0)
        return np.stack([pts.min(axis=0), pts.max(axis=0)]).astype(np.float32)
