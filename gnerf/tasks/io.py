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

__all__ = ["MAX_PIXELS", "check_size", "grid_coordinates", "read_image", "read_video", "resize_image"]

#: The most pixels an image (or a video frame) may have to be fitted, 8192 x 8192: every pixel is a training
#: coordinate held in memory with its target (20 bytes each, 1.3 GB at this size), and is predicted at every
#: evaluation.
MAX_PIXELS = 8192 * 8192


def check_size(size: Optional[Tuple[int, ...]]) -> None:
    """Raise :class:`~gnerf.errors.InputError` naming ``--size`` unless ``size`` is None or two positive integers
    whose product is at most :data:`MAX_PIXELS`."""
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise InputError(
            f"--size must be two positive integers, height and width (or None), got {' '.join(str(s) for s in size)}"
        )
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise InputError(
            f"--size {size[0]} {size[1]} asks for {size[0] * size[1]:,} pixels; at most {MAX_PIXELS:,} "
            "(8192 x 8192) can be fitted: choose a smaller --size"
        )


def _check_native_size(source: str, height: int, width: int) -> None:
    if height * width > MAX_PIXELS:
        raise InputError(
            f"{source} is {height} x {width} (height x width), {height * width:,} pixels; at most "
            f"{MAX_PIXELS:,} (8192 x 8192) can be fitted: pass a smaller --size to resize it"
        )


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


def read_image(path: PathLike, size: Optional[Tuple[int, int]] = (256, 256), limit: bool = True) -> Tensor:
    """Read an RGB image (PNG/JPEG/...) as a float ``[H, W, 3]`` tensor in [0, 1].

    Pillow reads it, turned upright as its EXIF orientation says, and converted to RGB from whatever it stores
    (CMYK, YCbCr, a palette, greyscale, 1-bit, with or without alpha; alpha is dropped); 16-bit greyscale keeps
    its precision until it is rounded to 8 bits. Formats Pillow cannot identify go to imageio.

    Args:
        path: the image file.
        size: ``(height, width)`` to resize to (Lanczos), or ``None`` to keep the file's size.
        limit: refuse, when ``size`` is None, an image of more than :data:`MAX_PIXELS` pixels (False: the caller
            resizes it).

    Raises:
        InputError: no such file, not an image, or one too large (see ``limit``).
    """
    p = require_file(path, "image")
    check = size is None and limit
    image = _read_with_pillow(p, check)
    if image is None:
        image = _read_with_imageio(p)
        if check:
            _check_native_size(f"image {str(p)!r}", *image.shape[:2])
    if size is not None:
        image = _resize(image, tuple(int(s) for s in size))
    return torch.from_numpy(image.astype(np.float32) / 255.0)


def _read_with_pillow(p, check: bool) -> Optional[np.ndarray]:
    """The image as ``uint8 [H, W, 3]``, or None when Pillow does not know the format."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            if check:
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1)
                _check_native_size(f"image {str(p)!r}", *((w, h) if orientation in (5, 6, 7, 8) else (h, w)))
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                grey = np.asarray(im)
                if grey.min() < 0 or grey.max() > 65535:
                    raise InputError(
                        f"image {str(p)!r}: unsupported pixel type (32-bit integers); use 8- or 16-bit images"
                    )
                return _rgb(grey.astype(np.uint16), str(p))
            if im.mode == "F":
                raise InputError(f"image {str(p)!r}: unsupported pixel type (32-bit floats); use 8- or 16-bit images")
            return np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError:
        raise InputError(
            f"image {str(p)!r} holds more pixels than Pillow decodes safely; at most {MAX_PIXELS:,} "
            "(8192 x 8192) can be fitted"
        ) from None
    except (OSError, ValueError, SyntaxError) as err:  # a truncated or damaged file of a known format
        raise InputError(f"cannot read image {str(p)!r}: {err} (the file is damaged or truncated)") from None


def _read_with_imageio(p) -> np.ndarray:
    import imageio.v3 as iio

    try:
        image = iio.imread(p)
    except Exception:  # imageio raises many types for undecodable files
        raise InputError(
            f"cannot read image {str(p)!r}: it is not an image file that Pillow or imageio can decode "
            "(PNG, JPEG, TIFF, ...); check the file"
        ) from None
    return _rgb(np.asarray(image), str(p))


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
            if size is None and not frames:
                _check_native_size(f"each frame of video {str(p)!r}", *frame.shape[:2])
            frames.append(_resize(frame, tuple(int(s) for s in size)) if size is not None else frame)
    except (OSError, RuntimeError, ValueError, StopIteration) as err:
        text = str(err)
        if "Input #0" in text and "Video:" not in text:  # ffmpeg opened the file but found no video stream
            raise InputError(f"video {str(p)!r} has no frames (ffmpeg finds no video stream in it)") from None
        raise InputError(
            f"cannot read video {str(p)!r}: {text.splitlines()[0] if text else type(err).__name__} "
            "(ffmpeg cannot decode it; check that it is a video file)"
        ) from None
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
