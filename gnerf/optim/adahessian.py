r"""AdaHessian with the equilibration (E) or the Jacobi (J) curvature statistic.

AdaHessian (Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney, "ADAHESSIAN: An adaptive second
order optimizer for machine learning", AAAI 2021) is Adam with the squared gradient replaced by
a Hutchinson estimate of the Hessian diagonal. As compared in Chng, Saratchandran & Lucey,
"Preconditioners for the Stochastic Training of Neural Fields", it comes in two flavours that
differ only in the per-step statistic :math:`D_t` drawn from a Rademacher vector :math:`v`:

* **(E) equilibration**: :math:`D_t = Hv`, with :math:`\mathbb{E}_v[(Hv)^2] = \mathrm{diag}(H^2)`
  (the squared row norms of :math:`H`); the preconditioner is :math:`\sqrt{\mathrm{EMA}(D_t^2)}`.
  (Yao et al.'s own :math:`\mathrm{EMA}((v \odot Hv)^2)` is the same number, since :math:`v^2 = 1`.)
* **(J) Jacobi**: :math:`D_t = |v \odot Hv|`, the magnitude of the one-probe estimate of
  :math:`\mathrm{diag}(H)` (:math:`\mathbb{E}_v[v \odot Hv] = \mathrm{diag}(H)`); the preconditioner is
  :math:`\sqrt{\mathrm{EMA}(D_t)}`, as in the code published with the paper (its ``adahessian_j.py``:
  the running average of ``hv.abs()``, then its square root).

The paper gives AdaHessian's lr (0.15) and Hessian power (1) but not the (J) statistic's formula; the
published code is the reference for it.

Curvature is estimated on every step, so ``should_create_graph()`` is always True. Spatial
averaging of :math:`D_t` (AdaHessian's trick for convolution kernels) does not apply to the
fully connected fields of gnerf and is not implemented.

Note: the Rademacher draw is :func:`gnerf.optim.curvature.rademacher_like` (entries -1 and +1),
not the ``2 * randint(high=1) - 1`` of one popular implementation, which is always -1.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from gnerf.optim.base import HutchinsonOptimizer, check_hyperparameters
from gnerf.optim.defaults import PAPER
from gnerf.optim.distributed import ProcessGroupSetting

__all__ = ["AdaHessian", "AdaHessianE", "AdaHessianJ", "adahessian", "STATISTICS"]

#: The curvature statistics AdaHessian can use.
STATISTICS = ("equilibration", "jacobi")


class AdaHessian(HutchinsonOptimizer):
    r"""AdaHessian with Hutchinson curvature on every step.

    With gradient :math:`g_t`, step :math:`t = 1, 2, \dots`, Rademacher :math:`v_t` and Hessian
    power :math:`k`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad \hat m_t = m_t / (1 - \beta_1^t) \\
        h_t &= H v_t \\
        \text{(E)}\quad s_t &= \beta_2 s_{t-1} + (1 - \beta_2)\, h_t \odot h_t, \qquad
            \hat D_t = \sqrt{s_t / (1 - \beta_2^t)} \\
        \text{(J)}\quad s_t &= \beta_2 s_{t-1} + (1 - \beta_2)\, |v_t \odot h_t|, \qquad
            \hat D_t = \sqrt{s_t / (1 - \beta_2^t)} \\
        \theta_t &= \theta_{t-1} (1 - \eta \lambda) - \eta\, \hat m_t / (\hat D_t^{\,k} + \epsilon)

    The gradients must carry a graph on every step: call
    ``loss.backward(create_graph=optimizer.should_create_graph())`` (always True here). The
    optimizer detaches the gradients at the end of every step, which releases that graph.

    Settings live in the param groups (each group may give its own, its ``statistic`` too), the
    step count in the per-parameter state (``step``, beside the buffers ``exp_avg`` and
    ``curvature``).

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        lr: learning rate :math:`\eta` (the paper: 0.15).
        betas: :math:`(\beta_1, \beta_2)`, gradient and curvature averaging coefficients.
        eps: :math:`\epsilon` added to the preconditioner.
        weight_decay: decoupled weight decay :math:`\lambda`.
        hessian_power: :math:`k \in (0, 1]` (the paper: 1).
        statistic: ``"equilibration"`` (AdaHessian (E)) or ``"jacobi"`` (AdaHessian (J)).
        foreach, generator, seed, process_group: as :class:`~gnerf.optim.base.HutchinsonOptimizer`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = PAPER.lr,
        betas: Tuple[float, float] = PAPER.betas,
        eps: float = PAPER.eps,
        weight_decay: float = 0.0,
        hessian_power: float = 1.0,
        statistic: str = "equilibration",
        *,
        foreach: Optional[bool] = None,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        process_group: ProcessGroupSetting = "auto",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            hessian_power=hessian_power,
            statistic=statistic,
            foreach=foreach,
        )
        super().__init__(params, defaults, generator=generator, seed=seed, process_group=process_group)

    def _check_group(self, group: Dict[str, Any]) -> None:
        check_hyperparameters(
            lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"]
        )
        if not 0.0 < group["hessian_power"] <= 1.0:
            raise ValueError(f"invalid hessian_power={group['hessian_power']}: must lie in (0, 1]")
        if group["statistic"] not in STATISTICS:
            raise ValueError(f"invalid statistic={group['statistic']!r}: choose one of {', '.join(STATISTICS)}")

    def _is_due(self, group: Dict[str, Any]) -> bool:
        """Always True: AdaHessian estimates curvature on every step."""
        return True

    def _update_group(self, group, params, states, foreach, vectors, hvps) -> None:
        beta1, beta2 = group["betas"]
        adahessian(
            params,
            [p.grad.detach() for p in params],
            [s["exp_avg"] for s in states],
            [s["curvature"] for s in states],
            hvps,
            vectors,
            [s["step"] for s in states],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            hessian_power=group["hessian_power"],
            statistic=group["statistic"],
            foreach=foreach,
        )


