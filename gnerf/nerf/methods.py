"""The Gaussian-NeRF methods as trainer configs: the paper's ``gaussian-nerf-esgd`` and the same model with other optimizers.

The paper's Gaussian-NeRF (supplementary, sec. 4.3): 2048 rays x 128 stratified points per step,
one model, 200k iterations; ESGD-Max with lr 1 decayed exponentially to 0.1 (Blender) or 0.01
(forward-facing LLFF / BLEFF), curvature on each of the first 50 steps and then every 100th
(:data:`gnerf.optim.defaults.PAPER`); Adam from 1e-4 to 1e-6 for comparison (``gaussian-nerf-adam``).
``gaussian-nerf-muon`` and ``gaussian-nerf-adam-cosine`` train the identical model with a contender and its
cosine schedule, ``gaussian-nerf-muon-esgd`` with gnerf's MuonESGD (Muon on the square hidden matrices, ESGD on the
rest), ``gaussian-nerf-muon-esgd-eq`` with the same and Muon's step divided by the hidden matrices' own curvature
(``muon-esgd-eq``), ``gaussian-nerf-psgd-kron-esgd`` with gnerf's PSGDKronESGD (heavyball's PSGD-Kron on the square
hidden matrices, ESGD on the rest). Blender data by default; pass ``llff-data --data <scene>`` for LLFF.
``method_configs.gnerf_methods`` registers these configs with nerfstudio (``ns-train``).
"""

from __future__ import annotations

from typing import Dict

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.engine.optimizers import OptimizerConfig

from gnerf.nerf.model import GaussianNeRFModelConfig
from gnerf.nerf.optimizers import NERF_OPTIMIZERS, GnerfSchedulerConfig
from gnerf.nerf.pipeline import GNerfPipelineConfig
from gnerf.nerf.trainer import CurvatureTrainerConfig, default_device_type
from gnerf.optim.defaults import PAPER

__all__ = [
    "CONFIGS",
    "GAUSSIAN_NERF_ADAM",
    "GAUSSIAN_NERF_ADAM_COSINE",
    "GAUSSIAN_NERF_ESGD",
    "GAUSSIAN_NERF_MUON",
    "GAUSSIAN_NERF_MUON_ESGD",
    "GAUSSIAN_NERF_MUON_ESGD_EQ",
    "GAUSSIAN_NERF_PSGD_KRON_ESGD",
    "MAX_ITERATIONS",
    "gaussian_nerf_config",
]

MAX_ITERATIONS = 200_000


def gaussian_nerf_config(
    method_name: str, optimizer: OptimizerConfig, scheduler: GnerfSchedulerConfig
) -> CurvatureTrainerConfig:
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


#: ESGD-Max with the paper's settings: lr 1 decayed exponentially to 0.1 (0.01 on forward-facing scenes).
GAUSSIAN_NERF_ESGD = gaussian_nerf_config(
    "gaussian-nerf-esgd",
    NERF_OPTIMIZERS["esgd-max"](lr=PAPER.nerf_lr),
    GnerfSchedulerConfig(kind="exponential", lr_final=0.1, max_steps=MAX_ITERATIONS, lr_final_forward_facing=0.01),
)

#: Adam, for side-by-side comparison: 1e-4 decayed exponentially to 1e-6.
GAUSSIAN_NERF_ADAM = gaussian_nerf_config(
    "gaussian-nerf-adam",
    NERF_OPTIMIZERS["adam"](lr=1e-4),
    GnerfSchedulerConfig(kind="exponential", lr_final=1e-6, max_steps=MAX_ITERATIONS),
)

