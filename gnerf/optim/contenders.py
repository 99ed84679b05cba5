"""The optimizers a neural-field researcher compares against today, registered beside gnerf's own.

- ``muon``: ``torch.optim.Muon``'s update on the hidden weight matrices, ``torch.optim.Adam`` on the first
  and last layers and every bias (as in "Optimizing Rank for High-Fidelity Implicit Neural
  Representations", arXiv 2512.14366, and its code), one optimizer (:class:`gnerf.optim.muon.MuonAdam`,
  whose Newton-Schulz iteration runs in float32 on a CPU);
- ``adam-cosine``: ``torch.optim.Adam`` with a tuned lr and a cosine schedule;
- ``adam-linear``: the same Adam with a linear decay to 0, the schedule Adam's schedule sweep chose;
- ``soap`` and ``psgd-kron``: heavyball's ``SOAP`` and ``PSGDKron``;
- ``schedulefree-adamw``: ``schedulefree.AdamWScheduleFree``, which needs ``optimizer.train()`` before
  training steps and ``optimizer.eval()`` before evaluation (its averaged weights); the fitting loop
  does both for any optimizer that has them (:func:`has_train_eval_modes`).

Each config's defaults, lr and schedule included, are its registered settings: the fitting commands
run the contender by its name alone (``optim:muon``). How they were chosen is stated in each
config's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import torch
from torch.optim import Optimizer

from gnerf.optim.configs import OptimizerConfig, register_optimizer
from gnerf.optim.muon import MuonAdam
from gnerf.optim.schedules import CosineSchedule, LinearSchedule, ScheduleConfig

__all__ = [
    "AdamCosineConfig",
    "AdamLinearConfig",
    "MuonConfig",
    "PSGDKronConfig",
    "SOAPConfig",
    "ScheduleFreeAdamWConfig",
    "has_train_eval_modes",
    "keep_saved_state_dtypes",
    "psgd_kron",
]


def has_train_eval_modes(optimizer: object) -> bool:
    """Whether ``optimizer`` must be switched with ``.train()`` / ``.eval()`` (Schedule-Free's convention)."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


@register_optimizer
@dataclass
class MuonConfig(OptimizerConfig):
    """Muon on the hidden matrices, Adam on the rest (:class:`MuonAdam`), cosine to 0 on both.

    Registered settings: Muon lr 6.67e-5 with ``adjust_lr_fn="match_rms_adamw"`` and no weight decay, Adam
    1e-4, cosine to 0. The Muon lr won its sweep on kodim01-04 (``python -m experiments.sweep``, docs/sweep.md:
    128 x 128, 100 epochs; mean final PSNR 83.27 dB against 75.90 at 2e-4, the INR recipe's first setting that
    trained at all, and 56.15 at 2.22e-5; lr 5e-3 and 2e-2 stay near 14 dB with this Gaussian network). Adam's lr and
    the schedule are not swept.
    """

    name: ClassVar[str] = "muon"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 6.67e-5
    """Muon's learning rate on the hidden matrices."""
    adam_lr: float = 1e-4
    """Adam's learning rate on the first and last layers and the biases."""
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    """Newton-Schulz iterations."""
    adjust_lr_fn: str = "match_rms_adamw"
    """torch.optim.Muon's lr adjustment: original, match_rms_adamw or spectral_unclamped."""
    weight_decay: float = 0.0
    ns_dtype: str = "auto"
    """Precision of the Newton-Schulz iteration: auto (bfloat16 on CUDA as torch.optim.Muon, float32 elsewhere),
    bfloat16, float32 or float64."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return MuonAdam(
            params,
            lr=self.resolved_lr(),
            adam_lr=self.adam_lr,
            momentum=self.momentum,
            nesterov=self.nesterov,
            ns_steps=self.ns_steps,
            adjust_lr_fn=self.adjust_lr_fn,
            weight_decay=self.weight_decay,
            ns_dtype=self.ns_dtype,
        )


@register_optimizer
@dataclass
class AdamCosineConfig(OptimizerConfig):
    """``torch.optim.Adam`` with a cosine schedule to 0 at lr 1e-4, the paper's lr: the winner of its sweep on
    kodim01-04 (``python -m experiments.sweep``, docs/sweep.md: mean final PSNR 51.14 dB against 46.65 at 3e-4 and
    32.71 at 3.33e-5)."""

    name: ClassVar[str] = "adam-cosine"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 1e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return torch.optim.Adam(
            params, lr=self.resolved_lr(), betas=tuple(self.betas), eps=self.eps, weight_decay=self.weight_decay
        )


@register_optimizer
@dataclass
class AdamLinearConfig(AdamCosineConfig):
    """``torch.optim.Adam`` at ``adam-cosine``'s lr (1e-4) with a linear decay to 0: the tuned Adam, lr and schedule.

    Its lr is the winner of ``adam-cosine``'s lr sweep; its schedule the winner of Adam's schedule sweep at that lr
    (``python -m experiments.schedule_sweep``, docs/schedule_sweep.md: mean final PSNR on kodim01-04 53.16 dB with the
    linear decay against 51.14 with the cosine, the exponential decay and the constant lower), the same two sweeps every
    contender had. At the paper's protocol it ends above the cosine on each of kodim01-04 (docs/contest.md).
    """

    name: ClassVar[str] = "adam-linear"
    schedule: ClassVar[ScheduleConfig] = LinearSchedule(lr_final=0.0)


def _heavyball():
    import heavyball
    import heavyball.utils

    # heavyball compiles its update with inductor by default; on a CPU that costs minutes per shape and
    # gains nothing measured here, so its steps run eagerly
    heavyball.utils.compile_mode = None
    return heavyball


def keep_saved_state_dtypes(optimizer: Optimizer) -> Optimizer:
    """Make ``optimizer.load_state_dict`` keep each state tensor's saved dtype.

    ``torch.optim.Optimizer.load_state_dict`` casts every floating-point state tensor to its parameter's dtype.
    PSGD-Kron keeps its running lower bound in float64 beside float32 parameters; cast, a resumed run continues
    from a rounded statistic and drifts from the run it resumes. The hooks put the saved tensor back wherever the
    cast changed its dtype.
    """
    saved: dict = {}

    def before(opt, state_dict):
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved["state"] = [state_dict["state"].get(i) for i in ids]

    def after(opt):
        params = [p for group in opt.param_groups for p in group["params"]]
        for p, value in zip(params, saved.pop("state", [])):
            if p in opt.state and value is not None:
                opt.state[p] = _with_dtypes(opt.state[p], value)

    optimizer.register_load_state_dict_pre_hook(before)
    optimizer.register_load_state_dict_post_hook(after)
    return optimizer


def _with_dtypes(loaded, saved):
    if isinstance(loaded, torch.Tensor) and isinstance(saved, torch.Tensor):
        return saved.to(loaded.device, copy=True) if loaded.dtype != saved.dtype else loaded
    if isinstance(loaded, dict) and isinstance(saved, dict):
        return {k: _with_dtypes(v, saved[k]) if k in saved else v for k, v in loaded.items()}
    if isinstance(loaded, (list, tuple)) and isinstance(saved, (list, tuple)) and len(loaded) == len(saved):
        return type(loaded)(_with_dtypes(u, v) for u, v in zip(loaded, saved))
    return loaded


@register_optimizer
@dataclass
class SOAPConfig(OptimizerConfig):
    """heavyball's ``SOAP`` (Adam in Shampoo's eigenbasis), cosine to 0, at lr 3.33e-5: the winner of its sweep on
    kodim01-04 (``python -m experiments.sweep``, docs/sweep.md: mean final PSNR 81.41 dB against 79.98 at 1e-4 and
    61.13 at 3e-4, heavyball's usual scale); its other settings are heavyball's defaults, not swept."""

    name: ClassVar[str] = "soap"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 3.33e-5
    betas: Tuple[float, float] = (0.9, 0.95)
    shampoo_beta: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    precondition_frequency: int = 10
    """Steps between eigenbasis updates."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        soap = _heavyball().SOAP(
            params,
            lr=self.resolved_lr(),
            betas=tuple(self.betas),
            shampoo_beta=self.shampoo_beta,
            eps=self.eps,
            weight_decay=self.weight_decay,
            precondition_frequency=self.precondition_frequency,
        )
        return keep_saved_state_dtypes(soap)


