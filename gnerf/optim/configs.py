"""Every optimizer in gnerf, described once: a config dataclass of its hyperparameters that builds it.

A config holds the optimizer's hyperparameters with their defaults, its name on the command line
(:attr:`OptimizerConfig.name`) and its registered learning-rate schedule
(:attr:`OptimizerConfig.schedule`); :meth:`OptimizerConfig.build` makes the ``torch.optim.Optimizer``.
The fitting commands take these configs as a tyro union (``optim:esgd --optim.lr 0.1``), the
nerfstudio methods as optimizer configs (:mod:`gnerf.nerf.optimizers` wraps the same classes), and
:func:`build_optimizer` builds one by name. Adding an optimizer is one class and one config::

    @register_optimizer
    @dataclass
    class SGDConfig(OptimizerConfig):
        name: ClassVar[str] = "sgd"
        lr: Optional[float] = 0.1
        momentum: float = 0.0

        def _make(self, params, *, seed, process_group):
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)

and the contract test (tests/test_optim_contract.py) picks it up.

Defaults are the paper's (supplementary sec. 4.1-4.2, :data:`gnerf.optim.defaults.PAPER`) for the
paper's optimizers and the winners of gnerf's sweep for the contenders (:mod:`gnerf.optim.contenders`).
Learning rates that depend on the network's activation (the paper's ReLU + PE runs) are chosen by
the fitting task, which knows the activation: ``lr=None`` means "the task's default".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, Optional, Tuple, Type, TypeVar

import torch
from torch.optim import Optimizer

from gnerf.optim.adahessian import AdaHessianE, AdaHessianJ
from gnerf.optim.adam_start import ADAM_START_LR, ESGDAdamStart
from gnerf.optim.averaging import check_ema_decay
from gnerf.optim.base import HYPERPARAMETER_RULES, check_hyperparameters
from gnerf.optim.defaults import PAPER
from gnerf.optim.esgd import ESGD, ESGDMax
from gnerf.optim.kfac import KFAC
from gnerf.optim.kfac_adam import KFACAdam
from gnerf.optim.schedules import ConstantSchedule, ScheduleConfig
from gnerf.optim.shampoo import Shampoo

__all__ = [
    "OPTIMIZERS",
    "AdaHessianEConfig",
    "AdaHessianJConfig",
    "AdamConfig",
    "ESGDAdamStartConfig",
    "ESGDConfig",
    "ESGDMaxConfig",
    "KFACAdamConfig",
    "KFACConfig",
    "OptimizerConfig",
    "ShampooConfig",
    "build_optimizer",
    "optimizer_config",
    "register_optimizer",
]


@dataclass
class OptimizerConfig:
    """What every optimizer config has: a name, a learning rate, a registered schedule, and :meth:`build`."""

    name: ClassVar[str] = ""
    """The command-line name (lower case, ``-`` separated)."""
    schedule: ClassVar[ScheduleConfig] = ConstantSchedule()
    """The schedule the fitting commands use with this optimizer unless --schedule says otherwise."""
    curvature: ClassVar[bool] = False
    """Takes Hessian-vector products (the curvature protocol); such optimizers take a probe ``seed``."""

    lr: Optional[float] = None
    """Learning rate; None: the task's default for this optimizer."""
    ema_decay: Optional[float] = None
    """Evaluate an EMA of the weights with this decay (:mod:`gnerf.optim.averaging`); None: the weights themselves."""

    def resolved_lr(self) -> float:
        """``lr``, or the class's default when ``lr`` is None."""
        return float(self.lr if self.lr is not None else type(self)().lr)

    def build(self, params: Iterable[Any], *, seed: Optional[int] = None, process_group: Any = "auto") -> Optimizer:
        """The optimizer over ``params`` (an ordered iterable of parameters, or param groups).

        ``seed`` seeds a curvature optimizer's own probe generator and ``process_group`` sets its data
        parallelism (see :class:`gnerf.optim.base.HutchinsonOptimizer`); the others ignore both.

        Raises:
            ValueError: a hyperparameter out of range, named (see :meth:`check`).
        """
        self.check()
        return self._make(params, seed=seed, process_group=process_group)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first hyperparameter out of range: every number must be finite, and
        ``lr``, ``eps``, ``weight_decay``, ``momentum``, ``betas`` in their ranges (the optimizers check the rest)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise ValueError(f"invalid {f.name}={value}: must be finite")
            if f.name.endswith("_lr") and value is not None and value < 0:
                raise ValueError(f"invalid {f.name}={value}: must be >= 0")
            if f.name.endswith("_frequency") and value < 1:
                raise ValueError(f"invalid {f.name}={value}: must be >= 1")
            if f.name.endswith("_steps") and value is not None and value < 0:
                raise ValueError(f"invalid {f.name}={value}: must be >= 0")
        check_ema_decay(self.ema_decay)
        check_hyperparameters(
            **{
                k: (tuple(v) if k == "betas" else v)
                for k, v in self.hyperparameters().items()
                if k in HYPERPARAMETER_RULES
            }
        )

    def _make(self, params: Iterable[Any], *, seed: Optional[int], process_group: Any) -> Optimizer:
        """Build the optimizer from the checked hyperparameters."""
        raise NotImplementedError

    def hyperparameters(self) -> Dict[str, Any]:
        """The config's fields as keywords, ``lr`` resolved; ``ema_decay`` (the loop's, not the update's) left out."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "ema_decay"}
        values["lr"] = self.resolved_lr()
        return values


C = TypeVar("C", bound=Type[OptimizerConfig])

#: Every optimizer config by its name, in registration order.
OPTIMIZERS: Dict[str, Type[OptimizerConfig]] = {}


def register_optimizer(config: C) -> C:
    """Class decorator: make ``config`` available by its ``name`` to :func:`build_optimizer` and every front end."""
    key = config.name
    if not key or key != key.lower():
        raise ValueError(f"{config.__name__}.name must be a non-empty lower-case name, got {key!r}")
    if key in OPTIMIZERS and OPTIMIZERS[key] is not config:
        raise ValueError(f"an optimizer named {key!r} is already registered ({OPTIMIZERS[key].__name__})")
    if config().lr is None:
        raise ValueError(f"{config.__name__} must give lr a default")
    OPTIMIZERS[key] = config
    return config


def optimizer_config(name: str, **options: Any) -> OptimizerConfig:
    """The config registered as ``name`` (case-insensitive) with ``options`` replacing its defaults.

    Raises:
        ValueError: unknown ``name`` (listing the valid ones), or an option the optimizer does not take.
    """
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    rejected = sorted(k for k in options if k not in fields)
    if rejected:
        raise ValueError(
            f"optimizer {cls.name!r} does not take the option(s) {', '.join(rejected)}; "
            f"it takes {', '.join(sorted(fields))}"
        )
    return cls(**options)


def build_optimizer(
    name: str, params: Iterable[Any], *, seed: Optional[int] = None, process_group: Any = "auto", **options: Any
) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params`` with ``options`` replacing its defaults."""
    return optimizer_config(name, **options).build(params, seed=seed, process_group=process_group)


