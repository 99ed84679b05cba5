"""The configuration of a fitting run: the options every command shares, checked once.

:class:`FitConfig` (with its :class:`FieldConfig` and :class:`OptimConfig`) is what the command
lines parse; :func:`validate_config` rejects bad options and unknown names before any work is done
and returns the optimizer's registry entry, so that the run looks its name up only there.
:class:`Problem` is what a task hands to the loop, :class:`FitResult` what the loop hands back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from gnerf.fields import ACTIVATIONS
from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.curvature import HVP_METHODS
from gnerf.optim.registry import OptimizerSpec, get_optimizer_spec

__all__ = [
    "FieldConfig",
    "FitConfig",
    "FitResult",
    "OptimConfig",
    "Problem",
    "config_to_dict",
    "default_output_dir",
    "validate_config",
]


@dataclass
class FieldConfig:
    """The coordinate network (:class:`gnerf.fields.CoordinateMLP`)."""

    activation: str = "gaussian"
    """Hidden activation: gaussian, sine, wavelet or relu."""
    hidden_dim: int = 256
    """Width of every hidden layer."""
    num_layers: int = 5
    """Number of linear layers, the output layer included (the paper's "5-layer network")."""
    sigma: Optional[float] = None
    """Gaussian width; None picks the task's paper default (images 0.05, shapes 0.09)."""
    omega: float = 30.0
    """Sine frequency (SIREN initialisation is applied automatically)."""
    omega0: float = 10.0
    """Wavelet frequency."""
    s0: float = 10.0
    """Wavelet scale."""
    positional_encoding: Optional[int] = None
    """Positional-encoding frequencies L; None: 8 for relu (the paper's ReLU + PE), 0 otherwise."""


@dataclass
class OptimConfig:
    """The optimizer, built by name through :func:`gnerf.optim.registry.build_optimizer`."""

    name: str = "esgd"
    """Registered optimizer name, e.g. adam, esgd, esgd-max."""
    lr: Optional[float] = None
    """Learning rate; None: the paper's (Adam 1e-4, 1e-3 for relu; ESGD/ESGD-Max 0.15), or gnerf's for
    esgd-adam-start (0.1)."""
    precondition_warmup_steps: Optional[int] = None
    """esgd, esgd-max, esgd-adam-start: first steps that all update the curvature (None: the paper's 50)."""
    precondition_frequency: Optional[int] = None
    """Steps between preconditioner updates after the warm-up (None: the optimizer's; esgd* 100, kfac 100,
    shampoo 1)."""
    hvp_method: Optional[str] = None
    """Hutchinson optimizers (esgd, esgd-max, adahessian-e/-j): double-backward or forward-over-reverse
    (None: double-backward, the faster; see docs/benchmarks.md)."""
    adam_epochs: Optional[float] = None
    """esgd-adam-start: Adam's epochs before ESGD takes over, rounded to whole steps (None: 25 epochs, unless
    adam_steps is given)."""
    adam_steps: Optional[int] = None
    """esgd-adam-start: Adam's steps before ESGD takes over, instead of adam_epochs."""


@dataclass
class FitConfig:
    """Options every fitting command shares (the tasks subclass this)."""

    output_dir: Optional[Path] = None
    """Run folder; None: outputs/<task>/<input>-<activation>-<optimizer>-<timestamp>."""
    epochs: int = 100
    """Passes over the training set."""
    batch_size: int = 512
    """Minibatch size (coordinates per step); minibatches are reshuffled every epoch."""
    seed: int = 0
    """Seed for the network initialisation, shuffling and curvature probes."""
    device: Optional[str] = None
    """torch device; None: cuda when available, else cpu."""
    resume: bool = False
    """Continue the run in output_dir from its checkpoint (epochs may be raised; the same epochs train nothing
    and write the outputs again; fewer are refused)."""
    eval_batch_size: int = 65536
    """Coordinates per forward pass when evaluating and reconstructing."""
    log_every: int = 100
    """Steps between NaN checks, progress-bar and tensorboard loss updates."""
    progress: bool = True
    """Show a progress bar."""
    threads: Optional[int] = None
    """CPU threads torch may use (None: torch's default); 1 is fastest on a busy machine."""
    dist_timeout: float = 600.0
    """Under torchrun: seconds a rank waits for the others in a collective before it gives up."""
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)


@dataclass
class Problem:
    """What a task hands to :func:`fit`.

    Attributes:
        inputs: ``[N, in_dim]`` training coordinates, on the training device.
        targets: ``[N, out_dim]`` training targets, on the same device.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` (mean over the minibatch).
        evaluate: ``evaluate(model) -> {metric: value}``, called after every epoch in eval mode
            under ``torch.no_grad()``; e.g. ``{"psnr": 31.2}``.
        sigma: the task's default Gaussian width (used when ``FieldConfig.sigma`` is None).
    """

    inputs: Tensor
    targets: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    evaluate: Callable[[nn.Module], Dict[str, float]]
    sigma: float


@dataclass
class FitResult:
    """The trained model and the per-epoch metrics rows of the whole run (resumed epochs included)."""

    model: nn.Module
    history: List[Dict[str, float]]
    output_dir: Path
    device: torch.device
    is_main: bool = True
    """False on the ranks other than 0 of a torchrun job, which write nothing."""


def default_output_dir(task: str, stem: str, cfg: FitConfig) -> Path:
    """``outputs/<task>/<stem>-<activation>-<optimizer>-<timestamp>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / task / f"{stem}-{cfg.field.activation}-{cfg.optim.name}-{stamp}"


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; paths become strings."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def validate_config(cfg: FitConfig) -> OptimizerSpec:
    """Reject bad loop options and unknown optimizer / activation names before any work is done.

    Returns the registry entry of ``cfg.optim.name`` (the one look-up of that name in a run).
    """
    for name, minimum in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("log_every", 1)):
        if getattr(cfg, name) < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(cfg, name)}")
    try:
        spec = get_optimizer_spec(cfg.optim.name)
    except ValueError as err:
        raise ValueError(f"--optim.name {cfg.optim.name!r}: {err}") from None
    if cfg.optim.hvp_method is not None:
        if not needs_hessian_vector_products(spec.factory):
            raise ValueError(f"--optim.hvp-method applies to esgd, esgd-max, adahessian-e and adahessian-j, "
                             f"not to --optim.name {cfg.optim.name!r}; remove it")
        if cfg.optim.hvp_method not in HVP_METHODS:
            raise ValueError(f"--optim.hvp-method {cfg.optim.hvp_method!r}: choose one of {', '.join(HVP_METHODS)}")
    if cfg.field.activation.lower() not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cfg.field.activation!r} (--field.activation); "
                         f"choose one of: {', '.join(ACTIVATIONS)}")
    return spec
