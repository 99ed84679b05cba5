"""3D occupancy fitting (paper sec. 3.3, supplementary sec. 4.2).

The mesh is centred and scaled into the unit cube ``[-0.5, 0.5]^3`` (longest side ``extent``).
One million training points are drawn: one third uniform in the cube, one third near the surface
with Gaussian noise of sigma 0.1 and one third with sigma 0.01; a separate evaluation set is
drawn the same way. Inside/outside labels come from :func:`gnerf.tasks.mesh.inside_mesh` (the
generalised winding number > 1/2, by libigl's fast winding number), which is correct for
non-watertight meshes. The network outputs a logit and is trained with BCE; after every epoch
the evaluation BCE and IoU (occupied = logit > 0) are reported. The defaults are the paper's
protocol: minibatches of 50,000 points for 200 epochs.

Outputs besides the loop's (see :mod:`gnerf.tasks.loop`): ``reconstruction.ply`` (marching cubes
of the logit at 0 on a ``resolution^3`` grid over the cube) and ``preview.png`` (three shaded
orthographic views of the occupied voxels of that grid).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gnerf.errors import InputError
from gnerf.files import atomic_write_bytes, atomic_write_image
from gnerf.tasks.build import predict
from gnerf.tasks.config import FitConfig, FitResult, Problem
from gnerf.tasks.io import grid_coordinates
from gnerf.tasks.loop import fit
from gnerf.tasks.mesh import (
    depth_preview,
    inside_mesh,
    load_mesh,
    normalize_to_cube,
    oriented_faces,
    sample_occupancy_points,
)
from gnerf.tasks.run import hold_run_folder, prepare_run, writing_outputs

__all__ = ["OCCUPANCY_SIGMA", "OccupancyFitConfig", "fit_occupancy", "iou", "marching_cubes_ply"]

#: The paper's Gaussian width for shapes.
OCCUPANCY_SIGMA = 0.09


@dataclass(kw_only=True)
class OccupancyFitConfig(FitConfig):
    """Fit the occupancy of a triangle mesh with a coordinate network."""

    mesh: Path
    """The mesh to fit (OBJ, PLY or OFF); need not be watertight."""
    epochs: int = 200
    """Passes over the training points (the paper: 200)."""
    batch_size: int = 50_000
    """Points per step (the paper: 50,000, i.e. 20 steps per epoch over one million points)."""
    num_points: int = 1_000_000
    """Training points (one share uniform, one share per near-surface sigma)."""
    num_eval_points: int = 100_000
    """Evaluation points, drawn the same way, independently."""
    near_sigmas: Tuple[float, ...] = (0.1, 0.01)
    """Noise sigmas of the near-surface shares (in unit-cube units)."""
    extent: float = 0.9
    """Longest side of the normalised mesh inside the unit cube [-0.5, 0.5]^3."""
    resolution: int = 256
    """Marching-cubes grid resolution for reconstruction.ply and preview.png."""


def _bce(logits: Tensor, labels: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels)


def iou(pred: Tensor, gt: Tensor) -> float:
    """Intersection over union of two boolean occupancy tensors (1 if both are empty)."""
    union = (pred | gt).sum().item()
    return 1.0 if union == 0 else (pred & gt).sum().item() / union


def marching_cubes_ply(logits: np.ndarray, bound: float = 0.5) -> bytes:
    """Binary PLY bytes of the surface ``logit = 0`` of a ``[R, R, R]`` grid over ``[-bound, bound]^3``.

    A field without a surface (all inside or all outside) gives an empty mesh and a warning.
    """
    import trimesh
    from skimage.measure import marching_cubes

    r = logits.shape[0]
    if logits.min() < 0 < logits.max():
        step = 2 * bound / (r - 1)
        verts, faces, _, _ = marching_cubes(logits, level=0.0, spacing=(step, step, step))
        verts = verts - bound
    else:
        warnings.warn(
            "the fitted occupancy has no surface (all inside or all outside); writing an empty mesh", stacklevel=2
        )
        verts, faces = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    return mesh.export(file_type="ply")


def fit_occupancy(cfg: OccupancyFitConfig) -> FitResult:
    """Run the occupancy-fitting protocol of ``cfg``; returns the trained model and its metrics."""
    if cfg.num_points < 1 or cfg.num_eval_points < 1:
        raise InputError(
            f"--num-points and --num-eval-points must be >= 1, got {cfg.num_points}, {cfg.num_eval_points}"
        )
    if not 0 < cfg.extent <= 1:
        raise InputError(f"--extent must lie in (0, 1] so the mesh fits the unit cube, got {cfg.extent}")
    if cfg.resolution < 2:
        raise InputError(f"--resolution must be >= 2, got {cfg.resolution}")
    if not cfg.near_sigmas or not all(math.isfinite(s) and s > 0 for s in cfg.near_sigmas):
        raise InputError(
            f"--near-sigmas must be one or more finite numbers > 0 (in unit-cube units), got "
            f"{' '.join(str(s) for s in cfg.near_sigmas) or 'none'}"
        )
    run = prepare_run("occupancy", Path(cfg.mesh).stem, cfg, {"--mesh": cfg.mesh})
    out, device = run.output_dir, run.device
    with hold_run_folder(run):
        vertices, faces = load_mesh(cfg.mesh)
        vertices = normalize_to_cube(vertices, cfg.extent)
        faces = oriented_faces(vertices, faces)
        gen = torch.Generator().manual_seed(cfg.seed)
        train_pts = sample_occupancy_points(vertices, faces, cfg.num_points, cfg.near_sigmas, generator=gen)
        eval_pts = sample_occupancy_points(vertices, faces, cfg.num_eval_points, cfg.near_sigmas, generator=gen)
        v = torch.as_tensor(vertices, dtype=torch.float32, device=device)
        f = torch.as_tensor(faces, device=device)
        train_pts, eval_pts = train_pts.to(device), eval_pts.to(device)
        train_lab = inside_mesh(v, f, train_pts).float()[:, None]
        eval_lab = inside_mesh(v, f, eval_pts).float()[:, None]
        eval_occ = eval_lab.bool()
        if not (train_lab.any() and eval_occ.any()):
            _no_inside_points(cfg, v, f, "training" if not train_lab.any() else "evaluation")

        def evaluate(model: nn.Module) -> Dict[str, float]:
            logits = predict(model, eval_pts, cfg.eval_batch_size)
            return {"eval_bce": _bce(logits, eval_lab).item(), "iou": iou(logits > 0, eval_occ)}

        problem = Problem(train_pts, train_lab, _bce, evaluate, OCCUPANCY_SIGMA)
        result = fit(problem, run)
        if not result.is_main:  # torchrun: rank 0 writes the outputs
            return result

        with writing_outputs(run):
            grid = grid_coordinates(cfg.resolution, cfg.resolution, cfg.resolution).to(device) * 0.5
            logits = predict(result.model, grid, cfg.eval_batch_size)
            logits = logits.reshape(cfg.resolution, cfg.resolution, cfg.resolution).cpu().numpy()
            atomic_write_bytes(out / "reconstruction.ply", marching_cubes_ply(logits))
            atomic_write_image(out / "preview.png", depth_preview(logits > 0))
    return result


#: Points drawn, when none of a run's points lies inside the mesh, to tell a mesh without volume from a sample
#: too small to find it.
PROBE_POINTS = 30_000


def _no_inside_points(cfg: OccupancyFitConfig, v: Tensor, f: Tensor, which: str) -> None:
    """Raise the :class:`InputError` of a sample whose ``which`` points all lie outside the mesh: blaming the
    number of points when a larger sample finds the mesh's inside, else the mesh."""
    count = cfg.num_points if which == "training" else cfg.num_eval_points
    option = "--num-points" if which == "training" else "--num-eval-points"
    if count < PROBE_POINTS:
        probe = sample_occupancy_points(
            v.cpu().numpy(),
            f.cpu().numpy(),
            PROBE_POINTS,
            cfg.near_sigmas,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        if inside_mesh(v, f, probe.to(v.device)).any():
            raise InputError(
                f"none of the {count} {which} points lies inside mesh {str(cfg.mesh)!r}, which does "
                f"enclose a volume: {option} {count} is too few to find it; raise {option} (the "
                "paper draws 1,000,000 training points)"
            )
    raise InputError(
        f"mesh {str(cfg.mesh)!r} encloses no volume: none of the {which} points lies inside it; "
        "occupancy needs a closed (or nearly closed) surface, not an open or flat one"
    )
