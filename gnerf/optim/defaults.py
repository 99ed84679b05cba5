"""The paper's ESGD / ESGD-Max settings, defined once, and the preconditioner cadence every optimizer shares.

Chng, Saratchandran & Lucey, "Preconditioners for the Stochastic Training of Neural Fields",
supplementary sec. 4: ESGD with lr 0.15 on images and shapes (0.1 for ReLU + positional encoding),
ESGD-Max with lr 1 on Gaussian-NeRF, both with the curvature estimated on each of the first 50 steps
and then on every 100th. The optimizers' keyword defaults, the optimizer registry, the nerfstudio
method configs and the benchmarks all read these values from here.

The cadence has one vocabulary across gnerf's optimizers, in the style of Distributed Shampoo:
``precondition_frequency`` is the number of steps between updates of the preconditioner (ESGD's
curvature estimate, Shampoo's inverse roots, K-FAC's inverses), and
``precondition_warmup_steps`` (ESGD's family) the number of first steps that all update it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

__all__ = ["PAPER", "PaperSettings", "check_cadence", "is_preconditioning_step"]


@dataclass(frozen=True)
class PaperSettings:
    """The published ESGD / ESGD-Max hyperparameters."""

    lr: float = 0.15
    """ESGD and ESGD-Max on images and shapes (also AdaHessian's, as compared in the paper)."""
    relu_lr: float = 0.1
    """ESGD on the ReLU + positional-encoding network (the configuration published with the paper)."""
    nerf_lr: float = 1.0
    """ESGD-Max on Gaussian-NeRF, decayed exponentially to 0.1 (Blender) or 0.01 (forward-facing scenes)."""
    betas: Tuple[float, float] = (0.9, 0.999)
    """Momentum and curvature averaging coefficients."""
    eps: float = 1e-4
    """Added to the square root of the curvature."""
    lr_warmup: float = 0.99
    """ESGD-Max's step-size ramp ``1 - lr_warmup^k`` over the curvature updates ``k``."""
    precondition_warmup_steps: int = 50
    """The first steps, each of which estimates the curvature."""
    precondition_frequency: int = 100
    """After them, the curvature is estimated on every ``precondition_frequency``-th step."""


#: The paper's settings.
PAPER = PaperSettings()


def is_preconditioning_step(step: int, frequency: int, warmup_steps: int = 0) -> bool:
    """Whether the preconditioner is updated at ``step`` (0-based: the number of steps taken before).

    Without warm-up: steps 0, ``frequency``, ``2 * frequency``, ... With ``warmup_steps`` w >= 1 each
    of the first w steps updates it, then every ``frequency``-th step counted from the last of them
    (steps w - 1 + ``frequency``, w - 1 + 2 ``frequency``, ...: 0-49, 149, 249, ... with the paper's
    50 and 100), as the ESGD published with the paper does (it updates when ``frequency`` steps have
    passed since the last update).
    """
    return step < warmup_steps or (step - max(warmup_steps - 1, 0)) % frequency == 0


def check_cadence(**values: int) -> None:
    """Raise ``ValueError`` naming the first cadence setting out of range: ``*_warmup_steps`` must be
    >= 0, a frequency >= 1."""
    for name, value in values.items():
        low = 0 if name.endswith("warmup_steps") else 1
        if int(value) < low:
            raise ValueError(f"invalid {name}={value}: must be >= {low}")
