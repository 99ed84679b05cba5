"""``ns-train gaussian-nerf-esgd`` and ``ns-train gaussian-nerf-adam``.

The paper's Gaussian-NeRF (supplementary, sec. 4.3): 2048 rays x 128 stratified points per step,
one model, 200k iterations; ESGD-Max with lr 1 decayed exponentially to 0.1 (Blender) or 0.01
(forward-facing LLFF / BLEFF), curvature every 100 steps after 50 warm-up steps; Adam from 1e-4
to 1e-6 for comparison. Blender data by default; pass ``llff-data --data <scene>`` for LLFF.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig, OptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from gnerf.nerf.model import GaussianNeRFModelConfig
from gnerf.nerf.pipeline import GNerfPipelineConfig
from gnerf.nerf.optimizers import ESGDMaxOptimizerConfig, ExponentialDecaySchedulerConfig
from gnerf.nerf.trainer import CurvatureTrainerConfig, default_device_type

MAX_ITERATIONS = 200_000


def gaussian_nerf_config(method_name: str, optimizer: OptimizerConfig,
                         scheduler: ExponentialDecaySchedulerConfig) -> CurvatureTrainerConfig:
    """The shared Gaussian-NeRF trainer config; only the optimizer and its schedule differ."""
    return CurvatureTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=2000,
        steps_per_eval_all_images=MAX_ITERATIONS,
        steps_per_save=2000,
        max_num_iterations=MAX_ITERATIONS,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),  # the CPU where there is no CUDA device
        pipeline=GNerfPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=BlenderDataParserConfig(),
                train_num_rays_per_batch=2048,
                eval_num_rays_per_batch=2048,
            ),
            model=GaussianNeRFModelConfig(num_samples=128),
        ),
        optimizers={"fields": {"optimizer": optimizer, "scheduler": scheduler}},
        viewer=ViewerConfig(num_rays_per_chunk=1 << 12),
        vis="viewer",
    )


gaussian_nerf_esgd = MethodSpecification(
    config=gaussian_nerf_config(
        "gaussian-nerf-esgd",
        ESGDMaxOptimizerConfig(),  # the paper's: lr 1, curvature on each of the first 50 steps, then every 100th
        ExponentialDecaySchedulerConfig(lr_final=0.1, lr_final_forward_facing=0.01, max_steps=MAX_ITERATIONS),
    ),
    description="Gaussian-NeRF (GARF, no positional encoding) trained with ESGD-Max (gnerf).",
)

gaussian_nerf_adam = MethodSpecification(
    config=gaussian_nerf_config(
        "gaussian-nerf-adam",
        AdamOptimizerConfig(lr=1e-4, eps=1e-8),
        ExponentialDecaySchedulerConfig(lr_final=1e-6, max_steps=MAX_ITERATIONS),
    ),
    description="Gaussian-NeRF trained with Adam, for side-by-side comparison with gaussian-nerf-esgd (gnerf).",
)
