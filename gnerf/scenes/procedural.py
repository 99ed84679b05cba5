"""A small procedural scene rendered by analytic ray casting, written in Blender (nerf_synthetic) format.

The scene needs no download: :func:`make_blender_scene` renders it with numpy in a few seconds and
writes ``transforms_{train,val,test}.json`` plus RGBA PNGs that nerfstudio's ``blender-data``
dataparser reads as it reads ``lego``.

Objects (world frame, +z up, all inside [-1, 1]^3; see :data:`SCENE_OBJECTS`):

================  ======  ==============================================================
name              colour  geometry
================  ======  ==============================================================
``red_sphere``    red     sphere, centre (-0.45, -0.35, -0.30), radius 0.45
``green_sphere``  green   sphere, centre (0.50, 0.45, 0.15), radius 0.35
``blue_box``      blue    box, centre (0.45, -0.45, -0.45), half sizes (0.30, 0.25, 0.30),
                          turned 30 degrees about z
``yellow_torus``  yellow  torus, centre (-0.35, 0.45, 0.05), radii 0.40 / 0.13, its axis
                          tilted 35 degrees from z about x
``purple_sphere`` purple  sphere, centre (0.30, -0.20, 0.70), radius 0.20 (the highest
                          object: nothing else reaches z = 0.7, so cameras above that
                          height always see its centre)
================  ======  ==============================================================

Shading is Lambertian: ``albedo * (AMBIENT + (1 - AMBIENT) * max(0, n . L) * lit)`` with one
directional light ``L`` (:data:`LIGHT_DIRECTION`) and hard shadows (``lit`` is 0 where a shadow
ray hits another object). The shading does not depend on the viewpoint, so every view is
consistent. Each pixel averages ``supersample**2`` rays on a regular grid; alpha is the fraction
that hits an object and the RGB is the straight (not premultiplied) mean colour of those hits,
so compositing over white reproduces an anti-aliased render on a white background.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import imageio.v2 as imageio
import numpy as np

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
LIGHT_DIRECTION = tuple(np.array([0.5, -0.35, 0.8]) / np.linalg.norm([0.5, -0.35, 0.8]))
"""Unit vector pointing from the scene towards the directional light (world frame)."""
AMBIENT = 0.35
"""Fraction of the albedo every surface shows even when unlit or in shadow."""

SCENE_VERSION = 1
"""Bump when the objects, lighting or camera layout change, so stored scenes are re-rendered."""

_TRAIN_ELEVATION_DEG = (8.0, 82.0)
_TEST_ELEVATION_DEG = 30.0
_HIT_EPS = 1e-6
_SHADOW_OFFSET = 1e-3
_RAYS_PER_CHUNK = 1 << 17

Array = np.ndarray
Vec3 = tuple[float, float, float]


def _rotation(axis: str, degrees: float) -> Array:
    """3x3 rotation about a world axis ``"x"`` or ``"z"``; its columns are the rotated frame's axes."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _sphere_span(origins: Array, dirs: Array, center: Array, radius: float) -> tuple[Array, Array]:
    """Ray parameters where unit-direction rays enter and leave a sphere (both inf on a miss)."""
    oc = origins - center
    b = np.einsum("ij,ij->i", oc, dirs)
    disc = b * b - (np.einsum("ij,ij->i", oc, oc) - radius * radius)
    root = np.sqrt(np.maximum(disc, 0.0))
    miss = disc < 0
    return np.where(miss, np.inf, -b - root), np.where(miss, np.inf, -b + root)


def _first_positive(t_near: Array, t_far: Array) -> Array:
    """The nearest of two ray parameters in front of the origin, inf when neither is."""
    return np.where(t_near > _HIT_EPS, t_near, np.where(t_far > _HIT_EPS, t_far, np.inf))


@dataclass(frozen=True)
class Sphere:
    """A Lambertian sphere."""

    name: str
    albedo: Vec3
    center: Vec3
    radius: float

    def intersect(self, origins: Array, dirs: Array) -> Array:
        """Distance along each unit-direction ray to the first hit in front of it, inf on a miss."""
        return _first_positive(*_sphere_span(origins, dirs, np.asarray(self.center), self.radius))

    def normal(self, points: Array) -> Array:
        """Outward unit normals at surface points."""
        return (points - np.asarray(self.center)) / self.radius

    def bounding_radius(self) -> float:
        """Radius of an origin-centred ball that contains the object."""
        return float(np.linalg.norm(self.center)) + self.radius


