"""A small procedural scene rendered by analytic ray casting, written in Blender (nerf_synthetic) format.

The scene needs no download: :func:`make_blender_scene` renders it with numpy in a few seconds and
writes ``transforms_{train,val,test}.json`` plus RGBA PNGs that nerfstudio's ``blender-data``
dataparser reads as it reads ``lego``.

The objects, the light and the Lambertian shading with hard shadows are in
:mod:`gnerf.scenes.geometry` (see :data:`SCENE_OBJECTS`); this module holds the cameras, the
pinhole renderer and the writer. Each pixel averages ``supersample**2`` rays on a regular grid;
alpha is the fraction that hits an object and the RGB is the straight (not premultiplied) mean
colour of those hits, so compositing over white reproduces an anti-aliased render on a white
background.

Cameras follow the Blender / nerfstudio convention: ``transform_matrix`` is camera-to-world in the
OpenGL convention (the camera looks down its -z axis, +y is up in the image), the principal
point is the image centre and pixel (row i, column j) covers [j, j+1] x [i, i+1] in image
coordinates. They sit at :data:`CAMERA_RADIUS` (that of the real Blender scenes, so near 2 /
far 6 bracket the objects) on the upper hemisphere, look at the origin, and are deterministic
given the seed: ``train`` is a Fibonacci spiral over elevations 8-82 degrees, ``val`` is drawn
uniformly over the same band, and ``test`` is an evenly spaced ring at 30 degrees elevation,
so test views are novel. The seed only moves cameras; the objects are fixed.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Sequence, Union

import imageio.v2 as imageio
import numpy as np

from gnerf.errors import InputError
from gnerf.scenes.geometry import AMBIENT, LIGHT_DIRECTION, SCENE_OBJECTS, Array, Box, SceneObject, Sphere, Torus, shade

__all__ = [
    "AMBIENT",
    "CAMERA_ANGLE_X",
    "CAMERA_RADIUS",
    "LIGHT_DIRECTION",
    "SCENE_OBJECTS",
    "Box",
    "Sphere",
    "Torus",
    "camera_poses",
    "look_at",
    "make_blender_scene",
    "render_view",
]

CAMERA_ANGLE_X = 0.6911112070083618
"""Horizontal field of view in radians (that of the Blender ``lego`` scene, about 39.6 degrees)."""
CAMERA_RADIUS = 4.031128874149275
"""Distance of every generated camera from the origin (that of the Blender scenes)."""

SCENE_VERSION = 1
"""Bump when the objects, lighting or camera layout change, so stored scenes are re-rendered."""

_TRAIN_ELEVATION_DEG = (8.0, 82.0)
_TEST_ELEVATION_DEG = 30.0
_RAYS_PER_CHUNK = 1 << 17


def look_at(
    position: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0), up: Sequence[float] = (0.0, 0.0, 1.0)
) -> Array:
    """Camera-to-world 4x4 matrix (OpenGL convention) of a camera at ``position`` looking at ``target``.

    Raises:
        ValueError: if the viewing direction is (nearly) parallel to ``up`` or position == target.
    """
    position, target, up = (np.asarray(v, dtype=np.float64) for v in (position, target, up))
    back = position - target
    if np.linalg.norm(back) < 1e-9:
        raise ValueError("look_at: position and target coincide")
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("look_at: the viewing direction is parallel to `up`; pass another `up` vector")
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, position
    return c2w


def _on_sphere(elevation: Array, azimuth: Array) -> Array:
    """Points at CAMERA_RADIUS for elevation / azimuth angles in radians, [N, 3]."""
    return CAMERA_RADIUS * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=1
    )


def camera_poses(split: str, count: int, seed: int = 0) -> Array:
    """Camera-to-world matrices [count, 4, 4] of one split of the generated scene.

    ``train``: a Fibonacci spiral, uniform in area over elevations 8-82 degrees, turned by a
    seeded azimuth. ``val``: uniform random over the same band. ``test``: an evenly spaced ring
    at 30 degrees elevation with a seeded azimuth offset. Each split draws from its own stream of
    ``seed``, so changing one split's count does not move the others.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[("train", "val", "test").index(split)])
    lo, hi = (math.sin(math.radians(e)) for e in _TRAIN_ELEVATION_DEG)
    if split == "train":
        heights = lo + (hi - lo) * (np.arange(count) + 0.5) / count
        azimuth = rng.uniform(0.0, 2.0 * np.pi) + np.arange(count) * np.pi * (3.0 - math.sqrt(5.0))
    elif split == "val":
        heights = rng.uniform(lo, hi, count)
        azimuth = rng.uniform(0.0, 2.0 * np.pi, count)
    else:
        heights = np.full(count, math.sin(math.radians(_TEST_ELEVATION_DEG)))
        azimuth = rng.uniform(0.0, 2.0 * np.pi) + 2.0 * np.pi * np.arange(count) / count
    positions = _on_sphere(np.arcsin(heights), azimuth)
    return np.stack([look_at(p) for p in positions])


