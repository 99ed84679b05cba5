r"""KFACAdam: Adam on K-FAC-preconditioned gradients, K-FAC as the code published with the paper runs it."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.optim.adam import adam

from gnerf.optim.base import check_hyperparameters, new_counter
from gnerf.optim.kfac import KFAC

__all__ = ["KFACAdam"]


class KFACAdam(KFAC):
    r"""Adam on K-FAC-preconditioned gradients: K-FAC as the code published with the paper runs it.

    For every hooked linear layer, with the factors of the current minibatch only
    (:math:`\rho = 0`, refreshed every step by default) and factored damping:

    .. math::
        u = \big((A + \sqrt\lambda I) \otimes (G + \sqrt\lambda I)\big)^{-1} \mathrm{vec}(\nabla)

    and then ``torch.optim.Adam``'s update (its own kernel, ``torch.optim.adam.adam``, per-tensor or
    multi-tensor as ``foreach`` says) with :math:`u` in place of the gradient; parameters outside a
    hooked layer get Adam on their gradient. The published code (``optimizers/precond_kfac/kfac.py``,
    called as ``KFAC(net, 0.1, 100)`` before ``Adam(lr=1e-4).step()``) has no KL clipping, no
    momentum of its own and the ``pi`` correction off; those are the defaults here.

    Same settings as :class:`KFAC` except ``momentum`` and ``kl_clip``, plus Adam's ``betas``, ``eps``
    and ``foreach``; ``weight_decay`` is Adam's (L2, added to :math:`u`). Defaults: lr 1e-4,
    damping 0.1 with ``factored_damping``, ``stat_decay`` 0, ``precondition_frequency`` 1.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        damping: float = 0.1,
        factored_damping: bool = True,
        stat_decay: float = 0.0,
        precondition_frequency: int = 1,
        statistics_frequency: int = 1,
        *,
        foreach: Optional[bool] = None,
    ) -> None:
        update = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach)
        self._init_kfac(
            params, update, damping, factored_damping, stat_decay, precondition_frequency, statistics_frequency
        )

    def _check_group(self, group: Dict[str, Any]) -> None:
        check_hyperparameters(
            lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"]
        )
        self._check_preconditioner(group)

    def _apply_updates(self, updates: Dict[int, Tensor]) -> None:
        """Adam on ``updates`` (by parameter ``id``; a parameter without one: its gradient)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if "step" not in state:
                    state["step"] = new_counter()
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            beta1, beta2 = group["betas"]
            adam(
                params,
                [updates.get(id(p), p.grad.detach()) for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                [s["step"] for s in states],
                foreach=group["foreach"],
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )
