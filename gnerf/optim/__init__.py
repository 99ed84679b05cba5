"""Optimizers for neural fields, the shared curvature (Hessian-vector product) machinery and the training step."""

from gnerf.optim import contenders  # noqa: F401  (registers the contenders)
from gnerf.optim.adam_start import ESGDAdamStart
from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.configs import OPTIMIZERS, OptimizerConfig, build_optimizer, optimizer_config, register_optimizer
from gnerf.optim.contenders import has_train_eval_modes
from gnerf.optim.curvature import (
    HutchinsonProbe,
    MissingGraphError,
    hessian_vector_product,
    rademacher_like,
    release_graph,
)
from gnerf.optim.esgd import ESGD, ESGDMax, esgd
from gnerf.optim.muon import MuonAdam
from gnerf.optim.muon_esgd import MuonESGD
from gnerf.optim.psgd_esgd import PSGDKronESGD
from gnerf.optim.schedules import ConstantSchedule, CosineSchedule, ExponentialSchedule, LinearSchedule, ScheduleConfig
from gnerf.optim.step import no_sync_if_curvature, should_create_graph, take_step

__all__ = [
    "ESGD",
    "ESGDAdamStart",
    "ESGDMax",
    "HutchinsonProbe",
    "MissingGraphError",
    "OPTIMIZERS",
    "ConstantSchedule",
    "CosineSchedule",
    "ExponentialSchedule",
    "LinearSchedule",
    "MuonAdam",
    "MuonESGD",
    "PSGDKronESGD",
    "OptimizerConfig",
    "ScheduleConfig",
    "has_train_eval_modes",
    "optimizer_config",
    "build_optimizer",
    "register_optimizer",
    "esgd",
    "hessian_vector_product",
    "needs_hessian_vector_products",
    "no_sync_if_curvature",
    "rademacher_like",
    "release_graph",
    "should_create_graph",
    "take_step",
]
