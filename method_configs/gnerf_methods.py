"""``ns-train gaussian-nerf-esgd`` and the same model with other optimizers (``gaussian-nerf-adam``,
``gaussian-nerf-muon``, ``gaussian-nerf-adam-cosine``, ``gaussian-nerf-muon-esgd``, ``gaussian-nerf-muon-esgd-eq``,
``gaussian-nerf-psgd-kron-esgd``): nerfstudio's registration
of the trainer configs built in :mod:`gnerf.nerf.methods`."""

from __future__ import annotations

from nerfstudio.plugins.types import MethodSpecification

from gnerf.nerf.methods import (
    GAUSSIAN_NERF_ADAM,
    GAUSSIAN_NERF_ADAM_COSINE,
    GAUSSIAN_NERF_ESGD,
    GAUSSIAN_NERF_MUON,
    GAUSSIAN_NERF_MUON_ESGD,
    GAUSSIAN_NERF_MUON_ESGD_EQ,
    GAUSSIAN_NERF_PSGD_KRON_ESGD,
)

gaussian_nerf_esgd = MethodSpecification(
    config=GAUSSIAN_NERF_ESGD,
    description="Gaussian-NeRF (GARF, no positional encoding) trained with ESGD-Max (gnerf).",
)

gaussian_nerf_adam = MethodSpecification(
    config=GAUSSIAN_NERF_ADAM,
    description="Gaussian-NeRF trained with Adam, for side-by-side comparison with gaussian-nerf-esgd (gnerf).",
)

gaussian_nerf_muon = MethodSpecification(
    config=GAUSSIAN_NERF_MUON,
    description="Gaussian-NeRF trained with Muon on the square hidden matrices and Adam on the rest, cosine (gnerf).",
)

gaussian_nerf_adam_cosine = MethodSpecification(
    config=GAUSSIAN_NERF_ADAM_COSINE,
    description="Gaussian-NeRF trained with Adam from 5e-4 with a cosine schedule to 0 (gnerf).",
)

gaussian_nerf_muon_esgd = MethodSpecification(
    config=GAUSSIAN_NERF_MUON_ESGD,
    description="Gaussian-NeRF trained with gnerf's MuonESGD: Muon on the square hidden matrices, ESGD on the rest (gnerf).",
)

gaussian_nerf_muon_esgd_eq = MethodSpecification(
    config=GAUSSIAN_NERF_MUON_ESGD_EQ,
    description="Gaussian-NeRF trained with gnerf's MuonESGD, Muon's step divided by the hidden matrices' curvature (gnerf).",
)

gaussian_nerf_psgd_kron_esgd = MethodSpecification(
    config=GAUSSIAN_NERF_PSGD_KRON_ESGD,
    description="Gaussian-NeRF trained with gnerf's PSGDKronESGD: PSGD-Kron on the square hidden matrices, ESGD on the rest (gnerf).",
)