def render_view(
    camera_to_world: Array,
    *,
    width: int,
    height: int,
    camera_angle_x: float = CAMERA_ANGLE_X,
    supersample: int = 3,
    objects: Sequence[SceneObject] = SCENE_OBJECTS,
) -> Array:
    """Render one pinhole camera, returning straight-alpha RGBA [height, width, 4] float32 in [0, 1].

    Args:
        camera_to_world: 3x4 or 4x4 camera-to-world matrix (OpenGL convention, as in Blender's
            ``transform_matrix``).
        width, height: image size in pixels.
        camera_angle_x: horizontal field of view in radians; pixels are square and the principal
            point is the image centre (focal = 0.5 * width / tan(0.5 * camera_angle_x)).
        supersample: rays per pixel along each axis (``supersample**2`` per pixel).
        objects: what to render; the demo scene by default.

    Background pixels have alpha 0 and RGB 0.
    """
    c2w = np.asarray(camera_to_world, dtype=np.float64)
    if c2w.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"camera_to_world must be 3x4 or 4x4, got shape {c2w.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if not 0.0 < camera_angle_x < math.pi:
        raise ValueError(f"camera_angle_x must be in (0, pi) radians, got {camera_angle_x}")
    focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = ((np.arange(width)[:, None] + offsets).reshape(-1) - 0.5 * width) / focal
    ys = -((np.arange(height)[:, None] + offsets).reshape(-1) - 0.5 * height) / focal
    yy, xx = np.meshgrid(ys, xs, indexing="ij")  # [height*ss, width*ss], rows then sub-rows
    dirs_cam = np.stack([xx, yy, -np.ones_like(xx)], axis=-1).reshape(-1, 3)
    dirs = dirs_cam @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
    colour, hit = np.empty_like(dirs), np.empty(len(dirs), dtype=bool)
    for start in range(0, len(dirs), _RAYS_PER_CHUNK):  # bounds memory for large images
        chunk = slice(start, start + _RAYS_PER_CHUNK)
        colour[chunk], hit[chunk] = shade(objects, origins[chunk], dirs[chunk])
    shape = (height, supersample, width, supersample)
    coverage = hit.reshape(shape).mean(axis=(1, 3))
    colour_sum = (colour * hit[:, None]).reshape(*shape, 3).sum(axis=(1, 3))
    hits = hit.reshape(shape).sum(axis=(1, 3))
    rgb = colour_sum / np.maximum(hits, 1)[..., None]
    return np.concatenate([rgb, coverage[..., None]], axis=-1).astype(np.float32)


def _write_png(path: Path, rgba: Array) -> None:
    """Write float RGBA in [0, 1] as an 8-bit RGBA PNG."""
    imageio.imwrite(path, np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8))


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _read_params(out_dir: Path) -> dict | None:
    """The parameters a complete generated scene in ``out_dir`` was made with, else None."""
    try:
        params = json.loads((out_dir / "scene.json").read_text())
    except (OSError, ValueError):
        return None
    complete = all((out_dir / f"transforms_{split}.json").is_file() for split in ("train", "val", "test"))
    return params if complete and isinstance(params, dict) else None