def _hutchinson(run_seed: Optional[int], process_group: Any) -> Dict[str, Any]:
    return {"seed": run_seed, "process_group": process_group}


@register_optimizer
@dataclass
class AdamConfig(OptimizerConfig):
    """``torch.optim.Adam`` at the paper's constant lr 1e-4 (1e-3 for ReLU + PE, chosen by the fitting task)."""

    name: ClassVar[str] = "adam"
    lr: Optional[float] = 1e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    foreach: Optional[bool] = None
    """Multi-tensor update; None: torch's choice."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        h = self.hyperparameters()
        return torch.optim.Adam(
            params,
            lr=h["lr"],
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
            foreach=self.foreach,
        )


@dataclass
class _HutchinsonConfig(OptimizerConfig):
    curvature: ClassVar[bool] = True
    betas: Tuple[float, float] = PAPER.betas
    """Momentum and curvature averaging coefficients."""
    eps: float = PAPER.eps
    """Added to the square root of the curvature."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    foreach: Optional[bool] = None
    """Multi-tensor update; None: on a GPU."""


@dataclass
class _ESGDFamilyConfig(_HutchinsonConfig):
    precondition_warmup_steps: int = PAPER.precondition_warmup_steps
    """The first steps, each of which estimates the curvature."""
    precondition_frequency: int = PAPER.precondition_frequency
    """After them, the curvature is estimated on every precondition_frequency-th step."""

    def _common(self) -> Dict[str, Any]:
        return dict(
            lr=self.resolved_lr(),
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
            precondition_warmup_steps=self.precondition_warmup_steps,
            precondition_frequency=self.precondition_frequency,
            foreach=self.foreach,
        )


@register_optimizer
@dataclass
class ESGDConfig(_ESGDFamilyConfig):
    """ESGD as published with the paper (:class:`gnerf.optim.ESGD`): lr 0.15 (0.1 for ReLU + PE)."""

    name: ClassVar[str] = "esgd"
    lr: Optional[float] = PAPER.lr

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return ESGD(params, **self._common(), **_hutchinson(seed, process_group))


