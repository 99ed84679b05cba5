import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from gnerf.tasks import OccupancyFitConfig, fit_occupancy
from gnerf.tasks.mesh import (
    inside_mesh,
    load_mesh,
    normalize_to_cube,
    oriented_faces,
    sample_occupancy_points,
    winding_number,
)

from helpers_tasks import check_bad_inputs_are_named, check_run_folder, small
from shared_data import BUNNY, DRAGON, require


def _parity_bruteforce(vertices, faces, points, direction):
    """Ray parity against every triangle (Moller-Trumbore), float64: the textbook inside test."""
    v = torch.as_tensor(vertices, dtype=torch.float64)
    f = torch.as_tensor(faces)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e1, e2 = b - a, c - a
    d = torch.as_tensor(direction, dtype=torch.float64)
    d = d / d.norm()
    pvec = torch.linalg.cross(d.expand_as(e2), e2)
    det = (e1 * pvec).sum(-1)
    hits = []
    for p in torch.as_tensor(points, dtype=torch.float64).split(256):
        tvec = p[:, None] - a[None]
        u = (tvec * pvec).sum(-1) / det
        qvec = torch.linalg.cross(tvec, e1.expand_as(tvec))
        w = (d * qvec).sum(-1) / det
        t = (e2 * qvec).sum(-1) / det
        hit = (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0) & (det != 0)
        hits.append(hit.sum(1) % 2 == 1)
    return torch.cat(hits)


def _prepared(path):
    v, f = load_mesh(require(path))
    v = normalize_to_cube(v)
    return v, oriented_faces(v, f)


@pytest.mark.parametrize("name", ["torus", "dragon"])
def test_labels_agree_with_brute_force_ray_parity_on_a_closed_mesh(name):
    if name == "torus":
        mesh = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1, major_sections=48, minor_sections=24)
        v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)[:, ::-1].copy()  # inward: orientation is fixed
        assert mesh.is_watertight
    else:  # the Stanford dragon: closed, stored with inward-facing triangles
        v, f = load_mesh(require(DRAGON))
        v = normalize_to_cube(v)
    f_oriented = oriented_faces(v, f)
    assert not np.array_equal(f_oriented, f)  # both test meshes come inward-oriented
    points = sample_occupancy_points(v, f_oriented, 600, generator=torch.Generator().manual_seed(1))
    labels = inside_mesh(torch.as_tensor(v, dtype=torch.float32), torch.as_tensor(f_oriented), points)
    truth = _parity_bruteforce(v, f, points, direction=(0.31, 0.47, 0.83))
    assert 0.1 < truth.float().mean() < 0.6
    assert torch.equal(labels, truth)


def _solid_angles(tri):
    """Signed solid angles of triangles ``tri[..., 3, 3]`` seen from the origin (Van Oosterom & Strackee)."""
    a, b, c = tri.unbind(-2)
    la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
    det = (a * torch.linalg.cross(b, c)).sum(-1)
    denom = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return 2.0 * torch.atan2(det, denom)


def test_winding_number_matches_the_exact_solid_angle_sum():
    v, f = _prepared(DRAGON)
    points = sample_occupancy_points(v, f, 200, generator=torch.Generator().manual_seed(2))
    vt, ft = torch.as_tensor(v), torch.as_tensor(f)
    exact = torch.cat([_solid_angles(vt[ft][None] - p[:, None, None]).sum(1) for p in points.double().split(20)])
    exact = exact / (4 * math.pi)
    fast = winding_number(vt.float(), ft, points)
    assert fast.dtype == torch.float32 and fast.shape == (200,)
    assert (fast - exact).abs().max() < 0.05
    assert torch.equal(fast > 0.5, exact > 0.5)


def test_labels_of_a_cube_are_the_analytic_ones_and_an_open_box_keeps_its_inside():
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    points = torch.rand(20000, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 0.5
    gap = (points.abs().amax(1) - 0.3).abs()
    points = points[gap > 1e-3]  # off the faces
    truth = points.abs().amax(1) < 0.3
    for faces in (f, f[:, ::-1].copy()):  # outward, and inward as stored in some files
        faces = oriented_faces(v, faces)
        labels = inside_mesh(torch.as_tensor(v, dtype=torch.float32), torch.as_tensor(faces), points.float())
        assert labels.dtype == torch.bool and 0.1 < truth.double().mean() < 0.5
        assert torch.equal(labels, truth)
    # without its top (the two triangles at z = +0.3) the box sees w = 1 - 1/6 from its centre: still inside
    top = v[f][:, :, 2].min(1) > 0.29
    w = winding_number(torch.as_tensor(v), torch.as_tensor(f[~top]), torch.zeros(1, 3, dtype=torch.float64))
    assert abs(w.item() - 5 / 6) < 1e-3


def test_labels_stay_correct_on_a_bunny_with_holes():
    v, f = _prepared(BUNNY)
    vt = torch.as_tensor(v, dtype=torch.float32)
    centroids = v[f].mean(1)
    holes = v[[0, 5000, 20000, 30000]]  # four surface spots
    keep = (np.linalg.norm(centroids[:, None] - holes[None], axis=-1) > 0.08).all(1)
    open_f = f[keep]
    assert trimesh.Trimesh(v, f, process=False).is_watertight
    assert not trimesh.Trimesh(v, open_f, process=False).is_watertight
    points = sample_occupancy_points(v, f, 3000, generator=torch.Generator().manual_seed(3))
    truth = inside_mesh(vt, torch.as_tensor(f), points)  # the closed bunny
    labels = inside_mesh(vt, torch.as_tensor(open_f), points)
    w = winding_number(vt, torch.as_tensor(open_f), points)
    far_from_holes = torch.as_tensor((np.linalg.norm(points.numpy()[:, None] - holes[None], axis=-1) > 0.12).all(1))
    assert ((w > 0.1) & (w < 0.9)).sum() >= 10  # the holes matter: w is fractional near them
    assert (labels != truth)[far_from_holes].sum() == 0
    assert (labels != truth).float().mean() < 0.01  # near the holes the inside is ambiguous


def _cfg(out, **kw):
    base = dict(mesh=require(BUNNY), num_points=24000, num_eval_points=6000, epochs=4, resolution=32, output_dir=out)
    base.update(kw)
    return OccupancyFitConfig(**small(**base))


def test_esgd_fits_the_bunny_and_writes_every_output(tmp_path):
    run = tmp_path / "run"
    fit_occupancy(_cfg(run))
    rows = check_run_folder(run, 4, "iou")
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["eval_bce"] < rows[0]["eval_bce"]
    assert rows[-1]["iou"] > 0.6 and rows[-1]["iou"] > rows[0]["iou"]
    mesh = trimesh.load(run / "reconstruction.ply", process=False)
    assert len(mesh.faces) > 100 and np.abs(mesh.vertices).max() <= 0.5 + 1e-6
    preview = iio.imread(run / "preview.png")
    assert preview.shape == (32, 96) and preview.max() > 100 and (preview == 0).mean() > 0.2


def test_bad_meshes_are_named(tmp_path):
    check_bad_inputs_are_named(
        tmp_path,
        fit_occupancy,
        _cfg,
        "mesh",
        "nope.obj",
        [
            ("empty.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "empty.obj' has 3 vertices but no faces"),
            (
                "flat.off",
                "OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n",
                "flat.off' is empty: all of its 1 triangles have zero area",
            ),
            ("shape.stl", "solid x\nendsolid x\n", "unsupported file type '.stl'"),
        ],
    )
