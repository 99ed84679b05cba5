r"""Learning-rate schedules, described once and built as ``torch.optim.lr_scheduler.LambdaLR``.

The vocabulary is nerfstudio's scheduler configs': ``lr_final`` (the learning rate reached at the
end), ``max_steps`` (the steps over which it is reached; ``None``: the run's length, filled in by the
fitting commands and the nerfstudio trainer) and ``warmup_steps`` (a linear ramp from 0). With
:math:`\eta_0` the optimizer's lr, :math:`r = \eta_\text{final} / \eta_0`, :math:`T` = ``max_steps``
and :math:`s` the step after the warm-up:

.. math::
    \text{constant:}\ \eta_s = \eta_0 \qquad
    \text{cosine:}\ \eta_s = \eta_0 \left(r + (1 - r)\,\tfrac{1 + \cos(\pi \min(s/T, 1))}{2}\right) \qquad
    \text{exponential:}\ \eta_s = \eta_0\, r^{\min(s/T, 1)} \qquad
    \text{linear:}\ \eta_s = \eta_0 \left(r + (1 - r)\,(1 - \min(s/T, 1))\right)

Every param group is scaled by the same factor, so an optimizer whose groups have different
learning rates (Muon's hidden matrices and Adam's rest, say) keeps their ratio. The schedulers hold
only Python floats in their state, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Type

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "SCHEDULES",
    "ConstantSchedule",
    "CosineSchedule",
    "ExponentialSchedule",
    "LinearSchedule",
    "ScheduleConfig",
    "schedule_name",
]


@dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule; :meth:`build` makes its ``LambdaLR``."""

    warmup_steps: int = 0
    """Steps of a linear ramp from 0 to the optimizer's lr before the schedule starts."""
    max_steps: Optional[int] = None
    """Steps (after the warm-up) over which lr_final is reached; None: the run's length."""

    def factor(self, step: int, lr_init: float, max_steps: int) -> float:
        """The multiplier of the initial lr after ``step`` steps of the schedule proper."""
        raise NotImplementedError

    def check(self, lr_init: float) -> None:
        """Raise ``ValueError`` naming a setting that cannot work with ``lr_init``."""
        if self.warmup_steps < 0:
            raise ValueError(f"invalid warmup_steps={self.warmup_steps}: must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"invalid max_steps={self.max_steps}: must be >= 1")

    def build(self, optimizer: Optimizer, lr_init: float, run_steps: int, last_step: int = -1) -> LambdaLR:
        """The scheduler over ``optimizer`` (whose main lr is ``lr_init``) for a run of ``run_steps`` steps.

        ``last_step`` is the number of steps already taken minus one, for a resumed run (the
        optimizer's param groups must then carry ``initial_lr``, as a loaded state does).
        """
        self.check(lr_init)
        warmup = int(self.warmup_steps)
        total = max(int(self.max_steps if self.max_steps is not None else run_steps - warmup), 1)

        def multiplier(step: int) -> float:
            if step < warmup:
                return float(step + 1) / float(warmup + 1)
            return float(self.factor(step - warmup, lr_init, total))

        return LambdaLR(optimizer, multiplier, last_epoch=last_step)


@dataclass(frozen=True)
class ConstantSchedule(ScheduleConfig):
    """The optimizer's lr throughout (after the warm-up, if any): the paper's image and shape protocol."""

    def factor(self, step: int, lr_init: float, max_steps: int) -> float:
        return 1.0


@dataclass(frozen=True)
class _DecayToFinal(ScheduleConfig):
    """A decay from the optimizer's lr to ``lr_final`` (0 or more), then ``lr_final``."""

    lr_final: float = 0.0
    """Learning rate reached after max_steps."""

    def check(self, lr_init: float) -> None:
        super().check(lr_init)
        if not 0.0 <= self.lr_final < math.inf:
            raise ValueError(f"invalid lr_final={self.lr_final}: must be a finite number >= 0")

    def factor(self, step: int, lr_init: float, max_steps: int) -> float:
        r = self.lr_final / lr_init if lr_init > 0 else 0.0
        return r + (1.0 - r) * self.shape(min(step / max_steps, 1.0))

    def shape(self, t: float) -> float:
        """The decay from 1 at ``t = 0`` to 0 at ``t = 1``."""
        raise NotImplementedError


@dataclass(frozen=True)
class CosineSchedule(_DecayToFinal):
    """Half a cosine from the optimizer's lr to ``lr_final``, then ``lr_final``."""

    def shape(self, t: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class ExponentialSchedule(ScheduleConfig):
    """Exponential decay from the optimizer's lr to ``lr_final`` (the paper's NeRF schedule), then ``lr_final``."""

    lr_final: float = 0.1
    """Learning rate reached after max_steps (> 0)."""

    def check(self, lr_init: float) -> None:
        super().check(lr_init)
        if not (0.0 < self.lr_final < math.inf and lr_init > 0):
            raise ValueError(
                f"exponential decay needs positive learning rates, got lr={lr_init}, lr_final={self.lr_final}"
            )

    def factor(self, step: int, lr_init: float, max_steps: int) -> float:
        return (self.lr_final / lr_init) ** min(step / max_steps, 1.0)


@dataclass(frozen=True)
class LinearSchedule(_DecayToFinal):
    """A straight line from the optimizer's lr to ``lr_final`` (0 by default: linear decay to zero), then
    ``lr_final``. Not one of nerfstudio's schedulers; its settings are the cosine's."""

    def shape(self, t: float) -> float:
        return 1.0 - t


#: Every schedule by its name: the fitting commands' ``schedule:NAME``, a spec's ``schedule=NAME`` and
#: ``GnerfSchedulerConfig.kind``.
SCHEDULES: Dict[str, Type[ScheduleConfig]] = {
    "constant": ConstantSchedule,
    "cosine": CosineSchedule,
    "exponential": ExponentialSchedule,
    "linear": LinearSchedule,
}


def schedule_name(schedule: ScheduleConfig) -> str:
    """``cosine`` for a :class:`CosineSchedule`: its name in :data:`SCHEDULES`."""
    return next(name for name, cls in SCHEDULES.items() if type(schedule) is cls)
