"""The optimizers a neural-field researcher compares against today, registered beside gnerf's own.

- ``muon``: ``torch.optim.Muon`` on the hidden weight matrices, ``torch.optim.Adam`` on the first and
  last layers and every bias (as in "Optimizing Rank for High-Fidelity Implicit Neural
  Representations", arXiv 2512.14366, and its code), one optimizer (:class:`MuonAdam`);
- ``adam-cosine``: ``torch.optim.Adam`` with a tuned lr and a cosine schedule;
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
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from gnerf.optim.configs import OptimizerConfig, register_optimizer
from gnerf.optim.schedules import CosineSchedule, ScheduleConfig

__all__ = [
    "AdamCosineConfig",
    "MuonAdam",
    "MuonConfig",
    "PSGDKronConfig",
    "SOAPConfig",
    "ScheduleFreeAdamWConfig",
    "has_train_eval_modes",
    "hidden_matrices",
]


def has_train_eval_modes(optimizer: object) -> bool:
    """Whether ``optimizer`` must be switched with ``.train()`` / ``.eval()`` (Schedule-Free's convention)."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def hidden_matrices(params: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
    """``(hidden, rest)``: the 2-D parameters other than the first and the last 2-D one, and all the others.

    For a coordinate MLP whose parameters are listed input layer first (``model.parameters()``), the
    hidden matrices are the weights of its hidden layers; the input and output layers' weights and
    every bias are the rest.
    """
    matrices = [i for i, p in enumerate(params) if p.ndim == 2]
    inner = set(matrices[1:-1])
    return [p for i, p in enumerate(params) if i in inner], [p for i, p in enumerate(params) if i not in inner]


class MuonAdam(Optimizer):
    r"""Muon on the hidden weight matrices and Adam on the rest, as one ``torch.optim.Optimizer``.

    The param groups tagged ``"algorithm": "muon"`` step with ``torch.optim.Muon``'s update
    (Nesterov momentum, then the Newton-Schulz orthogonalisation of the update matrix,
    :math:`W \leftarrow W(1 - \eta\lambda) - \eta' \operatorname{NS}(\hat m)` with :math:`\eta'` the lr
    adjusted by ``adjust_lr_fn``), those tagged ``"adam"`` with ``torch.optim.Adam``'s. Both run
    through torch's own optimizers, which share this optimizer's param groups and state, so
    ``state_dict`` is torch's schema and one LR scheduler scales every group.

    Args:
        params: parameters in model order (see :func:`hidden_matrices`), or param groups that each
            give ``"algorithm"``.
        lr: Muon's learning rate (before ``adjust_lr_fn``).
        adam_lr: Adam's learning rate.
        momentum, nesterov, ns_steps, adjust_lr_fn, weight_decay: Muon's (``torch.optim.Muon``).
        adam_betas, adam_eps: Adam's.
    """

    def __init__(self, params: Iterable[Any], lr: float = 2e-4, adam_lr: float = 1e-4, *, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, adjust_lr_fn: Optional[str] = "match_rms_adamw",
                 weight_decay: float = 0.0, adam_betas: Tuple[float, float] = (0.9, 0.999),
                 adam_eps: float = 1e-8) -> None:
        items = list(params)
        if items and isinstance(items[0], dict):
            groups = items
        else:
            hidden, rest = hidden_matrices(items)
            groups = ([{"params": hidden, "algorithm": "muon"}] if hidden else []) + \
                     ([{"params": rest, "algorithm": "adam"}] if rest else [])
        if any(g.get("algorithm") not in ("muon", "adam") for g in groups):
            raise ValueError("MuonAdam param groups must each give 'algorithm': 'muon' or 'adam'")
        muon_groups = [dict(g, lr=g.get("lr", lr)) for g in groups if g["algorithm"] == "muon"]
        adam_groups = [dict(g, lr=g.get("lr", adam_lr)) for g in groups if g["algorithm"] == "adam"]
        self._muon = torch.optim.Muon(muon_groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn) \
            if muon_groups else None
        self._adam = torch.optim.Adam(adam_groups, lr=adam_lr, betas=tuple(adam_betas), eps=adam_eps) \
            if adam_groups else None
        inner = [o for o in (self._muon, self._adam) if o is not None]
        super().__init__([g for o in inner for g in o.param_groups], {})
        self._link()

    def _link(self) -> None:
        """Point the inner optimizers at this one's param groups and state (after ``__init__`` and a load)."""
        for o, algorithm in ((self._muon, "muon"), (self._adam, "adam")):
            if o is not None:
                o.param_groups = [g for g in self.param_groups if g["algorithm"] == algorithm]
                o.state = self.state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        saved = [g.get("algorithm") for g in state_dict["param_groups"]]
        if saved != [g["algorithm"] for g in self.param_groups]:
            raise ValueError(f"MuonAdam.load_state_dict: the state dict's groups are {saved}, this optimizer's "
                             f"{[g['algorithm'] for g in self.param_groups]}; it was saved by another optimizer")
        super().load_state_dict(state_dict)
        self._link()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in (self._muon, self._adam):
            if o is not None:
                o.step()
        return loss


@register_optimizer
@dataclass
class MuonConfig(OptimizerConfig):
    """Muon on the hidden matrices, Adam on the rest (:class:`MuonAdam`), cosine to 0 on both.

    Registered settings: Muon lr 2e-4 with ``adjust_lr_fn="match_rms_adamw"`` and no weight decay, Adam
    1e-4, cosine to 0: the first setting measured on a held-out Kodak photo (the optimizer-benchmark
    issue); not yet swept on kodim01-04 (experiments/sweep).
    """

    name: ClassVar[str] = "muon"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 2e-4
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

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return MuonAdam(params, lr=self.resolved_lr(), adam_lr=self.adam_lr, momentum=self.momentum,
                        nesterov=self.nesterov, ns_steps=self.ns_steps, adjust_lr_fn=self.adjust_lr_fn,
                        weight_decay=self.weight_decay)


@register_optimizer
@dataclass
class AdamCosineConfig(OptimizerConfig):
    """``torch.optim.Adam`` with a cosine schedule to 0: lr 3e-4, one sweep step above the paper's (not yet swept
    on kodim01-04)."""

    name: ClassVar[str] = "adam-cosine"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 3e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return torch.optim.Adam(params, lr=self.resolved_lr(), betas=tuple(self.betas), eps=self.eps,
                                weight_decay=self.weight_decay)


def _heavyball():
    import heavyball
    import heavyball.utils

    # heavyball compiles its update with inductor by default; on a CPU that costs minutes per shape and
    # gains nothing measured here, so its steps run eagerly
    heavyball.utils.compile_mode = None
    return heavyball


@register_optimizer
@dataclass
class SOAPConfig(OptimizerConfig):
    """heavyball's ``SOAP`` (Adam in Shampoo's eigenbasis), cosine to 0; lr 3e-4 not yet swept on kodim01-04."""

    name: ClassVar[str] = "soap"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 3e-4
    betas: Tuple[float, float] = (0.9, 0.95)
    shampoo_beta: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    precondition_frequency: int = 10
    """Steps between eigenbasis updates."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return _heavyball().SOAP(params, lr=self.resolved_lr(), betas=tuple(self.betas),
                                 shampoo_beta=self.shampoo_beta, eps=self.eps, weight_decay=self.weight_decay,
                                 precondition_frequency=self.precondition_frequency)


@register_optimizer
@dataclass
class PSGDKronConfig(OptimizerConfig):
    """heavyball's ``PSGDKron`` (Kronecker-factored preconditioned SGD), cosine to 0; lr 3e-4 not yet swept."""

    name: ClassVar[str] = "psgd-kron"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0)
    lr: Optional[float] = 3e-4
    beta: float = 0.9
    """Momentum."""
    weight_decay: float = 0.0
    precond_lr: float = 0.1
    """Step size of the preconditioner's own update."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        return _heavyball().PSGDKron(params, lr=self.resolved_lr(), beta=self.beta, weight_decay=self.weight_decay,
                                     precond_lr=self.precond_lr)


@register_optimizer
@dataclass
class ScheduleFreeAdamWConfig(OptimizerConfig):
    """``schedulefree.AdamWScheduleFree`` (no schedule: constant lr after its warm-up); lr 1e-3 not yet swept."""

    name: ClassVar[str] = "schedulefree-adamw"
    lr: Optional[float] = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Schedule-Free's own linear warm-up."""

    def _make(self, params, *, seed=None, process_group="auto") -> Optimizer:
        import schedulefree

        return schedulefree.AdamWScheduleFree(params, lr=self.resolved_lr(), betas=tuple(self.betas), eps=self.eps,
                                              weight_decay=self.weight_decay, warmup_steps=self.warmup_steps)
