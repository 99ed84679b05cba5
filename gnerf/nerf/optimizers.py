"""gnerf's optimizer and schedule descriptions as nerfstudio optimizer and scheduler configs.

Every optimizer config of :mod:`gnerf.optim.configs` (and the contenders) is also a nerfstudio
``OptimizerConfig``: :func:`nerfstudio_optimizer` makes the subclass of both whose ``setup(params)``
is the gnerf config's ``build``, so ``ns-train`` takes exactly the fields the fitting commands take
(``--optimizers.fields.optimizer.lr``, ``--optimizers.fields.optimizer.precondition-frequency``, ...).
:data:`NERF_OPTIMIZERS` holds one per registered name. nerfstudio's ``max_norm`` (gradient clipping)
is kept. :class:`GnerfSchedulerConfig` runs a :mod:`gnerf.optim.schedules` schedule as nerfstudio's
scheduler; its state holds only Python floats, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Type

from torch.optim import Optimizer, lr_scheduler

from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig

from gnerf.errors import InputError
from gnerf.optim import OPTIMIZERS
from gnerf.optim.configs import OptimizerConfig as GnerfOptimizerConfig
from gnerf.optim.schedules import SCHEDULES, ConstantSchedule, ScheduleConfig

__all__ = ["NERF_OPTIMIZERS", "GnerfScheduler", "GnerfSchedulerConfig", "nerfstudio_optimizer"]


def nerfstudio_optimizer(config: Type[GnerfOptimizerConfig]) -> Type[OptimizerConfig]:
    """The nerfstudio ``OptimizerConfig`` that is also ``config``: same fields and defaults, built by ``config.build``."""

    def setup(self, params) -> Optimizer:
        if self.lr is None:
            raise InputError(
                f"{type(self).__name__}: nerfstudio needs an explicit lr (--optimizers.<group>.optimizer.lr)"
            )
        try:
            return config.build(self, params)
        except (
            ValueError
        ) as err:  # the config's and the optimizer's checks of the --optimizers.<group>.optimizer options
            raise InputError(f"--optimizers.<group>.optimizer ({config.name}): {err}") from None

    cls = dataclasses.make_dataclass(
        config.__name__.replace("Config", "") + "OptimizerConfig",
        [("_target", Type, field(default=config))],
        bases=(config, OptimizerConfig),
        namespace={"setup": setup, "__doc__": config.__doc__, "__module__": __name__},
    )
    return cls


#: The nerfstudio optimizer config of every registered optimizer, by name.
NERF_OPTIMIZERS: Dict[str, Type[OptimizerConfig]] = {
    name: nerfstudio_optimizer(cls) for name, cls in OPTIMIZERS.items()
}
globals().update(
    {cls.__name__: cls for cls in NERF_OPTIMIZERS.values()}
)  # importable by name, e.g. ESGDMaxOptimizerConfig
__all__ += [cls.__name__ for cls in NERF_OPTIMIZERS.values()]


@dataclass
class GnerfSchedulerConfig(SchedulerConfig):
    """A gnerf schedule (:mod:`gnerf.optim.schedules`) as nerfstudio's scheduler, in nerfstudio's vocabulary.

    ``lr_final_forward_facing``, when set, replaces ``lr_final`` on scenes the dataparser marks
    forward-facing (the paper decays ESGD-Max 1 -> 0.1 on Blender, 1 -> 0.01 on LLFF / BLEFF);
    :class:`gnerf.nerf.trainer.CurvatureTrainer` applies it when it builds the optimizers.
    """

    _target: Type = field(default_factory=lambda: GnerfScheduler)
    kind: Literal["constant", "cosine", "exponential", "linear"] = "exponential"
    """The schedule: constant, cosine, exponential or linear (gnerf.optim.schedules)."""
    lr_final: float = 0.1
    """Learning rate reached at max_steps (cosine, exponential, linear)."""
    max_steps: int = 200_000
    """Steps (after the warm-up) over which lr_final is reached."""
    warmup_steps: int = 0
    """Steps of a linear ramp from 0 before the schedule starts."""
    lr_final_forward_facing: Optional[float] = None
    """lr_final on forward-facing scenes; None keeps lr_final."""

    def schedule(self) -> ScheduleConfig:
        """The :mod:`gnerf.optim.schedules` description of this schedule."""
        common = dict(warmup_steps=self.warmup_steps, max_steps=self.max_steps)
        if self.kind == "constant":
            return ConstantSchedule(**common)
        return SCHEDULES[self.kind](lr_final=self.lr_final, **common)

    def for_forward_facing(self) -> GnerfSchedulerConfig:
        """This config with ``lr_final_forward_facing`` as its ``lr_final`` (itself when unset)."""
        if self.lr_final_forward_facing is None:
            return self
        return dataclasses.replace(self, lr_final=self.lr_final_forward_facing)


class GnerfScheduler(Scheduler):
    """Builds the schedule's ``LambdaLR`` over nerfstudio's optimizer."""

    config: GnerfSchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        schedule = self.config.schedule()
        try:
            schedule.check(float(lr_init))
        except ValueError as err:
            raise InputError(f"--optimizers.<group>.scheduler: {err}") from None
        return schedule.build(optimizer, float(lr_init), self.config.max_steps)