#: Muon (torch.optim.Muon's update) on the trunk's square hidden matrices (6e-4), Adam on the rest (3e-4); cosine to 0
#: on both. These lrs, and those of the three hybrids below, are 3x the lego screen's x1 (Muon 2e-4, its Adam part
#: 1e-4, PSGD-Kron 1e-4, ESGD 1.0): the screen (docs/lego_cpu_lr_screen/lr_screen.md; every lr of a method times
#: 1/3, 1, 3 or 9, test PSNR at step 500 of 5,000) found each of them leaving lego's initial plateau fastest at 3x and
#: falling back at 9x.
GAUSSIAN_NERF_MUON = gaussian_nerf_config(
    "gaussian-nerf-muon",
    NERF_OPTIMIZERS["muon"](lr=6e-4, adam_lr=3e-4),
    GnerfSchedulerConfig(kind="cosine", lr_final=0.0, max_steps=MAX_ITERATIONS),
)

#: Adam with a cosine schedule to 0 from a larger lr than the paper's.
GAUSSIAN_NERF_ADAM_COSINE = gaussian_nerf_config(
    "gaussian-nerf-adam-cosine",
    NERF_OPTIMIZERS["adam-cosine"](lr=5e-4),
    GnerfSchedulerConfig(kind="cosine", lr_final=0.0, max_steps=MAX_ITERATIONS),
)

#: gnerf's MuonESGD: Muon (6e-4) on the trunk's square hidden matrices, ESGD on the rest at 3x the paper's ESGD-Max
#: lr for NeRF (3.0); cosine to 0 on both after a 100-step warm-up, as the optimizer is registered for images.
GAUSSIAN_NERF_MUON_ESGD = gaussian_nerf_config(
    "gaussian-nerf-muon-esgd",
    NERF_OPTIMIZERS["muon-esgd"](lr=6e-4, esgd_lr=3 * PAPER.nerf_lr),
    GnerfSchedulerConfig(kind="cosine", lr_final=0.0, max_steps=MAX_ITERATIONS, warmup_steps=100),
)

#: gnerf's ``muon-esgd-eq``: ``gaussian-nerf-muon-esgd`` (the same lrs and schedule) with Muon's orthogonalised step on
#: the hidden matrices divided elementwise by their own curvature, damped by 0.1 x its mean, as registered for images.
GAUSSIAN_NERF_MUON_ESGD_EQ = gaussian_nerf_config(
    "gaussian-nerf-muon-esgd-eq",
    NERF_OPTIMIZERS["muon-esgd-eq"](lr=6e-4, esgd_lr=3 * PAPER.nerf_lr),
    GnerfSchedulerConfig(kind="cosine", lr_final=0.0, max_steps=MAX_ITERATIONS, warmup_steps=100),
)

#: gnerf's PSGDKronESGD: heavyball's PSGD-Kron on the trunk's square hidden matrices at 3e-4, ESGD on the rest at 3x
#: the paper's ESGD-Max lr for NeRF (3.0); cosine to 0 on both after a 100-step warm-up, as registered for images.
GAUSSIAN_NERF_PSGD_KRON_ESGD = gaussian_nerf_config(
    "gaussian-nerf-psgd-kron-esgd",
    NERF_OPTIMIZERS["psgd-kron-esgd"](lr=3e-4, esgd_lr=3 * PAPER.nerf_lr),
    GnerfSchedulerConfig(kind="cosine", lr_final=0.0, max_steps=MAX_ITERATIONS, warmup_steps=100),
)

#: The methods by their ``ns-train`` name.
CONFIGS: Dict[str, CurvatureTrainerConfig] = {
    "gaussian-nerf-esgd": GAUSSIAN_NERF_ESGD,
    "gaussian-nerf-adam": GAUSSIAN_NERF_ADAM,
    "gaussian-nerf-muon": GAUSSIAN_NERF_MUON,
    "gaussian-nerf-adam-cosine": GAUSSIAN_NERF_ADAM_COSINE,
    "gaussian-nerf-muon-esgd": GAUSSIAN_NERF_MUON_ESGD,
    "gaussian-nerf-muon-esgd-eq": GAUSSIAN_NERF_MUON_ESGD_EQ,
    "gaussian-nerf-psgd-kron-esgd": GAUSSIAN_NERF_PSGD_KRON_ESGD,
}
