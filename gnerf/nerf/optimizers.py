"""nerfstudio optimizer and scheduler configs for ESGD and ESGD-Max.

Each config builds a :mod:`gnerf.optim` optimizer through nerfstudio's
``OptimizerConfig.setup`` (every field except ``_target`` and ``max_norm`` becomes a keyword); the
defaults are the paper's (:data:`gnerf.optim.defaults.PAPER`). Any other :mod:`gnerf.optim`
optimizer runs under nerfstudio as ``OptimizerConfig(_target=Shampoo, lr=0.1, eps=1e-4)``.
The scheduler writes only Python floats into its state, so checkpoints load with
``torch.load(weights_only=True)``, the default from torch 2.6 on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple, Type

from torch.optim import Optimizer, lr_scheduler

from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig

from gnerf.optim import ESGD, ESGDMax
from gnerf.optim.defaults import PAPER


@dataclass
class ESGDOptimizerConfig(OptimizerConfig):
    """ESGD (running-mean curvature, as published); the hyperparameters of :class:`gnerf.optim.ESGD`."""

    _target: Type = ESGD
    lr: float = PAPER.nerf_lr
    betas: Tuple[float, float] = PAPER.betas
    eps: float = PAPER.eps
    weight_decay: float = 0.0
    precondition_warmup_steps: int = PAPER.precondition_warmup_steps
    """The first steps, each of which estimates the curvature."""
    precondition_frequency: int = PAPER.precondition_frequency
    """After them, the curvature is estimated every precondition_frequency steps."""


@dataclass
class ESGDMaxOptimizerConfig(ESGDOptimizerConfig):
    """ESGD-Max (exponentially weighted max curvature), the paper's optimizer for Gaussian-NeRF."""

    _target: Type = ESGDMax
    lr_warmup: float = PAPER.lr_warmup
    """The step size ramps as 1 - lr_warmup^k with the number of curvature updates k (0: off)."""


@dataclass
class ExponentialDecaySchedulerConfig(SchedulerConfig):
    """Exponential decay from the optimizer's lr to ``lr_final`` over ``max_steps`` steps.

    ``lr_final_forward_facing``, when set, replaces ``lr_final`` on scenes the dataparser marks
    forward-facing (the paper decays ESGD-Max 1 -> 0.1 on Blender, 1 -> 0.01 on LLFF / BLEFF).
    """

    _target: Type = field(default_factory=lambda: ExponentialDecayScheduler)
    lr_final: float = 0.1
    """Learning rate reached at ``max_steps``."""
    lr_final_forward_facing: Optional[float] = None
    """``lr_final`` for forward-facing scenes; None keeps ``lr_final``."""
    max_steps: int = 200_000
    """Steps over which the learning rate decays (it stays at ``lr_final`` afterwards)."""


class ExponentialDecayScheduler(Scheduler):
    """``lr(step) = lr_init * (lr_final / lr_init) ** min(step / max_steps, 1)``, in Python floats."""

    config: ExponentialDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        if lr_init <= 0 or self.config.lr_final <= 0:
            raise ValueError(f"exponential decay needs positive learning rates, got lr={lr_init}, "
                             f"lr_final={self.config.lr_final}")
        ratio = float(self.config.lr_final) / float(lr_init)
        max_steps = max(int(self.config.max_steps), 1)

        def factor(step: int) -> float:
            return float(ratio ** min(step / max_steps, 1.0))

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
