r"""Shampoo: left and right Kronecker preconditioning of matrix parameters.

Shampoo (Gupta, Koren & Singer, "Shampoo: Preconditioned stochastic tensor optimization",
ICML 2018), in the two-tensor form summarised in sec. 2.2 of the supplementary material of
Chng, Saratchandran & Lucey, "Preconditioners for the Stochastic Training of Neural Fields".
Matrices (the weights of linear layers) get full left and right statistics; vectors (biases)
and any other tensor get diagonal (AdaGrad) statistics, the order-1 case of Shampoo with the
off-diagonal terms dropped. Tensors of order three or more are treated as the matrix
``shape[0] x prod(shape[1:])``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from torch import Tensor

from gnerf.optim.base import CheckedOptimizer, check_hyperparameters, new_counter, params_with_grads, symmetric_eigh
from gnerf.optim.defaults import check_cadence, is_preconditioning_step

__all__ = ["Shampoo", "matrix_inverse_root", "shampoo"]


def matrix_inverse_root(matrix: Tensor, root: float, *, min_eigenvalue: float = 0.0) -> Tensor:
    r""":math:`M^{-1/r}` of a symmetric positive (semi-)definite ``matrix`` via ``eigh``.

    Stable form: the matrix is symmetrised and decomposed in float64,
    :math:`M = Q \Lambda Q^T`, eigenvalues are clamped below at ``min_eigenvalue`` (and at the
    smallest positive float64, so rounding never yields a negative or zero one), and the result
    :math:`Q \Lambda^{-1/r} Q^T` is returned in ``matrix``'s dtype.
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix_inverse_root needs a square matrix, got shape {tuple(matrix.shape)}")
    if not root > 0:
        raise ValueError(f"invalid root={root}: must be > 0")
    evals, evecs = symmetric_eigh(matrix)
    evals = evals.clamp_min(max(float(min_eigenvalue), torch.finfo(torch.float64).tiny))
    out = (evecs * evals.pow(-1.0 / root)) @ evecs.T
    return out.to(matrix.dtype)


class Shampoo(CheckedOptimizer):
    r"""Shampoo for matrices, diagonal (AdaGrad) statistics for vectors.

    For a matrix parameter :math:`W \in \mathbb{R}^{m \times n}` with gradient :math:`G_t`:

    .. math::
        L_0 &= \epsilon I_m, \qquad R_0 = \epsilon I_n \\
        L_t &= L_{t-1} + G_t G_t^T, \qquad R_t = R_{t-1} + G_t^T G_t \\
        U_t &= L_t^{-1/4}\, G_t\, R_t^{-1/4}

    and for a vector (or any non-matrix) parameter with gradient :math:`g_t`:

    .. math::
        h_0 = \epsilon, \qquad h_t = h_{t-1} + g_t \odot g_t, \qquad U_t = g_t / \sqrt{h_t}

    then, with momentum :math:`\mu` and decoupled weight decay :math:`\lambda`,

    .. math::
        b_t = \mu\, b_{t-1} + U_t, \qquad \theta_t = \theta_{t-1}(1 - \eta\lambda) - \eta\, b_t

    (:math:`b_t = U_t` when :math:`\mu = 0`, the original algorithm). The inverse fourth roots
    come from a symmetric eigendecomposition (:func:`matrix_inverse_root`) and are recomputed
    every ``precondition_frequency`` steps (the statistics are accumulated on every step). First-order:
    it takes no Hessian-vector products.

    Settings live in the param groups (each group may give its own), the step count in the
    per-parameter state (``step``, beside the statistics, inverse roots and momentum buffer), so
    each parameter refreshes its inverse roots at its own steps 1, 1 + ``precondition_frequency``, ...

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        lr: learning rate :math:`\eta` (the paper: 0.1; 0.01 for sine networks).
        momentum: :math:`\mu`.
        weight_decay: decoupled weight decay :math:`\lambda`.
        eps: :math:`\epsilon`, the initial statistics (the regulariser of the inverse roots).
        precondition_frequency: steps between recomputations of the inverse roots (1: every step).
        foreach: use the multi-tensor update for the diagonal statistics; ``None`` picks it when
            the parameters live on a GPU. Both paths give the same numbers.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        eps: float = 1e-4,
        precondition_frequency: int = 1,
        foreach: Optional[bool] = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eps=eps,
            precondition_frequency=int(precondition_frequency),
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: Dict[str, Any]) -> None:
        check_hyperparameters(
            lr=group["lr"], momentum=group["momentum"], weight_decay=group["weight_decay"], eps=group["eps"]
        )
        check_cadence(precondition_frequency=group["precondition_frequency"])

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        """Perform one step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, ps in zip(self.param_groups, params_with_grads(self)):
            if not ps:
                continue
            states = []
            for p in ps:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = new_counter()
                    eps = group["eps"]
                    if p.ndim >= 2:
                        m, n = p.shape[0], p[0].numel()
                        state["left"] = eps * torch.eye(m, dtype=p.dtype, device=p.device)
                        state["right"] = eps * torch.eye(n, dtype=p.dtype, device=p.device)
                        state["left_inv_root"] = torch.eye(m, dtype=p.dtype, device=p.device) * eps**-0.25
                        state["right_inv_root"] = torch.eye(n, dtype=p.dtype, device=p.device) * eps**-0.25
                    else:
                        state["diag"] = torch.full_like(p, eps, memory_format=torch.preserve_format)
                    if group["momentum"] > 0:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                states.append(state)
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in ps)
            shampoo(
                ps,
                [p.grad.detach() for p in ps],
                states,
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                precondition_frequency=group["precondition_frequency"],
                foreach=foreach,
            )
        return loss


