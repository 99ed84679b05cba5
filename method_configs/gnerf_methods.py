"""``ns-train gaussian-nerf-esgd`` and ``ns-train gaussian-nerf-adam``: nerfstudio's registration of
the trainer configs built in :mod:`gnerf.nerf.methods`."""

from __future__ import annotations

from nerfstudio.plugins.types import MethodSpecification

from gnerf.nerf.methods import GAUSSIAN_NERF_ADAM, GAUSSIAN_NERF_ESGD

gaussian_nerf_esgd = MethodSpecification(
    config=GAUSSIAN_NERF_ESGD,
    description="Gaussian-NeRF (GARF, no positional encoding) trained with ESGD-Max (gnerf).",
)

gaussian_nerf_adam = MethodSpecification(
    config=GAUSSIAN_NERF_ADAM,
    description="Gaussian-NeRF trained with Adam, for side-by-side comparison with gaussian-nerf-esgd (gnerf).",
)