@dataclass(frozen=True)
class Box:
    """A Lambertian box with half sizes ``half_size`` along its axes, turned ``yaw_deg`` about z."""

    name: str
    albedo: Vec3
    center: Vec3
    half_size: Vec3
    yaw_deg: float

    def _frame(self) -> Array:
        return _rotation("z", self.yaw_deg)

    def intersect(self, origins: Array, dirs: Array) -> Array:
        """Distance along each unit-direction ray to the first hit in front of it, inf on a miss."""
        frame = self._frame()
        o = (origins - np.asarray(self.center)) @ frame
        d = dirs @ frame
        half = np.asarray(self.half_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o) / d
            t2 = (half - o) / d
        # A ray parallel to a slab gives +-inf (or nan when it starts on the slab's boundary);
        # nan_to_num keeps the inequalities right for rays strictly inside or outside the slab.
        t1 = np.nan_to_num(t1, nan=-np.inf, posinf=np.inf, neginf=-np.inf)
        t2 = np.nan_to_num(t2, nan=np.inf, posinf=np.inf, neginf=-np.inf)
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        t = _first_positive(t_near, t_far)
        return np.where(t_near <= t_far, t, np.inf)

    def normal(self, points: Array) -> Array:
        """Outward unit normals at surface points (the face whose slab the point is closest to)."""
        frame = self._frame()
        local = (points - np.asarray(self.center)) @ frame
        scaled = local / np.asarray(self.half_size)
        axis = np.abs(scaled).argmax(axis=1)
        n_local = np.zeros_like(local)
        n_local[np.arange(len(local)), axis] = np.sign(scaled[np.arange(len(local)), axis])
        return n_local @ frame.T

    def bounding_radius(self) -> float:
        """Radius of an origin-centred ball that contains the object."""
        return float(np.linalg.norm(self.center) + np.linalg.norm(self.half_size))


@dataclass(frozen=True)
class Torus:
    """A Lambertian torus (ring radius ``major``, tube radius ``minor``) whose axis is z tilted ``tilt_deg`` about x.

    Rays are intersected by sphere tracing its exact signed distance inside its bounding sphere.
    """

    name: str
    albedo: Vec3
    center: Vec3
    major: float
    minor: float
    tilt_deg: float

    _STEPS = 96
    _CONVERGED = 1e-5
    _HIT_TOLERANCE = 1e-4

    def _local(self, points: Array) -> Array:
        return (points - np.asarray(self.center)) @ _rotation("x", self.tilt_deg)

    def _distance(self, local: Array) -> Array:
        ring = np.hypot(local[:, 0], local[:, 1]) - self.major
        return np.hypot(ring, local[:, 2]) - self.minor

    def intersect(self, origins: Array, dirs: Array) -> Array:
        """Distance along each unit-direction ray to the first hit in front of it, inf on a miss."""
        t_in, t_out = _sphere_span(origins, dirs, np.asarray(self.center), self.major + self.minor)
        live = np.flatnonzero(np.isfinite(t_out) & (t_out > _HIT_EPS))  # rays that reach the bounding sphere
        o, d = self._local(origins[live]), dirs[live] @ _rotation("x", self.tilt_deg)
        t, t_end = np.maximum(t_in[live], _HIT_EPS), t_out[live]
        dist = np.full(len(live), np.inf)
        marching = np.arange(len(live))
        for _ in range(self._STEPS):
            if not len(marching):
                break
            step = self._distance(o[marching] + t[marching, None] * d[marching])
            dist[marching] = step
            t[marching] += step
            marching = marching[(step > self._CONVERGED) & (t[marching] <= t_end[marching])]
        result = np.full(len(origins), np.inf)
        result[live] = np.where((dist < self._HIT_TOLERANCE) & (t <= t_end), t, np.inf)
        return result

    def normal(self, points: Array) -> Array:
        """Outward unit normals at surface points (the gradient of the signed distance)."""
        local = self._local(points)
        rho = np.maximum(np.hypot(local[:, 0], local[:, 1]), 1e-12)
        ring = rho - self.major
        n_local = np.stack([local[:, 0] / rho * ring, local[:, 1] / rho * ring, local[:, 2]], axis=1)
        n_local /= np.linalg.norm(n_local, axis=1, keepdims=True)
        return n_local @ _rotation("x", self.tilt_deg).T

    def bounding_radius(self) -> float:
        """Radius of an origin-centred ball that contains the object."""
        return float(np.linalg.norm(self.center)) + self.major + self.minor


SceneObject = Union[Sphere, Box, Torus]

