"""The ray-traced primitives of the procedural scene, its objects and their shading.

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
consistent.

Changing anything here changes the rendered images: bump
:data:`gnerf.scenes.procedural.SCENE_VERSION` so stored scenes are re-rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

__all__ = [
    "AMBIENT",
    "LIGHT_DIRECTION",
    "SCENE_OBJECTS",
    "Box",
    "SceneObject",
    "Sphere",
    "Torus",
    "shade",
]

LIGHT_DIRECTION = tuple(np.array([0.5, -0.35, 0.8]) / np.linalg.norm([0.5, -0.35, 0.8]))
"""Unit vector pointing from the scene towards the directional light (world frame)."""
AMBIENT = 0.35
"""Fraction of the albedo every surface shows even when unlit or in shadow."""

_HIT_EPS = 1e-6
_SHADOW_OFFSET = 1e-3

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


def shade(objects: Sequence[SceneObject], origins: Array, dirs: Array) -> tuple[Array, Array]:
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
