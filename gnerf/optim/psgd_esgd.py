r"""PSGDKronESGD: heavyball's PSGD-Kron on a network's hidden matrices and equilibrated SGD (curvature) on the rest.

gnerf's own optimizer for neural fields, built the way :class:`~gnerf.optim.muon_esgd.MuonESGD` is built on Muon:
the square hidden matrices take a matrix preconditioner's step (here PSGD-Kron's Kronecker-factored one), and the
input layer, the output layer and every bias take ESGD's step, preconditioned by the Hutchinson equilibration
statistic :math:`\sqrt{\mathrm{diag}(H^2)}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from gnerf.optim.configs import OptimizerConfig, register_optimizer
from gnerf.optim.contenders import psgd_kron
from gnerf.optim.defaults import PAPER
from gnerf.optim.distributed import ProcessGroupSetting
from gnerf.optim.hybrid import HiddenESGD
from gnerf.optim.schedules import CosineSchedule, ScheduleConfig

__all__ = ["PSGDKronESGD", "PSGDKronESGDConfig"]

#: The key of the inner PSGD-Kron's state in :meth:`PSGDKronESGD.state_dict`.
INNER = "psgd_kron"


class PSGDKronESGD(HiddenESGD):
    r"""PSGD-Kron on the hidden (square) weight matrices, ESGD on every other parameter, one optimizer.

    The param group tagged ``"algorithm": "psgd-kron"`` is stepped by heavyball's ``PSGDKron`` (momentum
    :math:`\beta`, a Kronecker-factored preconditioner :math:`P = Q^\top Q` fitted by its own update of step
    ``precond_lr``, heavyball's defaults otherwise) at this group's learning rate, so that a learning-rate scheduler
    scales it like the others. Groups tagged ``"esgd"`` take ESGD's update with its curvature averaged over the
    curvature updates, as :class:`~gnerf.optim.muon_esgd.MuonESGD`'s do. Curvature (one Hessian-vector product over
    all parameters) is estimated on each of the first ``precondition_warmup_steps`` steps, then on every
    ``precondition_frequency``-th.

    PSGD-Kron's own state (its factors, momentum and step count) travels in :meth:`state_dict` under
    ``"psgd_kron"``, beside torch's ``state`` and ``param_groups``.

    Args:
        params: parameters (split by :func:`~gnerf.optim.muon.hidden_matrices`), or param groups that each give
            ``"algorithm"`` (at most one ``"psgd-kron"`` group).
        lr: PSGD-Kron's learning rate.
        esgd_lr: ESGD's learning rate.
        beta: PSGD-Kron's momentum.
        precond_lr: step size of PSGD-Kron's preconditioner update.
        precond_update_prob: share of the steps that update PSGD-Kron's preconditioner; None: heavyball's schedule.
        betas, eps, precondition_warmup_steps, precondition_frequency: ESGD's.
        weight_decay: decoupled weight decay of both.
        foreach, generator, seed, process_group: as :class:`~gnerf.optim.base.HutchinsonOptimizer`.
    """

    hidden_algorithm = "psgd-kron"
    #: a state saved before the setting existed ran heavyball's schedule, which None stands for
    settings_added_later: ClassVar[Dict[str, Any]] = {"precond_update_prob": None}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3.33e-5,
        esgd_lr: float = 0.1,
        beta: float = 0.9,
        precond_lr: float = 0.1,
        precond_update_prob: Optional[float] = None,
        betas: Tuple[float, float] = PAPER.betas,
        eps: float = PAPER.eps,
        weight_decay: float = 0.0,
        precondition_warmup_steps: int = PAPER.precondition_warmup_steps,
        precondition_frequency: int = PAPER.precondition_frequency,
        *,
        foreach: Optional[bool] = None,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        process_group: ProcessGroupSetting = "auto",
    ) -> None:
        defaults = dict(
            self.esgd_defaults(
                lr, betas, eps, weight_decay, precondition_warmup_steps, precondition_frequency, foreach
            ),
            beta=beta,
            precond_lr=precond_lr,
            precond_update_prob=precond_update_prob,
        )
        self._inner: Optional[torch.optim.Optimizer] = None
        super().__init__(params, esgd_lr, defaults, generator=generator, seed=seed, process_group=process_group)

    def _check_group(self, group: Dict[str, Any]) -> None:
        if not 0.0 <= group["beta"] < 1.0:
            raise ValueError(f"invalid beta={group['beta']}: PSGD-Kron's momentum must lie in [0, 1)")
        if not group["precond_lr"] > 0.0:
            raise ValueError(f"invalid precond_lr={group['precond_lr']}: must be > 0")
        super()._check_group(group)

    def _check_hidden_params(self, params: List[Tensor]) -> None:
        if self._inner is not None:
            raise ValueError("PSGDKronESGD: at most one 'psgd-kron' param group")

    def _add_hidden_group(self, group: Dict[str, Any]) -> None:
        self._inner = psgd_kron(
            group["params"],
            lr=group["lr"],
            beta=group["beta"],
            weight_decay=group["weight_decay"],
            precond_lr=group["precond_lr"],
            precond_update_prob=group["precond_update_prob"],
        )

    def _hidden_step(self, group, params, states, hvps) -> None:
        for p in params:
            p.grad = p.grad.detach()  # a curvature step's gradient still holds the graph
        self._inner.param_groups[0]["lr"] = group["lr"]
        self._inner.step()

    def state_dict(self) -> Dict[str, Any]:
        """torch's ``state_dict`` and, under ``"psgd_kron"``, the inner PSGD-Kron's."""
        state_dict = super().state_dict()
        if self._inner is not None:
            state_dict[INNER] = self._inner.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        inner = state_dict.get(INNER)
        if (inner is None) != (self._inner is None):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state dict {'lacks' if inner is None else 'holds'} "
                f"{INNER!r}, so it was saved by another optimizer or over other parameters; resume it with the "
                "optimizer that saved it"
            )
        super().load_state_dict({k: v for k, v in state_dict.items() if k != INNER})
        if inner is not None:
            self._inner.load_state_dict(inner)


@register_optimizer
@dataclass
class PSGDKronESGDConfig(OptimizerConfig):
    """gnerf's :class:`PSGDKronESGD`: heavyball's PSGD-Kron (lr 3.33e-5, the ``psgd-kron`` contender's sweep winner) on
    the hidden matrices, ESGD (lr 0.1, ``muon-esgd``'s) on the rest, cosine to 0 after a 100-step warm-up. The
    PSGD-Kron lr also won this optimizer's own sweep on kodim01-04 (``python -m experiments.sweep``, docs/sweep.md:
    mean final PSNR 80.13 dB against 78.63 at 1.11e-5); the ESGD lr is not swept. At the paper's image protocol
    (``python -m experiments.contest``, docs/contest.md) it ends above PSGD-Kron on each of kodim01-04 (mean 45.44 dB
    against 44.49)."""

    name: ClassVar[str] = "psgd-kron-esgd"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0, warmup_steps=100)
    curvature: ClassVar[bool] = True
    lr: Optional[float] = 3.33e-5
    """PSGD-Kron's learning rate on the hidden matrices."""
    esgd_lr: float = 0.1
    """ESGD's learning rate on the first and last layers and the biases."""
    beta: float = 0.9
    """PSGD-Kron's momentum."""
    precond_lr: float = 0.1
    """Step size of PSGD-Kron's preconditioner update."""
    precond_update_prob: Optional[float] = None
    """Share of the steps that update PSGD-Kron's preconditioner; None: heavyball's schedule (``psgd-kron``'s)."""
    betas: Tuple[float, float] = PAPER.betas
    eps: float = PAPER.eps
    weight_decay: float = 0.0
    precondition_warmup_steps: int = PAPER.precondition_warmup_steps
    precondition_frequency: int = PAPER.precondition_frequency
    foreach: Optional[bool] = None

    def _make(self, params, *, seed=None, process_group="auto"):
        return PSGDKronESGD(
            params,
            lr=self.resolved_lr(),
            esgd_lr=self.esgd_lr,
            beta=self.beta,
            precond_lr=self.precond_lr,
            precond_update_prob=self.precond_update_prob,
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
            precondition_warmup_steps=self.precondition_warmup_steps,
            precondition_frequency=self.precondition_frequency,
            foreach=self.foreach,
            seed=seed,
            process_group=process_group,
        )