@register_optimizer
@dataclass
class ESGDMaxConfig(_ESGDFamilyConfig):
    """ESGD-Max (:class:`gnerf.optim.ESGDMax`), the paper's radiance-field optimizer: lr 0.15 on images."""

    name: ClassVar[str] = "esgd-max"
    lr: Optional[float] = PAPER.lr
    lr_warmup: float = PAPER.lr_warmup
    """The step size ramps as 1 - lr_warmup^k with the number of curvature updates k (0: off)."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return ESGDMax(params, **self._common(), lr_warmup=self.lr_warmup, **_hutchinson(seed, process_group))


@register_optimizer
@dataclass
class ESGDAdamStartConfig(_ESGDFamilyConfig):
    """gnerf's variant (:class:`gnerf.optim.ESGDAdamStart`): Adam first, then ESGD at lr 0.1."""

    name: ClassVar[str] = "esgd-adam-start"
    lr: Optional[float] = ADAM_START_LR
    adam_steps: Optional[int] = None
    """Adam's steps before ESGD takes over; None: 800, or 25 epochs in the fitting commands."""
    adam_lr: float = 1e-4
    """Adam's learning rate in its phase."""
    adam_eps: float = 1e-8
    """Adam's epsilon in its phase (torch.optim.Adam's default)."""

    #: Adam's steps when neither the config nor the task sets them.
    default_adam_steps: ClassVar[int] = 800

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        steps = self.default_adam_steps if self.adam_steps is None else self.adam_steps
        return ESGDAdamStart(
            params,
            **self._common(),
            adam_steps=steps,
            adam_lr=self.adam_lr,
            adam_eps=self.adam_eps,
            **_hutchinson(seed, process_group),
        )


@dataclass
class _AdaHessianConfig(_HutchinsonConfig):
    lr: Optional[float] = PAPER.lr
    hessian_power: float = 1.0
    """Exponent k of the curvature in the denominator, in (0, 1]."""
    cls: ClassVar[type] = AdaHessianE

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return self.cls(
            params,
            lr=self.resolved_lr(),
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
            hessian_power=self.hessian_power,
            foreach=self.foreach,
            **_hutchinson(seed, process_group),
        )


@register_optimizer
@dataclass
class AdaHessianEConfig(_AdaHessianConfig):
    """AdaHessian with the equilibration statistic (:class:`gnerf.optim.adahessian.AdaHessianE`)."""

    name: ClassVar[str] = "adahessian-e"
    cls: ClassVar[type] = AdaHessianE


@register_optimizer
@dataclass
class AdaHessianJConfig(_AdaHessianConfig):
    """AdaHessian with the Jacobi statistic (:class:`gnerf.optim.adahessian.AdaHessianJ`)."""

    name: ClassVar[str] = "adahessian-j"
    cls: ClassVar[type] = AdaHessianJ


@register_optimizer
@dataclass
class KFACConfig(OptimizerConfig):
    """K-FAC (:class:`gnerf.optim.kfac.KFAC`), first-order for a training loop."""

    name: ClassVar[str] = "kfac"
    lr: Optional[float] = 0.1
    momentum: float = 0.9
    damping: float = 0.01
    factored_damping: bool = False
    """Damp each factor by sqrt(damping) instead of their Kronecker product by damping."""
    stat_decay: float = 0.95
    weight_decay: float = 0.0
    kl_clip: float = 1e-3
    precondition_frequency: int = 100
    """Steps between refreshes of the factors' inverses."""
    statistics_frequency: int = 1
    """Steps between updates of the factors."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return KFAC(params, **self.hyperparameters())


@register_optimizer
@dataclass
class KFACAdamConfig(OptimizerConfig):
    """Adam on K-FAC-preconditioned gradients (:class:`gnerf.optim.kfac_adam.KFACAdam`): K-FAC as the code published
    with the paper runs it (each minibatch's factors, each damped by sqrt(0.1), then Adam at lr 1e-4)."""

    name: ClassVar[str] = "kfac-adam"
    lr: Optional[float] = 1e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    damping: float = 0.1
    factored_damping: bool = True
    """Damp each factor by sqrt(damping) instead of their Kronecker product by damping."""
    stat_decay: float = 0.0
    """Running-average coefficient of the factors; 0: each minibatch's own."""
    precondition_frequency: int = 1
    """Steps between refreshes of the factors' inverses."""
    statistics_frequency: int = 1
    """Steps between updates of the factors."""
    foreach: Optional[bool] = None
    """Adam's multi-tensor update; None: torch's choice."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return KFACAdam(params, **self.hyperparameters())


@register_optimizer
@dataclass
class ShampooConfig(OptimizerConfig):
    """Shampoo (:class:`gnerf.optim.shampoo.Shampoo`): lr 0.1 (0.01 for sine networks, chosen by the fitting task)."""

    name: ClassVar[str] = "shampoo"
    lr: Optional[float] = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    eps: float = 1e-4
    precondition_frequency: int = 1
    """Steps between recomputations of the inverse roots."""
    foreach: Optional[bool] = None

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return Shampoo(params, **self.hyperparameters())
