"""The image folders of an LLFF scene: listing them, and ``--image-size``'s resized copies in a cache folder.

``llff-data --image-size H W`` trains at H x W (the paper's forward-facing protocol resizes to 480 x 640): the
smallest copy on disk at least that large (``images/`` or an ``images_<k>/``) is resized with a downsampling filter
into a cache folder outside the scene (``$XDG_CACHE_HOME/gnerf/llff/<scene>-<hash>/`` or ``--image-cache-dir``),
written atomically and reused while complete; the dataparser scales the intrinsics by the same ratios.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import List, Optional, Tuple

from PIL import Image
from rich.markup import escape

from nerfstudio.utils.rich_utils import CONSOLE

from gnerf.errors import InputError
from gnerf.files import atomic_write_bytes, atomic_write_json

__all__ = [
    "CACHE_COMPLETE_FILENAME",
    "IMAGE_EXTENSIONS",
    "RESIZE_FILTER",
    "cache_root",
    "checked_image_size",
    "find_source_folder",
    "list_image_files",
    "resized_copies",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
"""Image file extensions that are picked up (compared case-insensitively)."""

RESIZE_FILTER = Image.Resampling.LANCZOS
"""Filter of the ``image_size`` resize (a downsampling one: every source copy is at least the target size)."""

CACHE_COMPLETE_FILENAME = "complete.json"
"""Written last into a resize cache folder; the folder is reused only while it exists."""

_IMAGE_SIZE_OPTION = "llff-data --image-size"


def list_image_files(folder: Path) -> List[Path]:
    """Sorted image files (png/jpg/jpeg, any case) directly inside ``folder``; hidden files are ignored."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _is_positive_int(value) -> bool:
    try:
        return not isinstance(value, bool) and float(value).is_integer() and float(value) > 0
    except (TypeError, ValueError):
        return False


def checked_image_size(size) -> Optional[Tuple[int, int]]:
    """``--image-size`` as ``(height, width)`` ints, None when unset; refuses anything but two positive ints."""
    if size is None:
        return None
    values = list(size) if isinstance(size, (tuple, list)) else [size]
    if len(values) != 2 or not all(_is_positive_int(v) for v in values):
        raise InputError(
            f"{_IMAGE_SIZE_OPTION} {' '.join(str(v) for v in values)} is not a size: give two positive integers, "
            "height then width, e.g. --image-size 480 640 (the paper's forward-facing size)."
        )
    return int(values[0]), int(values[1])


def find_source_folder(data: Path, target: Tuple[int, int]) -> Path:
    """The smallest image folder on disk (``images/`` or ``images_<k>/``) at least ``target`` in both
    dimensions, whose aspect ratio is within 1% of the target's."""
    data = Path(data)
    height, width = target
    folders = [data / "images"]
    if data.is_dir():
        folders += sorted(
            (p for p in data.iterdir() if p.is_dir() and p.name.startswith("images_") and p.name[7:].isdigit()),
            key=lambda p: int(p.name[7:]),
        )
    copies: List[Tuple[Path, int, int]] = []  # (folder, height, width) of each folder holding images
    for folder in folders:
        files = list_image_files(folder) if folder.is_dir() else []
        if files:
            with Image.open(files[0]) as im:  # reads the header only
                copies.append((folder, im.size[1], im.size[0]))
    if not copies:
        raise InputError(
            f"No image folder found for LLFF scene {data}: looked for {data / 'images'} and images_<k>/ "
            "folders next to it. Put the images in images/ (or downscaled copies in images_<k>/)."
        )
    large = [c for c in copies if c[1] >= height and c[2] >= width]
    if not large:
        biggest = max(copies, key=lambda c: c[1] * c[2])
        listing = ", ".join(f"{f.name}/ {h} x {w}" for f, h, w in copies)
        raise InputError(
            f"{_IMAGE_SIZE_OPTION} {height} {width} is larger than every copy of the images of {data} on disk "
            f"({listing}; height x width): images are only downsampled, so pick a size of at most "
            f"{biggest[1]} x {biggest[2]} or add a larger copy to images/."
        )
    folder, h, w = min(large, key=lambda c: (c[1] * c[2], int(c[0].name[7:] or 1)))
    if abs((width / height) / (w / h) - 1.0) > 0.01:
        raise InputError(
            f"{_IMAGE_SIZE_OPTION} {height} {width} (height x width) has aspect ratio {width / height:.4g} "
            f"but the images of {data} are {h} x {w} ({folder.name}/), aspect ratio {w / h:.4g}; pick a size "
            f"within 1% of their aspect ratio, e.g. --image-size {height} {max(1, round(height * w / h))}."
        )
    return folder


def cache_root(data: Path, cache_dir: Optional[Path]) -> Path:
    """The folder holding the resize caches: ``cache_dir``, else ``$XDG_CACHE_HOME/gnerf/llff``."""
    if cache_dir is not None:
        root = Path(cache_dir).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        root = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "gnerf" / "llff"
    scene = data
    data = Path(data).resolve()
    if root.resolve() == data or data in root.resolve().parents:
        raise InputError(
            f"the resize cache {root} is inside the scene folder {scene}, and gnerf never writes into "
            "a scene folder: set llff-data --image-cache-dir to a folder outside it."
        )
    return root


def resized_copies(
    data: Path, cache_dir: Optional[Path], image_dir: Path, image_files: List[Path], target: Tuple[int, int]
) -> List[Path]:
    """PNG copies of ``image_files`` resized to ``target`` (height, width) in the cache folder of these source
    files and size, written atomically and reused when the folder is complete."""
    height, width = target
    key = {
        "version": 1,
        "filter": RESIZE_FILTER.name,
        "size": [height, width],
        "files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in image_files],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    scene = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(data).resolve().name)
    folder = cache_root(data, cache_dir) / f"{scene or 'scene'}-{digest}"
    names = [f.stem + ".png" for f in image_files]
    if len({n.lower() for n in names}) < len(names):  # e.g. a.jpg and a.png
        names = [f.name + ".png" for f in image_files]
    outputs = [folder / n for n in names]
    reused = (folder / CACHE_COMPLETE_FILENAME).is_file() and all(p.is_file() for p in outputs)
    if not reused:
        for src, dst in zip(image_files, outputs):
            if dst.is_file():  # written atomically by an interrupted run of the same key: complete
                continue
            with Image.open(src) as im:
                if im.mode not in ("RGB", "RGBA", "L"):
                    im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
                small = im.resize((width, height), resample=RESIZE_FILTER)
            buf = io.BytesIO()
            small.save(buf, format="PNG")
            atomic_write_bytes(dst, buf.getvalue())
        atomic_write_json(folder / CACHE_COMPLETE_FILENAME, {**key, "source": str(image_dir), "outputs": names})
    CONSOLE.print(
        escape(
            f"LLFF: {len(image_files)} images of {image_dir} resized to {height} x {width} (height x width), "
            f"{'reused from' if reused else 'cached in'} {folder}"
        ),
        soft_wrap=True,
    )
    return outputs
