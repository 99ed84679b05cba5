"""Inside/outside labels for occupancy: gnerf's hand-written code against libigl's fast winding number.

    python -m experiments.winding                                  # bunny, dragon: 1M points; bunny with holes: 100k
    python -m experiments.winding --points 100000 --rounds 3       # smaller, more repetitions
    python -m experiments.winding --baseline <commit> --output winding.md

"gnerf" is ``inside_mesh`` of ``gnerf/tasks/mesh.py`` as it was at ``--baseline`` (read with ``git show``,
so the hand-written code stays measurable after it left the library): six axis-ray crossing counts, and
its Barnes-Hut generalised winding number > 1/2 where the six disagree. "libigl" is
``igl.fast_winding_number(V, F, Q) > 0.5`` (Barill et al. 2018). Both run in this process on the CPU,
interleaved round by round, on the points of the occupancy protocol (``sample_occupancy_points``, the
training draw of ``fit_occupancy`` with ``--seed``). Where the labels differ, the table gives each
point's distance to the surface and which side the exact winding number (``igl.winding_number``) takes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, table, today
from gnerf.tasks.mesh import load_mesh, normalize_to_cube, oriented_faces, sample_occupancy_points

ROOT = Path(__file__).resolve().parents[1]

SHAPES = ROOT.parent / "shared" / "data" / "shapes"
#: The last commit whose gnerf/tasks/mesh.py holds the hand-written ray crossings and winding number.
BASELINE = "8ea9e8a"


def baseline_module(rev: str) -> types.ModuleType:
    """``gnerf/tasks/mesh.py`` at git revision ``rev``, imported as a module of its own."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:gnerf/tasks/mesh.py"], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"cannot read gnerf/tasks/mesh.py at {rev!r} (a shallow clone?): {done.stderr.strip()}")
    source = done.stdout
    module = types.ModuleType(f"gnerf_mesh_at_{rev}")
    exec(compile(source, f"{rev}:gnerf/tasks/mesh.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module


def with_holes(vertices: np.ndarray, faces: np.ndarray, radius: float = 0.08) -> np.ndarray:
    """``faces`` less those near four surface spots (the holed bunny of tests/test_tasks_occupancy.py)."""
    spots = vertices[[0, 5000, 20000, 30000]]
    centroids = vertices[faces].mean(1)
    return faces[(np.linalg.norm(centroids[:, None] - spots[None], axis=-1) > radius).all(1)]


def compare(
    name: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    points: torch.Tensor,
    gnerf: types.ModuleType,
    rounds: int,
    wn_points: int,
    counts: list[int],
    truth_faces: np.ndarray | None = None,
) -> list:
    import igl

    vt, ft = torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces)
    V = vt.double().numpy()  # both sides see the same float32-rounded vertices, as fit_occupancy passes them
    F = np.ascontiguousarray(faces, dtype=np.int64)
    Q = points.double().numpy()

    fallback = []
    exact_wn = gnerf.winding_number

    def counting_wn(v, f, p, **kw):
        fallback.append(p.shape[0])
        return exact_wn(v, f, p, **kw)

    gnerf.winding_number = counting_wn  # inside_mesh looks it up in its module
    times = {"gnerf": [], "libigl": []}
    runs = {
        "gnerf": lambda: gnerf.inside_mesh(vt, ft, points).numpy(),
        "libigl": lambda: igl.fast_winding_number(V, F, Q) > 0.5,
    }
    labels = {}
    for r in range(rounds):
        for key in ("gnerf", "libigl") if r % 2 == 0 else ("libigl", "gnerf"):
            t = time.perf_counter()
            labels[key] = runs[key]()
            times[key].append(time.perf_counter() - t)
    gnerf.winding_number = exact_wn
    g, lib = labels["gnerf"], labels["libigl"]
    differ = np.flatnonzero(g != lib)
    dist = np.sqrt(igl.point_mesh_squared_distance(Q[differ], V, F)[0]) if len(differ) else np.zeros(0)
    exact_w = igl.winding_number(V, F, Q[differ]) if len(differ) else np.zeros(0)
    exact = exact_w > 0.5
    rays = torch.cat([gnerf.ray_crossings(vt, ft, points[differ], axis) for axis in range(3)], 1)
    rays_split = int((rays != rays[:, :1]).any(1).sum())  # there gnerf took its winding number, else ray parity
    group = np.searchsorted(np.cumsum(counts), differ, side="right")
    by_group = "/".join(str(int((group == i).sum())) for i in range(len(counts)))
    t_g, t_l = statistics.median(times["gnerf"]), statistics.median(times["libigl"])
    row = [
        name,
        f"{len(F):,}",
        f"{len(Q):,}",
        f"{fallback[0] if fallback else 0:,}",
        f"{(g == lib).mean() * 100:.4f}%",
        f"{len(differ)} ({by_group})",
        f"{dist.max():.1e}" if len(differ) else "-",
        f"{rays_split}" if len(differ) else "-",
        f"{exact_w.min():.3f} to {exact_w.max():.3f}" if len(differ) else "-",
        f"{int((g[differ] == exact).sum())} / {int((lib[differ] == exact).sum())}" if len(differ) else "-",
        f"{t_g:.2f}",
        f"{t_l:.2f}",
        f"{t_g / t_l:.1f}",
    ]
    if truth_faces is not None:  # errors against the closed mesh's labels
        truth = igl.fast_winding_number(V, np.ascontiguousarray(truth_faces, dtype=np.int64), Q) > 0.5
        row.append(f"{int((g != truth).sum())} / {int((lib != truth).sum())}")
    else:
        row.append("-")

    # the two generalised winding numbers alone, on the first wn_points points (gnerf's is slow on a CPU)
    sub = points[:wn_points]
    t = time.perf_counter()
    w_g = gnerf.winding_number(vt, ft, sub).double().numpy()
    t_wg = time.perf_counter() - t
    t = time.perf_counter()
    w_l = igl.fast_winding_number(V, F, Q[:wn_points])
    t_wl = time.perf_counter() - t
    wn_row = [
        name,
        f"{len(sub):,}",
        f"{((w_g > 0.5) == (w_l > 0.5)).mean() * 100:.4f}%",
        f"{np.abs(w_g - w_l).max():.3f}",
        f"{t_wg:.2f}",
        f"{t_wl:.3f}",
        f"{t_wg / t_wl:.0f}",
    ]
    return [row, wn_row]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=Path, default=SHAPES, help="folder holding bunny.obj and dragon.obj")
    ap.add_argument("--points", type=int, default=1_000_000, help="occupancy points per mesh (the paper: 1M)")
    ap.add_argument("--seed", type=int, default=0, help="fit_occupancy's --seed for the point draw")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds per mesh (median reported)")
    ap.add_argument(
        "--holes-points",
        type=int,
        default=100_000,
        help="points for the bunny with holes (gnerf sends about a seventh to its slow winding number)",
    )
    ap.add_argument(
        "--wn-points",
        type=int,
        default=10_000,
        help="points on which the two winding numbers alone are compared and timed",
    )
    ap.add_argument("--baseline", default=BASELINE, help="git revision whose gnerf/tasks/mesh.py is 'gnerf'")
    ap.add_argument("--output", type=Path, help="also write the markdown here")
    args = ap.parse_args(argv)
    from importlib.metadata import version

    import igl  # noqa: F401 - fail early without libigl

    gnerf = baseline_module(args.baseline)
    labels_rows, wn_rows = [], []
    for name in ("bunny", "dragon", "bunny with holes"):
        v, f = load_mesh(args.shapes / f"{name.split()[0]}.obj")
        v = normalize_to_cube(v)
        f = oriented_faces(v, f)
        n = args.holes_points if name == "bunny with holes" else args.points
        points = sample_occupancy_points(v, f, n, generator=torch.Generator().manual_seed(args.seed))
        counts = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]  # uniform, sigma 0.1, sigma 0.01
        if name == "bunny with holes":
            row, wn_row = compare(
                name, v, with_holes(v, f), points, gnerf, args.rounds, args.wn_points, counts, truth_faces=f
            )
        else:
            row, wn_row = compare(name, v, f, points, gnerf, args.rounds, args.wn_points, counts)
        labels_rows.append(row)
        wn_rows.append(wn_row)
        print(f"{name}: done", file=sys.stderr, flush=True)

    command = "python -m experiments.winding " + " ".join(sys.argv[1:] if argv is None else argv)
    threads = os.environ.get("IGL_NUM_THREADS", f"default ({os.cpu_count()} visible cores)")
    text = "\n".join(
        [
            f"Command: `{command}`; date {today()}; {machine('cpu')}; libigl {version('libigl')} "
            f"(threads: {threads}); gnerf = gnerf/tasks/mesh.py at {args.baseline}; median of {args.rounds} "
            "interleaved round(s).\n",
            table(
                [
                    "mesh",
                    "faces",
                    "points",
                    "gnerf: points sent to its winding number",
                    "labels identical",
                    "differ (uniform/0.1/0.01)",
                    "max distance to surface where they differ",
                    "of those, gnerf used its winding number (six rays disagreed)",
                    "exact w there",
                    "right by exact winding number (gnerf / libigl)",
                    "gnerf s",
                    "libigl s",
                    "gnerf / libigl",
                    "wrong vs closed bunny (gnerf / libigl)",
                ],
                labels_rows,
            ),
            "",
            "The generalised winding numbers alone (gnerf's Barnes-Hut `winding_number` vs `igl.fast_winding_number`), "
            f"on the first {args.wn_points:,} of those points:\n",
            table(
                [
                    "mesh",
                    "points",
                    "w > 1/2 identical",
                    "max abs. difference of w",
                    "gnerf s",
                    "libigl s",
                    "gnerf / libigl",
                ],
                wn_rows,
            ),
            "",
        ]
    )
    print(text)
    if args.output:
        args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
