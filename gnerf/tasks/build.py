"""The network and optimizer of a fitting run, built from its configuration, and chunked prediction."""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from gnerf.errors import InputError
from gnerf.fields import CoordinateMLP
from gnerf.optim.configs import ESGDAdamStartConfig
from gnerf.tasks.config import FieldConfig, FitConfig, task_lr

__all__ = ["build_field", "build_run_optimizer", "predict", "schedule_for", "stream_seeds"]


def stream_seeds(seed: int) -> Tuple[int, int]:
    """Seeds of a run's shuffling and curvature-probe generators, derived from its ``--seed``.

    ``torch.manual_seed(seed)`` draws the initialisation; the other two streams get seeds spawned from
    ``seed`` by :class:`numpy.random.SeedSequence`, so the three are independent (a generator seeded
    with ``seed`` itself would repeat the initialisation's random words as the first minibatch order
    and the first probes). Every rank derives the same seeds.
    """
    import numpy as np

    shuffle, probes = (
        int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(2)
    )
    return shuffle, probes


def build_field(cfg: FieldConfig, in_dim: int, out_dim: int, default_sigma: float) -> CoordinateMLP:
    """The task's :class:`CoordinateMLP` from ``cfg`` with the paper's activation defaults.

    Raises:
        InputError: the field options (``--field.*``) are out of range; the field's constructor checks them.
    """
    act = cfg.activation.lower()
    kwargs: Dict[str, float] = {
        "gaussian": {"sigma": default_sigma if cfg.sigma is None else cfg.sigma},
        "sine": {"omega": cfg.omega},
        "wavelet": {"omega0": cfg.omega0, "s0": cfg.s0},
    }.get(act, {})
    pe = cfg.positional_encoding if cfg.positional_encoding is not None else (8 if act == "relu" else 0)
    try:
        return CoordinateMLP(
            in_dim,
            out_dim,
            hidden_dim=cfg.hidden_dim,
            num_layers=cfg.num_layers,
            activation=act,
            activation_kwargs=kwargs,
            positional_encoding=pe,
        )
    except ValueError as err:  # the constructor's checks of the --field options
        raise InputError(f"--field: {err}") from None


#: esgd-adam-start's Adam phase in a fitting run when --optim.adam-steps is not given: 25 epochs, the 800 steps
#: it was tuned on at 128 x 128 with batch 512 (docs/reproduction_seeds.md); 3,200 steps at the paper's 256 x 256.
ADAM_EPOCHS = 25.0


def build_run_optimizer(cfg: FitConfig, model: nn.Module, steps_per_epoch: int) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optim`` over ``model``, with :func:`~gnerf.tasks.config.task_lr`'s lr.

    Curvature optimizers draw their probes from the run's own stream; esgd-adam-start's Adam phase
    is 25 epochs unless ``--optim.adam-steps`` is given.
    """
    opt = dataclasses.replace(cfg.optim, lr=task_lr(cfg.optim, cfg.field.activation))
    if isinstance(opt, ESGDAdamStartConfig) and opt.adam_steps is None:
        opt = dataclasses.replace(opt, adam_steps=round(ADAM_EPOCHS * steps_per_epoch))
    seed = stream_seeds(cfg.seed)[1] if opt.curvature else None  # the probes' own stream, identical on every rank
    try:
        optimizer = opt.build(list(model.parameters()), seed=seed)
    except ValueError as err:  # the config's and the optimizer's checks of the optim:NAME options
        raise InputError(f"optim:{opt.name}: {err}") from None
    return optimizer


def schedule_for(
    cfg: FitConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, done_steps: int = 0
) -> LambdaLR:
    """The run's scheduler over ``optimizer``: ``cfg.schedule`` or the optimizer's registered one, over the run's
    ``cfg.epochs * steps_per_epoch`` steps, continuing after ``done_steps`` steps (a resumed run, whose
    optimizer state is loaded already)."""
    schedule = cfg.schedule if cfg.schedule is not None else cfg.optim.schedule
    return schedule.build(
        optimizer, task_lr(cfg.optim, cfg.field.activation), cfg.epochs * steps_per_epoch, last_step=done_steps - 1
    )


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    """``model(inputs)`` in chunks of ``batch_size`` rows (no gradients)."""
    return torch.cat([model(inputs[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size)])