SCENE_OBJECTS: tuple[SceneObject, ...] = (
    Sphere("red_sphere", (0.85, 0.15, 0.12), (-0.45, -0.35, -0.30), 0.45),
    Sphere("green_sphere", (0.20, 0.75, 0.25), (0.50, 0.45, 0.15), 0.35),
    Box("blue_box", (0.15, 0.30, 0.85), (0.45, -0.45, -0.45), (0.30, 0.25, 0.30), 30.0),
    Torus("yellow_torus", (0.90, 0.75, 0.15), (-0.35, 0.45, 0.05), 0.40, 0.13, 35.0),
    Sphere("purple_sphere", (0.60, 0.25, 0.80), (0.30, -0.20, 0.70), 0.20),
)
"""The objects of the demo scene (documented in the module docstring)."""


def _trace(objects: Sequence[SceneObject], origins: Array, dirs: Array) -> tuple[Array, Array]:
    """Nearest hit distance (inf on a miss) and the index of the object hit (-1 on a miss)."""
    t, index = np.full(len(origins), np.inf), np.full(len(origins), -1)
    # only rays that reach a ball around every object can hit one
    bound = max(obj.bounding_radius() for obj in objects)
    t_out = _sphere_span(origins, dirs, np.zeros(3), bound)[1]
    live = np.flatnonzero(np.isfinite(t_out) & (t_out > _HIT_EPS))
    if len(live):
        t_all = np.stack([obj.intersect(origins[live], dirs[live]) for obj in objects])
        nearest = t_all.argmin(axis=0)
        t[live] = t_all[nearest, np.arange(len(live))]
        index[live] = np.where(np.isfinite(t[live]), nearest, -1)
    return t, index


def _shade(objects: Sequence[SceneObject], origins: Array, dirs: Array) -> tuple[Array, Array]:
    """Lambertian colour with hard shadows [N, 3] and a hit mask [N] for unit-direction rays."""
    t, index = _trace(objects, origins, dirs)
    hit = index >= 0
    colour = np.zeros((len(origins), 3))
    if not hit.any():
        return colour, hit
    points = origins[hit] + t[hit, None] * dirs[hit]
    normals = np.empty_like(points)
    albedo = np.empty_like(points)
    for k, obj in enumerate(objects):
        mine = index[hit] == k
        if mine.any():
            normals[mine] = obj.normal(points[mine])
            albedo[mine] = obj.albedo
    light = np.asarray(LIGHT_DIRECTION)
    lambert = np.clip(normals @ light, 0.0, None)
    facing = lambert > 0
    lit = np.zeros(len(points), dtype=bool)
    shadow_origins = points[facing] + _SHADOW_OFFSET * normals[facing]
    lit[facing] = _trace(objects, shadow_origins, np.broadcast_to(light, shadow_origins.shape))[1] < 0
    colour[hit] = albedo * (AMBIENT + (1.0 - AMBIENT) * lambert * lit)[:, None]
    return colour, hit


def look_at(position: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0), up: Sequence[float] = (0.0, 0.0, 1.0)) -> Array:
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
        colour[chunk], hit[chunk] = _shade(objects, origins[chunk], dirs[chunk])
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
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


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
    empty, ``FileExistsError`` is raised.

    Args:
        out_dir: target folder (its parent is created if needed).
        image_size: width and height in pixels (>= 8).
        num_train, num_val, num_test: number of views per split (each >= 1).
        seed: camera placement seed (>= 0); see :func:`camera_poses`.
        supersample: rays per pixel along each axis for anti-aliasing (>= 1).
        overwrite: re-render even if a matching scene is present.
    """
    _check_int("image_size", image_size, 8)
    _check_int("num_train", num_train, 1)
    _check_int("num_val", num_val, 1)
    _check_int("num_test", num_test, 1)
    _check_int("seed", seed, 0)
    _check_int("supersample", supersample, 1)
    out_dir = Path(out_dir)
    params = {
        "generator": "gnerf.scenes.procedural",
        "version": SCENE_VERSION,
        "image_size": int(image_size),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "seed": int(seed),
        "supersample": int(supersample),
    }
    existing = _read_params(out_dir)
    if existing == params and not overwrite:
        return out_dir
    replace = out_dir.exists()
    if replace and (existing is None or existing.get("generator") != params["generator"]):
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise FileExistsError(
                f"{out_dir} exists and is not a generated procedural scene (no complete scene.json); "
                "remove it or choose another out_dir"
            )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        counts = {"train": num_train, "val": num_val, "test": num_test}
        for split, count in counts.items():
            (tmp / split).mkdir()
            frames = []
            for i, c2w in enumerate(camera_poses(split, count, seed)):
                rgba = render_view(c2w, width=image_size, height=image_size, supersample=supersample)
                _write_png(tmp / split / f"r_{i}.png", rgba)
                frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
            meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
            (tmp / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "scene.json").write_text(json.dumps(params, indent=2) + "\n")
        _install(tmp, out_dir, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


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
