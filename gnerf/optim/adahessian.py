r"""AdaHessian with the equilibration (E) or the Jacobi (J) curvature statistic.

AdaHessian (Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney, "ADAHESSIAN: An adaptive second
order optimizer for machine learning", AAAI 2021) is Adam with the squared gradient replaced by
a Hutchinson estimate of the Hessian diagonal. As compared in Chng, Saratchandran & Lucey,
"Preconditioners for the Stochastic Training of Neural Fields", it comes in two flavours that
differ only in the per-step statistic :math:`D_t` drawn from a Rademacher vector :math:`v`:

* **(E) equilibration**: :math:`D_t = Hv`, with :math:`\mathbb{E}_v[(Hv)^2] = \mathrm{diag}(H^2)`
  (the squared row norms of :math:`H`); the preconditioner is :math:`\sqrt{\mathrm{EMA}(D_t^2)}`.
  (Yao et al.'s own :math:`\mathrm{EMA}((v \odot Hv)^2)` is the same number, since :math:`v^2 = 1`.)
* **(J) Jacobi**: :math:`D_t = v \odot Hv`, with :math:`\mathbb{E}_v[v \odot Hv] = \mathrm{diag}(H)`;
  the preconditioner is :math:`|\mathrm{EMA}(D_t)|`, the magnitude of the averaged diagonal.

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
        \text{(J)}\quad s_t &= \beta_2 s_{t-1} + (1 - \beta_2)\, v_t \odot h_t, \qquad
            \hat D_t = |s_t| / (1 - \beta_2^t) \\
        \theta_t &= \theta_{t-1} (1 - \eta \lambda) - \eta\, \hat m_t / (\hat D_t^{\,k} + \epsilon)

    The gradients must carry a graph on every step: call
    ``loss.backward(create_graph=optimizer.should_create_graph())`` (always True here). The
    optimizer detaches the gradients at the end of every step, which releases that graph.

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        lr: learning rate :math:`\eta` (the paper: 0.15).
        betas: :math:`(\beta_1, \beta_2)`, gradient and curvature averaging coefficients.
        eps: :math:`\epsilon` added to the preconditioner.
        weight_decay: decoupled weight decay :math:`\lambda`.
        hessian_power: :math:`k \in (0, 1]` (the paper: 1).
        statistic: ``"equilibration"`` (AdaHessian (E)) or ``"jacobi"`` (AdaHessian (J)).
        foreach, generator, seed, process_group: as
            :class:`~gnerf.optim.base.HutchinsonOptimizer`.
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
        foreach: Optional[bool] = None,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        process_group: ProcessGroupSetting = "auto",
    ) -> None:
        check_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        if not 0.0 < hessian_power <= 1.0:
            raise ValueError(f"invalid hessian_power={hessian_power}: must lie in (0, 1]")
        statistic = str(statistic).lower()
        if statistic not in STATISTICS:
            raise ValueError(f"invalid statistic={statistic!r}: choose one of {', '.join(STATISTICS)}")
        super().__init__(params, dict(hessian_power=hessian_power), lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, foreach=foreach, generator=generator, seed=seed,
                         process_group=process_group)
        self.statistic = statistic  # num_steps (completed steps) also counts the curvature updates

    state_key = "adahessian"
    state_fields = ("num_steps",)
    matching_fields = ("statistic",)

    def is_curvature_step(self) -> bool:
        """Always True: AdaHessian estimates curvature on every step."""
        return True

    def _update_group(self, group, params, states, foreach, vectors, hvps) -> None:
        adahessian(
            *self._group_tensors(params, states),
            hvps,
            vectors,
            step=self.num_steps,
            **self._group_hyperparameters(group),
            hessian_power=group["hessian_power"],
            statistic=self.statistic,
            foreach=foreach,
        )


def _fixed_statistic(variant: str, statistic: str, kwargs: Dict[str, Any]) -> str:
    """``statistic``, the one ``variant`` uses; a ``statistic`` in ``kwargs`` must be that one (``ValueError``)."""
    given = kwargs.pop("statistic", statistic)
    if str(given).lower() != statistic:
        raise ValueError(f"invalid statistic={given!r}: {variant} always uses statistic={statistic!r}; "
                         "use AdaHessian(statistic=...) or the other variant (AdaHessianE / AdaHessianJ)")
    return statistic


class AdaHessianE(AdaHessian):
    """AdaHessian (E): the equilibration statistic ``sqrt(EMA((Hv)^2))``. Same arguments as :class:`AdaHessian`
    (``statistic``, if given, must be ``"equilibration"``)."""

    def __init__(self, params: Iterable[Any], lr: float = PAPER.lr, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, statistic=_fixed_statistic("AdaHessianE", "equilibration", kwargs), **kwargs)


class AdaHessianJ(AdaHessian):
    """AdaHessian (J): the Jacobi statistic ``|EMA(v * Hv)|``. Same arguments as :class:`AdaHessian`
    (``statistic``, if given, must be ``"jacobi"``)."""

    def __init__(self, params: Iterable[Any], lr: float = PAPER.lr, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, statistic=_fixed_statistic("AdaHessianJ", "jacobi", kwargs), **kwargs)


def adahessian(
    params: List[Tensor],
    grads: List[Tensor],
    exp_avgs: List[Tensor],
    curvatures: List[Tensor],
    hvps: List[Tensor],
    vectors: List[Tensor],
    *,
    step: int,
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

    ``step`` is the 1-based index of this step; ``hvps`` are the products ``H v`` for the
    Rademacher ``vectors``.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"invalid statistic={statistic!r}: choose one of {', '.join(STATISTICS)}")
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    fn = _multi_tensor_adahessian if foreach else _single_tensor_adahessian
    fn(params, grads, exp_avgs, curvatures, hvps, vectors, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
       weight_decay=weight_decay, hessian_power=hessian_power, jacobi=statistic == "jacobi",
       bias_correction1=bias_correction1, bias_correction2=bias_correction2)


def _single_tensor_adahessian(params, grads, exp_avgs, curvatures, hvps, vectors, *, lr, beta1, beta2, eps,
                              weight_decay, hessian_power, jacobi, bias_correction1, bias_correction2) -> None:
    for p, g, m, s, h, v in zip(params, grads, exp_avgs, curvatures, hvps, vectors):
        if weight_decay != 0:
            p.mul_(1.0 - lr * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        if jacobi:
            s.lerp_(v * h, 1.0 - beta2)
            d = s.abs().div_(bias_correction2)
        else:
            s.mul_(beta2).addcmul_(h, h, value=1.0 - beta2)
            d = s.div(bias_correction2).sqrt_()
        if hessian_power != 1.0:
            d.pow_(hessian_power)
        p.addcdiv_(m, d.add_(eps), value=-lr / bias_correction1)


def _multi_tensor_adahessian(params, grads, exp_avgs, curvatures, hvps, vectors, *, lr, beta1, beta2, eps,
                             weight_decay, hessian_power, jacobi, bias_correction1, bias_correction2) -> None:
    if weight_decay != 0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    if jacobi:
        torch._foreach_lerp_(curvatures, torch._foreach_mul(vectors, hvps), 1.0 - beta2)
        d = torch._foreach_abs(curvatures)
        torch._foreach_div_(d, bias_correction2)
    else:
        torch._foreach_mul_(curvatures, beta2)
        torch._foreach_addcmul_(curvatures, hvps, hvps, value=1.0 - beta2)
        d = torch._foreach_div(curvatures, bias_correction2)
        torch._foreach_sqrt_(d)
    if hessian_power != 1.0:
        torch._foreach_pow_(d, hessian_power)
    torch._foreach_add_(d, eps)
    torch._foreach_addcdiv_(params, exp_avgs, d, -lr / bias_correction1)

