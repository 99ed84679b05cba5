"""Files both front ends write: atomic writers and the clean-up of a failed start.

Every writer here writes a temporary file next to the target and ``os.replace``s it into place,
so an interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Collection, Iterator, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from gnerf.errors import InputError

PathLike = Union[str, Path]

__all__ = [
    "PathLike",
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_image",
    "atomic_write_json",
    "atomic_write_video",
    "remove_if_unused",
    "require_file",
    "to_uint8",
]


def require_file(path: PathLike, what: str) -> Path:
    """``Path(path)`` if it is an existing file, else :class:`~gnerf.errors.InputError` naming it and ``what`` it is."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist or is not a file; check the path")
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