def shampoo(
    params: List[Tensor],
    grads: List[Tensor],
    states: List[Dict[str, Tensor]],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    precondition_frequency: int,
    foreach: bool = False,
) -> None:
    """Functional Shampoo update over lists of tensors (see :class:`Shampoo` for the maths).

    ``states[i]`` holds ``step`` (a float32 scalar) and ``left``, ``right``, ``left_inv_root``,
    ``right_inv_root`` for matrices (order >= 2) or ``diag`` for the others, plus ``momentum_buffer``
    when ``momentum > 0``. As ``torch.optim.adam.adam`` does with its ``state_steps``, it counts this
    step in ``step`` before using it: a matrix's inverse roots are refreshed on its steps 1,
    1 + ``precondition_frequency``, ...
    """
    updates: List[Optional[Tensor]] = [None] * len(params)
    diag_idx = []
    for i, (g, st) in enumerate(zip(grads, states)):
        st["step"].add_(1)
        if "diag" in st:
            diag_idx.append(i)
            continue
        g2 = g.reshape(g.shape[0], -1)
        st["left"].addmm_(g2, g2.T)
        st["right"].addmm_(g2.T, g2)
        if is_preconditioning_step(int(st["step"]) - 1, precondition_frequency):
            st["left_inv_root"].copy_(matrix_inverse_root(st["left"], 4.0))
            st["right_inv_root"].copy_(matrix_inverse_root(st["right"], 4.0))
        updates[i] = (st["left_inv_root"] @ g2 @ st["right_inv_root"]).view_as(g)
    if diag_idx:
        gs = [grads[i] for i in diag_idx]
        hs = [states[i]["diag"] for i in diag_idx]
        if foreach:
            torch._foreach_addcmul_(hs, gs, gs)
            denom = torch._foreach_sqrt(hs)
            for i, u in zip(diag_idx, torch._foreach_div(gs, denom)):
                updates[i] = u
        else:
            for i, g, h in zip(diag_idx, gs, hs):
                h.addcmul_(g, g)
                updates[i] = g / h.sqrt()
    for p, u, st in zip(params, updates, states):
        if weight_decay != 0:
            p.mul_(1.0 - lr * weight_decay)
        if momentum > 0:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = torch.zeros_like(p)
            buf.mul_(momentum).add_(u)
            u = buf
        p.add_(u, alpha=-lr)
