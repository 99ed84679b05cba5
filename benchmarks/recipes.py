"""Build and run the registered gnerf methods in-process, at a chosen (usually reduced) size.

Used by the benchmarks and tests; the command-line equivalent is ``ns-train <method>`` with the
same overrides (see :mod:`gnerf.demo`).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig

from gnerf.nerf.methods import CONFIGS
from gnerf.nerf.model import skip_connections_for
from gnerf.nerf.trainer import CurvatureTrainer, CurvatureTrainerConfig

METHODS = tuple(CONFIGS)


def method_config(
    method: str,
    data: Path,
    output_dir: Path,
    *,
    iterations: int,
    rays: int,
    samples: int,
    hidden_dim: int,
    num_layers: int,
    skip_connections: Optional[Sequence[int]] = None,
    direction_dim: Optional[int] = None,
    color_hidden_dim: Optional[int] = None,
    image_scale: float = 1.0,
    device: str = "cpu",
    curvature_cadence: Optional[tuple] = None,
    dataparser: Optional[DataParserConfig] = None,
    experiment_name: str = "run",
    timestamp: str = "run",
) -> CurvatureTrainerConfig:
    """A copy of the registered method's config with the sizes given (the classes are unchanged).

    The learning-rate schedule is stretched to ``iterations`` (start and final lr as registered);
    ``curvature_cadence=(precondition_warmup_steps, precondition_frequency)`` overrides the curvature
    cadence of curvature optimizers. Evaluation during training is off; the checkpoint is written at the end.
    """
    if method not in CONFIGS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    # a deep copy: nerfstudio's pixel sampler writes into its config (is_equirectangular, a tensor) when set up, and
    # a shallow one would carry that into every later copy, and into their config.yml
    cfg = copy.deepcopy(CONFIGS[method])
    dm = dataclasses.replace(
        cfg.pipeline.datamanager,
        data=data,
        train_num_rays_per_batch=rays,
        eval_num_rays_per_batch=rays,
        camera_res_scale_factor=image_scale,
    )
    if dataparser is not None:
        dm.dataparser = dataparser
    skips = tuple(skip_connections) if skip_connections is not None else skip_connections_for(num_layers)
    heads = {
        k: v for k, v in (("direction_dim", direction_dim), ("color_hidden_dim", color_hidden_dim)) if v is not None
    }
    model = dataclasses.replace(
        cfg.pipeline.model,
        num_samples=samples,
        hidden_dim=hidden_dim,
        feature_dim=hidden_dim,
        num_layers=num_layers,
        skip_connections=skips,
        **heads,
    )
    cfg.pipeline = dataclasses.replace(cfg.pipeline, datamanager=dm, model=model)

    group = cfg.optimizers["fields"]
    scheduler = group["scheduler"]
    optimizer = group["optimizer"]
    scheduler = dataclasses.replace(scheduler, max_steps=iterations)
    if curvature_cadence is not None and optimizer.curvature:
        optimizer = dataclasses.replace(
            optimizer, precondition_warmup_steps=curvature_cadence[0], precondition_frequency=curvature_cadence[1]
        )
    cfg.optimizers = {"fields": {"optimizer": optimizer, "scheduler": scheduler}}

    cfg.max_num_iterations = iterations
    cfg.steps_per_save = iterations
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10 * iterations + 1
    cfg.vis = "tensorboard"
    cfg.machine = dataclasses.replace(cfg.machine, device_type=device)
    cfg.output_dir, cfg.experiment_name, cfg.timestamp = Path(output_dir), experiment_name, timestamp
    return cfg


def setup_trainer(cfg: CurvatureTrainerConfig, test_mode: str = "val") -> CurvatureTrainer:
    """Seed, save config.yml and set up a trainer as ``ns-train`` does, without training.

    ``test_mode``: nerfstudio's; "val" loads the train and val splits, "test" the train and test splits.
    Seeds as ``nerfstudio.scripts.train._set_random_seed`` does, without importing that module (it imports
    every nerfstudio method, and with them packages that gnerf's methods do not use).
    """
    import random

    import numpy as np

    from nerfstudio.utils import writer

    # ns-train starts with no event writers: drop those of trainers set up earlier in this process, whose
    # folders may be gone (a benchmark's temporary directory), so that this trainer's scalars go to its own
    writer.EVENT_WRITERS.clear()
    writer.EVENT_STORAGE.clear()
    cfg.save_config()
    random.seed(cfg.machine.seed)
    np.random.seed(cfg.machine.seed)
    torch.manual_seed(cfg.machine.seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup(test_mode=test_mode)
    return trainer


def train(cfg: CurvatureTrainerConfig) -> CurvatureTrainer:
    """Train in-process as ``ns-train`` does; returns the finished trainer."""
    trainer = setup_trainer(cfg)
    trainer.train()
    return trainer


@torch.no_grad()
def evaluate_views(pipeline, indices: Sequence[int]) -> Dict[str, float]:
    """Mean PSNR / SSIM (/ LPIPS) of the model over the given views of the eval dataset."""
    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    model.eval()
    totals: Dict[str, float] = {}
    for i in indices:
        outputs = model.get_outputs_for_camera(dataset.cameras[i : i + 1].to(model.device))
        metrics, _ = model.get_image_metrics_and_images(outputs, dataset[i])
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + v
    model.train()
    return {k: v / len(indices) for k, v in totals.items()}
