"""Optimizers for neural fields and the shared curvature (Hessian-vector product) machinery."""

from gnerf.optim.curvature import (
    HutchinsonProbe,
    MissingGraphError,
    hessian_vector_product,
    rademacher_like,
    release_graph,
    should_create_graph,
)
from gnerf.optim.distributed import no_sync_if_curvature
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

__all__ = [
    "ESGD",
    "ESGDAdamStart",
    "ESGDMax",
    "HutchinsonProbe",
    "MissingGraphError",
    "OPTIMIZERS",
    "OptimizerSpec",
    "build_optimizer",
    "default_lr",
    "get_optimizer_spec",
    "register_optimizer",
    "registered_optimizers",
    "esgd",
    "hessian_vector_product",
    "no_sync_if_curvature",
    "rademacher_like",
    "release_graph",
    "should_create_graph",
]