def make_blender_scene(
    out_dir: Union[str, Path],
    *,
    image_size: int = 64,
    num_train: int = 50,
    num_val: int = 5,
    num_test: int = 10,
    seed: int = 0,
    supersample: int = 3,
    overwrite: bool = False,
) -> Path:
    """Render the procedural scene into ``out_dir`` in Blender (nerf_synthetic) format and return its path.

    Writes ``transforms_{train,val,test}.json``, ``{train,val,test}/r_<i>.png`` (square RGBA,
    ``image_size`` pixels, alpha = coverage) and ``scene.json`` (the parameters below). Everything
    is rendered into a hidden temporary folder next to ``out_dir`` and renamed into place at the
    end, so ``out_dir`` never holds a partial scene; a failure removes the temporary folder.

    If ``out_dir`` already holds a complete scene made with the same parameters, nothing is
    rendered unless ``overwrite`` is true. A generated scene with other parameters is replaced.
    A folder that is not a generated scene (no ``scene.json``) is never deleted: if it is not
    empty, :class:`~gnerf.errors.InputError` is raised, as for an option out of range.

    Args:
        out_dir: target folder (its parent is created if needed).
        image_size: width and height in pixels (>= 8).
        num_train: number of training views (>= 1).
        num_val: number of validation views (>= 1).
        num_test: number of test views, a ring at 30 degrees elevation (>= 1).
        seed: camera placement seed (>= 0); see :func:`camera_poses`.
        supersample: rays per pixel along each axis for anti-aliasing (>= 1).
        overwrite: re-render even if a matching scene is present.
    """
    params = _scene_params(image_size, num_train, num_val, num_test, seed, supersample)
    out_dir = Path(out_dir)
    existing = _read_params(out_dir)
    if existing == params and not overwrite:
        return out_dir
    replace = out_dir.exists()
    if replace and (existing is None or existing.get("generator") != params["generator"]):
        _check_empty(out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        counts = {"train": num_train, "val": num_val, "test": num_test}
        for split, count in counts.items():
            _write_split(tmp, split, count, seed, image_size, supersample)
        (tmp / "scene.json").write_text(json.dumps(params, indent=2) + "\n")
        _install(tmp, out_dir, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _scene_params(image_size: int, num_train: int, num_val: int, num_test: int, seed: int, supersample: int) -> dict:
    """Check :func:`make_blender_scene`'s options and return them as written to ``scene.json``."""
    _check_int("image_size", image_size, 8)
    _check_int("num_train", num_train, 1)
    _check_int("num_val", num_val, 1)
    _check_int("num_test", num_test, 1)
    _check_int("seed", seed, 0)
    _check_int("supersample", supersample, 1)
    return {
        "generator": "gnerf.scenes.procedural",
        "version": SCENE_VERSION,
        "image_size": int(image_size),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "seed": int(seed),
        "supersample": int(supersample),
    }


def _check_empty(out_dir: Path) -> None:
    """Refuse to replace ``out_dir``, which is not a generated scene, unless it is an empty folder."""
    if not out_dir.is_dir() or any(out_dir.iterdir()):
        raise InputError(
            f"{out_dir} exists and is not a generated procedural scene (no complete scene.json); "
            "remove it or choose another out_dir"
        )


def _write_split(tmp: Path, split: str, count: int, seed: int, image_size: int, supersample: int) -> None:
    """Render one split's views into ``tmp/<split>/r_<i>.png`` and write ``tmp/transforms_<split>.json``."""
    (tmp / split).mkdir()
    frames = []
    for i, c2w in enumerate(camera_poses(split, count, seed)):
        rgba = render_view(c2w, width=image_size, height=image_size, supersample=supersample)
        _write_png(tmp / split / f"r_{i}.png", rgba)
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
    meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
    (tmp / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2) + "\n")


def _install(tmp: Path, out_dir: Path, replace: bool) -> None:
    """Move the finished scene ``tmp`` to ``out_dir``, swapping out a previous one if ``replace``."""
    if not replace:
        tmp.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex}")
    out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old)
