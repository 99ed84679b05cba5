"""Optimizers for neural fields and the shared curvature (Hessian-vector product) machinery."""

from gnerf.optim.curvature import (
    MissingGraphError,
    hessian_vector_product,
    rademacher_like,
    release_graph,
    should_create_graph,
)
from gnerf.optim.esgd import ESGD, ESGDMax, esgd

__all__ = [
    "ESGD",
    "ESGDMax",
    "MissingGraphError",
    "esgd",
    "hessian_vector_product",
    "rademacher_like",
    "release_graph",
    "should_create_graph",
]
