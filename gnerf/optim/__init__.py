"""Optimizers for neural fields, the shared curvature (Hessian-vector product) machinery and the training step."""

from gnerf.optim.curvature import (
    HutchinsonProbe,
    MissingGraphError,
    hessian_vector_product,
    rademacher_like,
    release_graph,
)
from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.esgd import ESGD, ESGDAdamStart, ESGDMax, esgd
from gnerf.optim.registry import (
    OPTIMIZERS,
    OptimizerSpec,
    build_optimizer,
    default_lr,
    get_optimizer_spec,
    register_optimizer,
    registered_optimizers,
)
from gnerf.optim.step import StepPlan, needs_loss_fn, no_sync_if_curvature, should_create_graph, take_step

__all__ = [
    "ESGD",
    "ESGDAdamStart",
    "ESGDMax",
    "HutchinsonProbe",
    "MissingGraphError",
    "OPTIMIZERS",
    "OptimizerSpec",
    "StepPlan",
    "build_optimizer",
    "default_lr",
    "get_optimizer_spec",
    "register_optimizer",
    "registered_optimizers",
    "esgd",
    "hessian_vector_product",
    "needs_hessian_vector_products",
    "needs_loss_fn",
    "no_sync_if_curvature",
    "rademacher_like",
    "release_graph",
    "should_create_graph",
    "take_step",
]
