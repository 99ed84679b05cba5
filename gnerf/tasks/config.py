"""The configuration of a fitting run: the options every command shares, checked once.

:class:`FitConfig` (with its :class:`FieldConfig`, one of the registered optimizer configs of
:mod:`gnerf.optim.configs` and a schedule) is what the command lines parse; :func:`validate_config`
rejects bad options and names before any work is done.
:class:`Problem` is what a task hands to the loop, :class:`FitResult` what the loop hands back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from gnerf.errors import InputError
from gnerf.fields import ACTIVATIONS
from gnerf.optim import OPTIMIZERS, OptimizerConfig
from gnerf.optim.configs import ESGDConfig
from gnerf.optim.defaults import PAPER
from gnerf.optim.schedules import SCHEDULES, schedule_name

__all__ = [
    "FieldConfig",
    "FitConfig",
    "FitResult",
    "MAX_LR",
    "OptimizerChoice",
    "PAPER_LR_BY_ACTIVATION",
    "ScheduleChoice",
    "Problem",
    "config_to_dict",
    "default_output_dir",
    "task_lr",
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


def _optimizer_union() -> Any:
    """The registered optimizer configs as a tyro union of subcommands, ``optim:NAME``, each with its defaults."""
    import tyro

    return tyro.extras.subcommand_type_from_defaults({name: cls(lr=None) for name, cls in OPTIMIZERS.items()})


def _schedule_union() -> Any:
    import tyro

    return tyro.extras.subcommand_type_from_defaults({name: cls() for name, cls in SCHEDULES.items()})


#: The optimizer of a fitting run: one of the registered configs (gnerf.optim.configs.OPTIMIZERS).
OptimizerChoice = _optimizer_union()
#: A learning-rate schedule (gnerf.optim.schedules).
ScheduleChoice = _schedule_union()

#: The paper's learning rates that depend on the activation (supplementary 4.1-4.2 and the configuration
#: published with it), used when --optim.lr is not given; every other pair uses the optimizer config's default.
PAPER_LR_BY_ACTIVATION: Dict[Tuple[str, str], float] = {
    ("adam", "relu"): 1e-3,
    ("kfac-adam", "relu"): 1e-3,  # the published code's K-FAC steps with its Adam's lr
    ("esgd", "relu"): PAPER.relu_lr,
    ("shampoo", "sine"): 0.01,
}


def task_lr(optim: OptimizerConfig, activation: str) -> float:
    """The learning rate a fitting run uses: ``--optim.lr`` if given, else the paper's for the activation."""
    if optim.lr is not None:
        return float(optim.lr)
    return PAPER_LR_BY_ACTIVATION.get((optim.name, activation.lower()), type(optim)().resolved_lr())


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
    allow_changed_optim: bool = False
    """With --resume: continue with another --optim.lr or schedule than the run's (e.g. a lower lr after a NaN
    stop); the optimizer's state is kept and the new lr applies from the next step."""
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
    optim: OptimizerChoice = dataclasses.field(default_factory=lambda: ESGDConfig(lr=None))
    """The optimizer and its hyperparameters: optim:NAME (lr None: the paper's for the activation, or the
    optimizer's registered lr)."""
    schedule: Optional[ScheduleChoice] = None
    """Learning-rate schedule over the run (schedule:constant, schedule:cosine, schedule:exponential);
    None: the optimizer's registered one (constant for the paper's optimizers, as the paper trains)."""


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


#: The largest --optim.lr accepted: far above any lr that trains (the paper's largest is 1), and far below the
#: values whose products with the gradients overflow float32.
MAX_LR = 1e6


def default_output_dir(task: str, stem: str, cfg: FitConfig) -> Path:
    """``outputs/<task>/<stem>-<activation>-<optimizer>-<timestamp>`` (:func:`gnerf.tasks.run.prepare_run` appends
    ``-2``, ``-3``, ... when a run started in the same second took that name)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / task / f"{stem}-{cfg.field.activation}-{cfg.optim.name}-{stamp}"


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; paths become strings, and the optimizer and schedule
    are named (``{"name": "esgd", "lr": ...}``, ``{"name": "cosine", ...}``)."""
    out = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    if isinstance(getattr(cfg, "optim", None), OptimizerConfig):
        out["optim"] = {"name": cfg.optim.name, **out["optim"]}
        schedule = cfg.schedule or cfg.optim.schedule
        out["schedule"] = {
            "name": schedule_name(schedule),
            **json.loads(json.dumps(dataclasses.asdict(schedule))),
        }
    return out


def _finite_positive(option: str, value: Optional[float]) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"{option} must be a finite number > 0, got {value}")


def validate_config(cfg: FitConfig) -> None:
    """Reject bad loop options, field options, activation names and optimizer hyperparameters before any work is
    done, naming the option."""
    for name, minimum in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("log_every", 1)):
        if getattr(cfg, name) < minimum:
            raise InputError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(cfg, name)}")
    if not 0 <= cfg.seed < 2**63:
        raise InputError(f"--seed must be an integer from 0 to 2**63 - 1, got {cfg.seed}")
    if cfg.allow_changed_optim and not cfg.resume:
        raise InputError("--allow-changed-optim applies to --resume only: a new run takes any --optim.lr and schedule")
    f = cfg.field
    for name in ("hidden_dim", "num_layers"):
        if getattr(f, name) < 1:
            raise InputError(f"--field.{name.replace('_', '-')} must be >= 1, got {getattr(f, name)}")
    for name in ("sigma", "omega", "omega0", "s0"):
        _finite_positive(f"--field.{name}", getattr(f, name))
    if f.positional_encoding is not None and f.positional_encoding < 0:
        raise InputError(f"--field.positional-encoding must be >= 0 frequencies (0: none), got {f.positional_encoding}")
    if not isinstance(cfg.optim, OptimizerConfig) or type(cfg.optim) not in OPTIMIZERS.values():
        raise InputError(f"--optim must be one of the registered optimizers: {', '.join(OPTIMIZERS)}")
    if cfg.field.activation.lower() not in ACTIVATIONS:
        raise InputError(
            f"unknown activation {cfg.field.activation!r} (--field.activation); choose one of: {', '.join(ACTIVATIONS)}"
        )
    lr = task_lr(cfg.optim, cfg.field.activation)
    if not 0 <= lr <= MAX_LR:  # NaN fails too
        raise InputError(f"--optim.lr {lr}: must be a finite number from 0 to {MAX_LR:g}")
    for option in dataclasses.fields(cfg.optim):  # the optimizer's own checks let NaN and infinity through
        value = getattr(cfg.optim, option.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if option.name == "lr" or not all(isinstance(v, float) for v in values) or not values:
            continue
        name = f"--optim.{option.name.replace('_', '-')}"
        if option.name.endswith("lr") and not all(0 <= v <= MAX_LR for v in values):
            raise InputError(f"{name} {value}: must be a finite number from 0 to {MAX_LR:g}")
        if not all(math.isfinite(v) for v in values):
            raise InputError(f"{name} {value}: must be a finite number")
    try:
        (cfg.schedule or cfg.optim.schedule).check(lr)
    except ValueError as err:
        raise InputError(f"--schedule: {err}") from None
