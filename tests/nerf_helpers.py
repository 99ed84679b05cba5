"""Shared helpers for the nerfstudio plugin tests: a tiny, fast version of the gnerf methods."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nerfstudio.scripts.train import _set_random_seed

from gnerf.nerf.trainer import CurvatureTrainerConfig
from method_configs.gnerf_methods import gaussian_nerf_adam, gaussian_nerf_esgd

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic" / "lego"


def tiny_config(method: str, data: Path, output_dir: Path, iterations: int = 12, d_warmup: int = 3,
                update_d_every: int = 4, dataparser=None) -> CurvatureTrainerConfig:
    """The registered method's config, shrunk to CPU-test size (same classes, small numbers)."""
    spec = {"gaussian-nerf-esgd": gaussian_nerf_esgd, "gaussian-nerf-adam": gaussian_nerf_adam}[method]
    cfg = dataclasses.replace(spec.config)
    cfg.pipeline = dataclasses.replace(cfg.pipeline)
    dm = cfg.pipeline.datamanager = dataclasses.replace(cfg.pipeline.datamanager)
    if dataparser is not None:
        dm.dataparser = dataparser
    dm.data = data
    dm.train_num_rays_per_batch = dm.eval_num_rays_per_batch = 64
    cfg.pipeline.model = dataclasses.replace(cfg.pipeline.model, num_samples=16, hidden_dim=32, feature_dim=32,
                                             num_layers=3, skip_connections=(1,), direction_dim=8,
                                             color_hidden_dim=16, eval_num_rays_per_chunk=1024)
    opt = cfg.optimizers["fields"]["optimizer"]
    if hasattr(opt, "d_warmup"):
        opt = dataclasses.replace(opt, d_warmup=d_warmup, update_d_every=update_d_every)
    cfg.optimizers = {"fields": {"optimizer": opt, "scheduler": cfg.optimizers["fields"]["scheduler"]}}
    cfg.max_num_iterations = iterations
    cfg.steps_per_save = iterations
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10**6
    cfg.vis = "tensorboard"
    cfg.machine = dataclasses.replace(cfg.machine, device_type="cpu")
    cfg.output_dir = output_dir
    cfg.experiment_name = "test"
    cfg.timestamp = "run"
    return cfg


def train(cfg: CurvatureTrainerConfig):
    """Train in-process as ``ns-train``'s train loop does; returns the trainer (run folder: ``trainer.base_dir``)."""
    cfg.save_config()
    _set_random_seed(cfg.machine.seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return trainer