@register_optimizer
@dataclass
class PSGDKronConfig(OptimizerConfig):
    """heavyball's ``PSGDKron`` (Kronecker-factored preconditioned SGD), cosine to 0, at lr 3.33e-5: the winner of its
    sweep on kodim01-04 (``python -m experiments.sweep``, docs/sweep.md: mean final PSNR 78.47 dB against 72.13 at
    1e-4 and 52.35 at 3e-4); its other settings are heavyball's defaults, not swept."""

    name: ClassVar[str] = "psgd-kron"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 3.33e-5
    beta: float = 0.9
    """Momentum."""
    weight_decay: float = 0.0
    precond_lr: float = 0.1
    """Step size of the preconditioner's own update."""
    precond_update_prob: Optional[float] = None
    """Share of the steps that update the preconditioner (counted, not drawn); None: heavyball's schedule, every
    step for the first 1,000, then decaying to 0.03 by about step 4,500."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return psgd_kron(
            params,
            lr=self.resolved_lr(),
            beta=self.beta,
            weight_decay=self.weight_decay,
            precond_lr=self.precond_lr,
            precond_update_prob=self.precond_update_prob,
        )


def psgd_kron(
    params,
    *,
    lr: float,
    beta: float,
    weight_decay: float,
    precond_lr: float,
    precond_update_prob: Optional[float] = None,
) -> Optimizer:
    """heavyball's ``PSGDKron`` over ``params`` (heavyball's defaults otherwise), resuming with its saved dtypes;
    ``precond_update_prob`` None keeps heavyball's preconditioner update schedule."""
    if precond_update_prob is not None and not 0.0 < precond_update_prob <= 1.0:
        raise ValueError(f"invalid precond_update_prob={precond_update_prob}: must lie in (0, 1]")
    extra = {} if precond_update_prob is None else {"preconditioner_update_probability": float(precond_update_prob)}
    return keep_saved_state_dtypes(
        _heavyball().PSGDKron(params, lr=lr, beta=beta, weight_decay=weight_decay, precond_lr=precond_lr, **extra)
    )


@register_optimizer
@dataclass
class ScheduleFreeAdamWConfig(OptimizerConfig):
    """``schedulefree.AdamWScheduleFree`` (no schedule: constant lr after its warm-up) at lr 1.11e-4: the winner of its
    sweep on kodim01-04 (``python -m experiments.sweep``, docs/sweep.md: mean final PSNR 50.13 dB against 46.84 at
    3.33e-4 and 45.84 at 1e-3, the package's default); its other settings are the package's defaults, not swept."""

    name: ClassVar[str] = "schedulefree-adamw"
    lr: Optional[float] = 1.11e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Schedule-Free's own linear warm-up."""

    def check(self) -> None:
        super().check()
        if self.ema_decay is not None:
            raise ValueError("schedulefree-adamw evaluates its own averaged weights: leave ema_decay unset")

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        import schedulefree

        return schedulefree.AdamWScheduleFree(
            params,
            lr=self.resolved_lr(),
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
        )
