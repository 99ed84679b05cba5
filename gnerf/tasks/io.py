"""Input readers, coordinate grids and atomic output writers shared by the fitting tasks.

Every writer here writes a temporary file next to the target and ``os.replace``s it into place,
so an interrupted run never leaves a half-written output behind. Readers raise
``FileNotFoundError`` / ``ValueError`` that name the offending file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Collection, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

PathLike = Union[str, Path]

__all__ = [
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_image",
    "atomic_write_json",
    "atomic_write_video",
    "check_size",
    "grid_coordinates",
    "read_image",
    "read_video",
    "remove_if_unused",
    "require_file",
    "resize_image",
    "to_uint8",
]


def require_file(path: PathLike, what: str) -> Path:
    """``Path(path)`` if it is an existing file, else ``FileNotFoundError`` naming it and ``what`` it should be."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist or is not a file; check the path")
    return p


def _atomic_target(path: PathLike) -> Tuple[Path, str]:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    return target, tmp


def _replace(tmp: str, target: Path) -> None:
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, then ``os.replace``)."""
    target, tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_save_torch(obj: Any, path: PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def remove_if_unused(folder: PathLike, removable: Collection[str], up_to: PathLike) -> None:
    """Undo a failed start: if ``folder`` holds nothing but files named in ``removable``, delete them, then
    ``folder`` and its parents while they are empty and strictly below ``up_to`` (so ``folder`` itself stays
    when it is ``up_to``). Errors are ignored."""
    folder, top = Path(folder).resolve(), Path(up_to).resolve()
    try:
        entries = os.listdir(folder)
        if set(entries) - set(removable):
            return
        for name in entries:
            os.unlink(folder / name)
        for path in (folder, *folder.parents):
            if path == top or top not in path.parents:
                break
            os.rmdir(path)
    except OSError:
        pass


def to_uint8(x: Union[Tensor, np.ndarray]) -> np.ndarray:
    """Values in [0, 1] (clipped) to ``uint8`` [0, 255]."""
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def atomic_write_image(path: PathLike, image: Union[Tensor, np.ndarray]) -> Path:
    """Write an ``[H, W(, C)]`` image (float in [0, 1] or ``uint8``) as PNG/JPEG, atomically."""
    import imageio.v3 as iio

    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    return atomic_write_bytes(path, iio.imwrite("<bytes>", arr, extension=Path(path).suffix or ".png"))


def atomic_write_video(path: PathLike, frames: Iterator[np.ndarray], fps: float) -> Path:
    """Encode ``uint8`` ``[H, W, 3]`` frames as H.264 mp4, atomically; returns the path.

    Odd frame sizes are encoded as yuv444p (yuv420p needs even sizes); nothing is resized.
    """
    import imageio.v2 as iio2

    target, tmp = _atomic_target(path)
    try:
        writer = None
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                pix = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
                writer = iio2.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                         pixelformat=pix, macro_block_size=1)
            writer.append_data(frame)
        if writer is None:
            raise ValueError(f"no frames to write to {str(target)!r}")
        writer.close()
        _replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def check_size(size: Optional[Tuple[int, ...]]) -> None:
    """Raise ``ValueError`` naming ``--size`` unless ``size`` is None or two positive integers."""
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"--size must be two positive integers, height and width (or None), "
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
        raise ValueError(f"{source}: expected an RGB(A) or greyscale image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        if image.dtype != np.uint16:
            raise ValueError(f"{source}: unsupported pixel type {image.dtype}; use 8- or 16-bit images")
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
        raise ValueError(f"cannot read image {str(p)!r}: {err}") from None
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
        FileNotFoundError: no such file.
        ValueError: ffmpeg cannot decode it, or it has no frames.
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
            raise ValueError(f"video {str(p)!r} has no frames (ffmpeg finds no video stream in it)") from None
        raise ValueError(f"cannot read video {str(p)!r}: {text.splitlines()[0] if text else type(err).__name__} "
                         "(ffmpeg cannot decode it; check that it is a video file)") from None
    if not frames:
        raise ValueError(f"video {str(p)!r} has no frames")
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0), fps


def grid_coordinates(*sizes: int) -> Tensor:
    """``[prod(sizes), len(sizes)]`` coordinates of a grid, each axis ``linspace(-1, 1, size)``.

    The last axis varies fastest, so the rows follow a C-ordered ``[*sizes]`` array; the columns
    are in the order of ``sizes``.
    """
    axes = [torch.linspace(-1.0, 1.0, s) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))

