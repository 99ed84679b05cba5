"""Input readers and coordinate grids of the fitting tasks.

Readers raise :class:`~gnerf.errors.InputError` naming the offending file.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from gnerf.errors import InputError
from gnerf.files import PathLike, require_file, to_uint8

__all__ = ["check_size", "grid_coordinates", "read_image", "read_video", "resize_image"]


def check_size(size: Optional[Tuple[int, ...]]) -> None:
    """Raise :class:`~gnerf.errors.InputError` naming ``--size`` unless ``size`` is None or two positive integers."""
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise InputError(f"--size must be two positive integers, height and width (or None), "
                         f"got {' '.join(str(s) for s in size)}")


def resize_image(image: Tensor, size: Tuple[int, int]) -> Tensor:
    """An image read by :func:`read_image` (float ``[H, W, 3]``, 8-bit steps) resized to ``(height, width)``
    exactly as :func:`read_image` resizes it."""
    return torch.from_numpy(_resize(to_uint8(image), tuple(int(s) for s in size)).astype(np.float32) / 255.0)


def _resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))


def _rgb(image: np.ndarray, source: str) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"{source}: expected an RGB(A) or greyscale image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        if image.dtype != np.uint16:
            raise InputError(f"{source}: unsupported pixel type {image.dtype}; use 8- or 16-bit images")
        image = (image.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def read_image(path: PathLike, size: Optional[Tuple[int, int]] = (256, 256)) -> Tensor:
    """Read an RGB image (PNG/JPEG/...) as a float ``[H, W, 3]`` tensor in [0, 1].

    Args:
        path: the image file; alpha is dropped, greyscale becomes RGB.
        size: ``(height, width)`` to resize to (Lanczos), or ``None`` to keep the file's size.
    """
    import imageio.v3 as iio

    p = require_file(path, "image")
    try:
        image = iio.imread(p)
    except Exception as err:  # imageio raises many types for undecodable files
        raise InputError(f"cannot read image {str(p)!r}: {err}") from None
    image = _rgb(np.asarray(image), str(p))
    if size is not None:
        image = _resize(image, tuple(int(s) for s in size))
    return torch.from_numpy(image.astype(np.float32) / 255.0)


def read_video(
    path: PathLike, max_frames: Optional[int] = None, size: Optional[Tuple[int, int]] = None
) -> Tuple[Tensor, float]:
    """Read a video frame by frame as a float ``[T, H, W, 3]`` tensor in [0, 1], and its frame rate.

    Args:
        path: an mp4 (anything ffmpeg decodes).
        max_frames: keep only the first ``max_frames`` frames (``None``: all).
        size: ``(height, width)`` to resize every frame to, or ``None`` for the native size.

    Raises:
        InputError: no such file, ffmpeg cannot decode it, or it has no frames.
    """
    import imageio.v3 as iio

    p = require_file(path, "video")
    frames = []
    fps = 25.0
    try:
        fps = float(iio.immeta(p, plugin="FFMPEG").get("fps") or fps)
        for frame in iio.imiter(p, plugin="FFMPEG"):
            if max_frames is not None and len(frames) >= max_frames:
                break
            frame = _rgb(np.asarray(frame), str(p))
            frames.append(_resize(frame, tuple(int(s) for s in size)) if size is not None else frame)
    except (OSError, RuntimeError, ValueError, StopIteration) as err:
        text = str(err)
        if "Input #0" in text and "Video:" not in text:  # ffmpeg opened the file but found no video stream
            raise InputError(f"video {str(p)!r} has no frames (ffmpeg finds no video stream in it)") from None
        raise InputError(f"cannot read video {str(p)!r}: {text.splitlines()[0] if text else type(err).__name__} "
                         "(ffmpeg cannot decode it; check that it is a video file)") from None
    if not frames:
        raise InputError(f"video {str(p)!r} has no frames")
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0), fps


def grid_coordinates(*sizes: int) -> Tensor:
    """``[prod(sizes), len(sizes)]`` coordinates of a grid, each axis ``linspace(-1, 1, size)``.

    The last axis varies fastest, so the rows follow a C-ordered ``[*sizes]`` array; the columns
    are in the order of ``sizes``.
    """
    axes = [torch.linspace(-1.0, 1.0, s) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))

