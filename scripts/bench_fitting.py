"""Measure Adam against ESGD on the image and occupancy tasks over the same epoch budget.

Runs :func:`gnerf.tasks.fit_image` on a photo (default Kodak kodim01 at 256x256) and
:func:`gnerf.tasks.fit_occupancy` on a mesh (default the Stanford bunny) with the paper's Gaussian
network (5 layers, 256 wide) once per optimizer, prints markdown tables of PSNR / IoU against
epochs and training wall time, and writes ``bench_fitting.png`` (metric vs epoch and vs wall
time) plus every run's folder under ``--output-dir``::

    python scripts/bench_fitting.py --image-epochs 10 --occupancy-epochs 10 --num-points 100000
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import tyro

from gnerf.tasks import FieldConfig, ImageFitConfig, OccupancyFitConfig, OptimConfig, fit_image, fit_occupancy
from gnerf.tasks.io import atomic_write_bytes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class BenchConfig:
    """Adam vs ESGD on image and occupancy fitting (same epochs, same network, same data)."""

    image: Path = DATA / "images" / "kodak" / "kodim01.png"
    """Photo to fit."""
    image_size: Tuple[int, int] = (256, 256)
    """(height, width) the photo is resized to."""
    image_epochs: int = 10
    """Epochs per image run (256x256 / 512 = 128 steps each)."""
    mesh: Path = DATA / "shapes" / "bunny.obj"
    """Mesh to fit."""
    num_points: int = 100_000
    """Occupancy training points (the paper uses 1,000,000)."""
    num_eval_points: int = 50_000
    """Occupancy evaluation points."""
    occupancy_epochs: int = 10
    """Epochs per occupancy run."""
    resolution: int = 64
    """Marching-cubes resolution of the occupancy reconstructions."""
    optimizers: Tuple[str, ...] = ("adam", "esgd")
    """Optimizers to compare, each with the paper's learning rate."""
    threads: Optional[int] = 1
    """CPU threads for torch (1 is fastest on a shared machine)."""
    device: Optional[str] = None
    """torch device; None: cuda when available, else cpu."""
    output_dir: Path = Path("outputs") / "bench"
    """Parent folder of the run folders and the plot."""


def _table(title: str, metric: str, runs: Dict[str, List[Dict[str, float]]]) -> str:
    names = list(runs)
    head = "| epoch | " + " | ".join(f"{n} {metric} | {n} time (s)" for n in names) + " |"
    sep = "|---:|" + "---:|---:|" * len(names)
    lines = [f"**{title}**", "", head, sep]
    for i in range(max(len(h) for h in runs.values())):
        cells = []
        for n in names:
            row = runs[n][i] if i < len(runs[n]) else None
            cells += [f"{row[metric]:.3f}", f"{row['wall_time']:.1f}"] if row else ["", ""]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(path: Path, panels: List[Tuple[str, str, Dict[str, List[Dict[str, float]]]]]) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for (title, metric, runs), row in zip(panels, axes):
        for name, hist in runs.items():
            row[0].plot([h["epoch"] for h in hist], [h[metric] for h in hist], marker="o", label=name)
            row[1].plot([h["wall_time"] for h in hist], [h[metric] for h in hist], marker="o", label=name)
        for ax, xlabel in zip(row, ("epoch", "training wall time (s)")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(cfg: BenchConfig) -> None:
    """Run every optimizer on both tasks, print the tables and write the plot."""
    root = cfg.output_dir / datetime.now().strftime("%Y%m%d-%H%M%S")
    common = dict(threads=cfg.threads, device=cfg.device, progress=False)
    image_runs: Dict[str, List[Dict[str, float]]] = {}
    occ_runs: Dict[str, List[Dict[str, float]]] = {}
    for name in cfg.optimizers:
        image_runs[name] = fit_image(ImageFitConfig(
            image=cfg.image, size=cfg.image_size, epochs=cfg.image_epochs, output_dir=root / f"image-{name}",
            field=FieldConfig(activation="gaussian"), optim=OptimConfig(name=name), **common)).history
    for name in cfg.optimizers:
        occ_runs[name] = fit_occupancy(OccupancyFitConfig(
            mesh=cfg.mesh, num_points=cfg.num_points, num_eval_points=cfg.num_eval_points,
            epochs=cfg.occupancy_epochs, resolution=cfg.resolution, output_dir=root / f"occupancy-{name}",
            field=FieldConfig(activation="gaussian"), optim=OptimConfig(name=name), **common)).history
    h, w = cfg.image_size
    print(f"\nmachine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {cfg.device or ('cuda' if torch.cuda.is_available() else 'cpu')}")
    print(_table(f"{cfg.image.name} {h}x{w}, Gaussian 5x256, batch 512: whole-image PSNR (dB)", "psnr", image_runs))
    print()
    print(_table(f"{cfg.mesh.name}, {cfg.num_points} training / {cfg.num_eval_points} evaluation points, "
                 "Gaussian 5x256, batch 512: evaluation IoU", "iou", occ_runs))
    plot = root / "bench_fitting.png"
    _plot(plot, [(f"{cfg.image.stem} PSNR", "psnr", image_runs), (f"{cfg.mesh.stem} IoU", "iou", occ_runs)])
    print(f"\nplot: {plot}\nruns: {root}")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
