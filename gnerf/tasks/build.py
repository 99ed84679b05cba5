"""The network and optimizer of a fitting run, built from its configuration, and chunked prediction."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from gnerf.fields import CoordinateMLP
from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.registry import OptimizerSpec, build_optimizer
from gnerf.tasks.config import FieldConfig, FitConfig

__all__ = ["build_field", "build_run_optimizer", "predict", "stream_seeds"]


def stream_seeds(seed: int) -> Tuple[int, int]:
    """Seeds of a run's shuffling and curvature-probe generators, derived from its ``--seed``.

    ``torch.manual_seed(seed)`` draws the initialisation; the other two streams get seeds spawned from
    ``seed`` by :class:`numpy.random.SeedSequence`, so the three are independent (a generator seeded
    with ``seed`` itself would repeat the initialisation's random words as the first minibatch order
    and the first probes). Every rank derives the same seeds.
    """
    import numpy as np

    shuffle, probes = (int(s.generate_state(1, np.uint64)[0] >> np.uint64(1))
                       for s in np.random.SeedSequence(seed).spawn(2))
    return shuffle, probes


def build_field(cfg: FieldConfig, in_dim: int, out_dim: int, default_sigma: float) -> CoordinateMLP:
    """The task's :class:`CoordinateMLP` from ``cfg`` with the paper's activation defaults."""
    act = cfg.activation.lower()
    kwargs: Dict[str, float] = {
        "gaussian": {"sigma": default_sigma if cfg.sigma is None else cfg.sigma},
        "sine": {"omega": cfg.omega},
        "wavelet": {"omega0": cfg.omega0, "s0": cfg.s0},
    }.get(act, {})
    pe = cfg.positional_encoding if cfg.positional_encoding is not None else (8 if act == "relu" else 0)
    return CoordinateMLP(in_dim, out_dim, hidden_dim=cfg.hidden_dim, num_layers=cfg.num_layers,
                         activation=act, activation_kwargs=kwargs, positional_encoding=pe)


#: esgd-adam-start's Adam phase in a fitting run: 25 epochs, the 800 steps it was tuned on at 128 x 128 with
#: batch 512 (docs/reproduction_seeds.md); 3,200 steps at the paper's 256 x 256 (docs/reproduction.md).
ADAM_EPOCHS = 25.0


def build_run_optimizer(spec: OptimizerSpec, cfg: FitConfig, model: nn.Module,
                        steps_per_epoch: int) -> torch.optim.Optimizer:
    """The optimizer ``spec`` (the registry entry of ``cfg.optim.name``) over ``model`` with ``cfg.optim``'s options.

    ``steps_per_epoch`` converts ``--optim.adam-epochs`` to the optimizer's ``adam_steps``.
    """
    opt = cfg.optim
    if opt.adam_steps is not None and opt.adam_epochs is not None:
        raise ValueError("--optim.adam-steps and --optim.adam-epochs both set the Adam phase; give one")
    if opt.adam_epochs is not None and opt.adam_epochs < 0:
        raise ValueError(f"--optim.adam-epochs {opt.adam_epochs}: must be >= 0")
    adam_steps = opt.adam_steps
    if adam_steps is None and (opt.adam_epochs is not None or spec.accepts("adam_steps")):
        adam_steps = round((ADAM_EPOCHS if opt.adam_epochs is None else opt.adam_epochs) * steps_per_epoch)
    options = {k: v for k, v in (("precondition_warmup_steps", opt.precondition_warmup_steps),
                                 ("precondition_frequency", opt.precondition_frequency),
                                 ("hvp_method", opt.hvp_method), ("adam_steps", adam_steps)) if v is not None}
    if needs_hessian_vector_products(spec.factory):
        options["seed"] = stream_seeds(cfg.seed)[1]  # the probes' own stream, identical on every rank
    try:
        return build_optimizer(spec.name, model.parameters(), activation=cfg.field.activation.lower(), lr=opt.lr,
                               **options)
    except ValueError as err:
        raise ValueError(f"--optim.name {opt.name!r}: {err}") from None


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    """``model(inputs)`` in chunks of ``batch_size`` rows (no gradients)."""
    return torch.cat([model(inputs[i:i + batch_size]) for i in range(0, inputs.shape[0], batch_size)])