class _FixedStatistic(AdaHessian):
    """AdaHessian whose every param group uses :attr:`statistic`."""

    statistic = ""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = PAPER.lr,
        betas: Tuple[float, float] = PAPER.betas,
        eps: float = PAPER.eps,
        weight_decay: float = 0.0,
        hessian_power: float = 1.0,
        *,
        foreach: Optional[bool] = None,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        process_group: ProcessGroupSetting = "auto",
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            hessian_power,
            self.statistic,
            foreach=foreach,
            generator=generator,
            seed=seed,
            process_group=process_group,
        )

    def _check_group(self, group: Dict[str, Any]) -> None:
        super()._check_group(group)
        if group["statistic"] != self.statistic:
            raise ValueError(
                f"invalid statistic={group['statistic']!r}: {type(self).__name__} always uses "
                f"statistic={self.statistic!r}; use AdaHessian(statistic=...) or the other variant "
                "(AdaHessianE / AdaHessianJ)"
            )


class AdaHessianE(_FixedStatistic):
    """AdaHessian (E): the equilibration statistic ``sqrt(EMA((Hv)^2))``. Same arguments as :class:`AdaHessian`
    but ``statistic``."""

    statistic = "equilibration"


class AdaHessianJ(_FixedStatistic):
    """AdaHessian (J): the Jacobi statistic ``sqrt(EMA(|v * Hv|))``. Same arguments as :class:`AdaHessian` but
    ``statistic``."""

    statistic = "jacobi"


def adahessian(
    params: List[Tensor],
    grads: List[Tensor],
    exp_avgs: List[Tensor],
    curvatures: List[Tensor],
    hvps: List[Tensor],
    vectors: List[Tensor],
    state_steps: List[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    hessian_power: float,
    statistic: str,
    foreach: bool = False,
) -> None:
    """Functional AdaHessian update over lists of tensors (see :class:`AdaHessian` for the maths).

    ``hvps`` are the products ``H v`` for the Rademacher ``vectors``. As ``torch.optim.adam.adam``
    does, it counts this step in ``state_steps`` (float32 scalars) before using them; each
    parameter is corrected with its own count.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"invalid statistic={statistic!r}: choose one of {', '.join(STATISTICS)}")
    for step_t in state_steps:
        step_t.add_(1)
    bias_corrections1 = [1.0 - beta1 ** int(t) for t in state_steps]
    bias_corrections2 = [1.0 - beta2 ** int(t) for t in state_steps]
    fn = _multi_tensor_adahessian if foreach else _single_tensor_adahessian
    fn(
        params,
        grads,
        exp_avgs,
        curvatures,
        hvps,
        vectors,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        hessian_power=hessian_power,
        jacobi=statistic == "jacobi",
        bias_corrections1=bias_corrections1,
        bias_corrections2=bias_corrections2,
    )


def _single_tensor_adahessian(
    params,
    grads,
    exp_avgs,
    curvatures,
    hvps,
    vectors,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    hessian_power,
    jacobi,
    bias_corrections1,
    bias_corrections2,
) -> None:
    for p, g, m, s, h, v, bc1, bc2 in zip(
        params, grads, exp_avgs, curvatures, hvps, vectors, bias_corrections1, bias_corrections2
    ):
        if weight_decay != 0:
            p.mul_(1.0 - lr * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        if jacobi:
            s.lerp_((v * h).abs_(), 1.0 - beta2)
        else:
            s.mul_(beta2).addcmul_(h, h, value=1.0 - beta2)
        d = s.div(bc2).sqrt_()
        if hessian_power != 1.0:
            d.pow_(hessian_power)
        p.addcdiv_(m, d.add_(eps), value=-lr / bc1)


def _multi_tensor_adahessian(
    params,
    grads,
    exp_avgs,
    curvatures,
    hvps,
    vectors,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    hessian_power,
    jacobi,
    bias_corrections1,
    bias_corrections2,
) -> None:
    if weight_decay != 0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    if jacobi:
        probes = torch._foreach_mul(vectors, hvps)
        torch._foreach_abs_(probes)
        torch._foreach_lerp_(curvatures, probes, 1.0 - beta2)
    else:
        torch._foreach_mul_(curvatures, beta2)
        torch._foreach_addcmul_(curvatures, hvps, hvps, value=1.0 - beta2)
    d = torch._foreach_div(curvatures, bias_corrections2)
    torch._foreach_sqrt_(d)
    if hessian_power != 1.0:
        torch._foreach_pow_(d, hessian_power)
    torch._foreach_add_(d, eps)
    torch._foreach_addcdiv_(params, exp_avgs, d, [-lr / bc for bc in bias_corrections1])
