"""Every optimizer in gnerf by name, with the paper's default learning rates.

The fitting tasks (and anything else that takes an optimizer name from the command line)
build optimizers only through :func:`build_optimizer`. Adding an optimizer is one call to
:func:`register_optimizer` at the bottom of this module, e.g.::

    register_optimizer("shampoo", Shampoo, lr=0.1, lr_by_activation={"sine": 0.01})

Learning rates follow the supplementary material, sec. 4.1-4.2: Adam 1e-4 (1e-3 for the
ReLU + positional-encoding network), ESGD / ESGD-Max 0.15 (ESGD 0.1 for ReLU + PE, as in the
configuration published with the paper), read from :data:`gnerf.optim.defaults.PAPER`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

import torch
from torch.optim import Optimizer

from gnerf.optim.adahessian import AdaHessianE, AdaHessianJ
from gnerf.optim.defaults import PAPER
from gnerf.optim.esgd import ADAM_START_LR, ESGD, ESGDAdamStart, ESGDMax
from gnerf.optim.kfac import KFAC  # built from params: finds its nn.Linear layers at the first forward
from gnerf.optim.shampoo import Shampoo

__all__ = [
    "OPTIMIZERS",
    "OptimizerSpec",
    "build_optimizer",
    "default_lr",
    "get_optimizer_spec",
    "register_optimizer",
    "registered_optimizers",
]


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one named optimizer.

    Attributes:
        name: the command-line name (lower case, ``-`` separated).
        factory: ``factory(params, lr=..., **options) -> Optimizer``, usually the class.
        lr: default learning rate.
        lr_by_activation: per-activation overrides of ``lr`` (keys are activation names).
    """

    name: str
    factory: Callable[..., Optimizer]
    lr: float
    lr_by_activation: Mapping[str, float] = field(default_factory=dict)

    def accepts(self, option: str) -> bool:
        """Whether ``factory`` takes the keyword ``option`` (a class's ``**kwargs`` is followed to its bases)."""
        chain = ([c.__init__ for c in self.factory.__mro__ if "__init__" in vars(c)]
                 if isinstance(self.factory, type) else [self.factory])
        for fn in chain:
            params = inspect.signature(fn).parameters
            if option in params:
                return True
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                return False
        return False


_REGISTRY: Dict[str, OptimizerSpec] = {}


def register_optimizer(
    name: str, factory: Callable[..., Optimizer], *, lr: float, lr_by_activation: Optional[Mapping[str, float]] = None
) -> OptimizerSpec:
    """Make ``factory`` available as ``name`` to :func:`build_optimizer` and every fitting command."""
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"an optimizer named {key!r} is already registered")
    spec = OptimizerSpec(key, factory, float(lr), dict(lr_by_activation or {}))
    _REGISTRY[key] = spec
    return spec


def registered_optimizers() -> Tuple[str, ...]:
    """Names of every registered optimizer, in registration order."""
    return tuple(_REGISTRY)


def get_optimizer_spec(name: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` for ``name``; ``ValueError`` listing the valid names if unknown."""
    spec = _REGISTRY.get(str(name).lower())
    if spec is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return spec


def default_lr(name: str, activation: str = "gaussian") -> float:
    """The paper's learning rate for optimizer ``name`` on a network with ``activation``."""
    spec = get_optimizer_spec(name)
    return float(spec.lr_by_activation.get(activation.lower(), spec.lr))


def build_optimizer(
    name: str,
    params: Iterable[Any],
    *,
    activation: str = "gaussian",
    lr: Optional[float] = None,
    **options: Any,
) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params``.

    Args:
        name: one of :data:`OPTIMIZERS` (case-insensitive).
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        activation: the network's activation; picks the paper's default learning rate.
        lr: learning rate; ``None`` uses :func:`default_lr`.
        **options: further keyword arguments for the optimizer (e.g. ``precondition_frequency=100``).

    Raises:
        ValueError: unknown ``name``, or an option the optimizer does not take.
    """
    spec = get_optimizer_spec(name)
    rejected = [k for k in options if not spec.accepts(k)]
    if rejected:
        raise ValueError(f"optimizer {spec.name!r} does not take the option(s) {', '.join(rejected)}")
    return spec.factory(params, lr=default_lr(spec.name, activation) if lr is None else float(lr), **options)


register_optimizer("adam", torch.optim.Adam, lr=1e-4, lr_by_activation={"relu": 1e-3})
register_optimizer("esgd", ESGD, lr=PAPER.lr, lr_by_activation={"relu": PAPER.relu_lr})  # the published ReLU + PE run
register_optimizer("esgd-max", ESGDMax, lr=PAPER.lr)
# gnerf's variant: Adam first (800 steps; 25 epochs in the fitting commands), then ESGD
register_optimizer("esgd-adam-start", ESGDAdamStart, lr=ADAM_START_LR)
register_optimizer("adahessian-e", AdaHessianE, lr=PAPER.lr)
register_optimizer("adahessian-j", AdaHessianJ, lr=PAPER.lr)
register_optimizer("kfac", KFAC, lr=0.1)
register_optimizer("shampoo", Shampoo, lr=0.1, lr_by_activation={"sine": 0.01})

#: Names of the optimizers registered in this module.
OPTIMIZERS: Tuple[str, ...] = registered_optimizers()
