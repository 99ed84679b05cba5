"""gaussian-nerf-esgd against gaussian-nerf-adam on lego: test PSNR after the same steps, and throughput.

Both methods train in this one process, one after the other, with identical data, sizes and step
count; the defaults fit a 2-core CPU (lego at 100x100, 1,000 steps of 256 rays x 64 samples, a
128-wide 5-layer trunk). Prints a markdown table; ``--output`` also writes it as JSON.

    python -m benchmarks.bench_nerf                      # defaults above
    python -m benchmarks.bench_nerf --iterations 200     # a quick look
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import tyro

from benchmarks.common import SHARED_DATA
from benchmarks.recipes import METHODS, evaluate_views, method_config, setup_trainer

LEGO = SHARED_DATA / "nerf_synthetic" / "lego"


@dataclass
class BenchConfig:
    data: Path = LEGO
    """A Blender-format scene."""
    image_scale: float = 0.25
    """Image downscale (lego is stored at 400x400)."""
    iterations: int = 1000
    rays: int = 256
    samples: int = 64
    hidden_dim: int = 128
    num_layers: int = 5
    test_views: int = 20
    """Evaluate on every (200 / test_views)-th test view."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    output: Optional[Path] = None
    """Also write the results as JSON here."""


def main(cfg: BenchConfig) -> list:
    if not (cfg.data / "transforms_train.json").exists():
        raise SystemExit(
            f"bench_nerf: {cfg.data} is not a Blender-format scene (no transforms_train.json); pass --data"
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            run = method_config(
                method,
                cfg.data,
                Path(tmp),
                iterations=cfg.iterations,
                rays=cfg.rays,
                samples=cfg.samples,
                hidden_dim=cfg.hidden_dim,
                num_layers=cfg.num_layers,
                image_scale=cfg.image_scale,
                device=cfg.device,
                experiment_name=method,
            )
            run.logging.local_writer.enable = False
            trainer = setup_trainer(run)
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
            pipeline = trainer.pipeline
            n = len(pipeline.datamanager.eval_dataset)
            views = list(range(0, n, max(n // cfg.test_views, 1)))[: cfg.test_views]
            metrics = evaluate_views(pipeline, views)
            rows.append(
                {
                    "method": method,
                    "iterations": cfg.iterations,
                    "train_seconds": seconds,
                    "rays_per_second": cfg.iterations * cfg.rays / seconds,
                    "test_views": len(views),
                    **metrics,
                }
            )
            print(f"{method}: {seconds:.0f} s, test PSNR {metrics['psnr']:.2f} dB", flush=True)

    print(
        f"\nlego at {int(400 * cfg.image_scale)}px, {cfg.iterations} steps of {cfg.rays} rays x {cfg.samples} "
        f"samples, {cfg.hidden_dim}-wide {cfg.num_layers}-layer trunk, device {cfg.device} "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)\n"
    )
    print("| method | test PSNR (dB) | test SSIM | train time (s) | rays / s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['train_seconds']:.0f} | "
            f"{r['rays_per_second']:.0f} |"
        )
    esgd, adam = rows
    print(
        f"\nthroughput ratio esgd / adam: {esgd['rays_per_second'] / adam['rays_per_second']:.2f} "
        f"(train time: the training loop with its curvature steps and final checkpoint, not data loading)"
    )
    if cfg.output is not None:
        cfg.output.write_text(json.dumps({"config": {k: str(v) for k, v in vars(cfg).items()}, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
