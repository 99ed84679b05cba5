r"""ESGD and ESGD-Max: equilibrated SGD with Hutchinson curvature, as published with the paper.

Equilibrated SGD (Dauphin, de Vries & Bengio, "Equilibrated adaptive learning rates for
non-convex optimization", NeurIPS 2015) preconditions the gradient by the equilibration
statistic :math:`\sqrt{\mathrm{diag}(H^2)}`, estimated from Hessian-vector products with
Rademacher vectors, :math:`\mathbb{E}_v[(Hv)^2] = \mathrm{diag}(H^2)`. Chng, Saratchandran &
Lucey, "Preconditioners for the Stochastic Training of Neural Fields", train images and shapes
with :class:`ESGD` and radiance fields with :class:`ESGDMax`, which replaces the running mean by
an exponentially weighted maximum. Both follow the implementation published with the paper.

Settings live in the param groups (each group may give its own), counters in the per-parameter
state: ``step`` (the parameter's steps, as in ``torch.optim.Adam``) and ``curvature_updates``
(:math:`k`, its curvature updates), beside the buffers ``exp_avg`` (:math:`m`) and ``curvature``
(:math:`D`).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from gnerf.optim.base import HutchinsonOptimizer, check_hyperparameters
from gnerf.optim.defaults import PAPER, check_cadence, is_preconditioning_step
from gnerf.optim.distributed import ProcessGroupSetting

__all__ = ["ESGD", "ESGDMax", "EquilibratedSGD", "esgd"]


class EquilibratedSGD(HutchinsonOptimizer):
    """What :class:`ESGD`, :class:`ESGDMax` and :class:`~gnerf.optim.adam_start.ESGDAdamStart` share: the
    cadence, the checks of the settings, the per-parameter state and the :func:`esgd` update."""

    #: Exponentially weighted maximum (ESGD-Max) instead of the running mean.
    use_max = False
    #: Bias-correct the running mean with the number of curvature updates instead of the step count.
    correct_by_updates = False
    counter_keys = ("step", "curvature_updates")

    @staticmethod
    def esgd_defaults(
        lr: float,
        betas: Tuple[float, float],
        eps: float,
        weight_decay: float,
        precondition_warmup_steps: int,
        precondition_frequency: int,
        foreach: Optional[bool],
    ) -> Dict[str, Any]:
        """The settings every optimizer of the family takes, as param group defaults."""
        return dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            precondition_warmup_steps=int(precondition_warmup_steps),
            precondition_frequency=int(precondition_frequency),
            foreach=foreach,
        )

    def _check_group(self, group: Dict[str, Any]) -> None:
        check_hyperparameters(
            lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"]
        )
        check_cadence(
            precondition_warmup_steps=group["precondition_warmup_steps"],
            precondition_frequency=group["precondition_frequency"],
        )

    def _is_due(self, group: Dict[str, Any]) -> bool:
        """The group's cadence (see :func:`~gnerf.optim.defaults.is_preconditioning_step`) at its step count."""
        return is_preconditioning_step(
            self._group_step(group), group["precondition_frequency"], group["precondition_warmup_steps"]
        )

    def _lr_warmup(self, group: Dict[str, Any]) -> float:
        return 0.0

    def _update_group(self, group, params, states, foreach, vectors, hvps) -> None:
        beta1, beta2 = group["betas"]
        esgd(
            params,
            [p.grad.detach() for p in params],
            [s["exp_avg"] for s in states],
            [s["curvature"] for s in states],
            hvps,
            [s["step"] for s in states],
            [s["curvature_updates"] for s in states],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            lr_warmup=self._lr_warmup(group),
            use_max=self.use_max,
            foreach=foreach,
            correct_by_updates=self.correct_by_updates,
        )


class ESGD(EquilibratedSGD):
    r"""Equilibrated SGD with momentum and sparse curvature updates (the paper's image and shape optimizer).

    With gradient :math:`g_t` at step :math:`t = 1, 2, \dots`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        h &= H v,\quad v_i \sim \mathrm{Rademacher} \qquad \text{(curvature steps only)} \\
        D &\leftarrow \beta_2 D + (1 - \beta_2)\, h \odot h \qquad \text{(curvature steps only)} \\
        \theta_t &= \theta_{t-1} (1 - \eta \lambda)
            - \eta\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{D / (1 - \beta_2^t)} + \epsilon}

    :math:`D` is bias-corrected with the step count :math:`t`, although it is updated only on
    curvature steps: its corrected value shrinks as training goes on, so the effective step size
    grows (about 3.5x by step 3,200 with the default cadence, against a mean corrected by the
    number of updates). This is the published optimizer; it starts slowly and ends high.

    Curvature is estimated on every step for the first ``precondition_warmup_steps`` steps, then on
    every ``precondition_frequency``-th step counted from the last of them (steps 0-49, 149, 249, ...
    with the paper's settings, as published; :func:`gnerf.optim.defaults.is_preconditioning_step`);
    each param group follows its own settings and step count (see
    :class:`~gnerf.optim.base.HutchinsonOptimizer`). On those steps the gradients must carry a
    graph: call ``loss.backward(create_graph=optimizer.should_create_graph())``. The optimizer
    detaches the gradients at the end of every step, which releases that graph.

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        lr: learning rate :math:`\eta` (the paper: 0.15 for images and shapes).
        betas: :math:`(\beta_1, \beta_2)`, momentum and curvature averaging coefficients.
        eps: :math:`\epsilon` added to the square root of the corrected curvature.
        weight_decay: decoupled weight decay :math:`\lambda`.
        precondition_warmup_steps: number of initial steps that all update the curvature.
        precondition_frequency: curvature cadence after the warm-up.
        foreach, generator, seed, process_group: as :class:`~gnerf.optim.base.HutchinsonOptimizer`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = PAPER.lr,
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
        defaults = self.esgd_defaults(
            lr, betas, eps, weight_decay, precondition_warmup_steps, precondition_frequency, foreach
        )
        super().__init__(params, defaults, generator=generator, seed=seed, process_group=process_group)


class ESGDMax(EquilibratedSGD):
    r"""ESGD-Max: the paper's optimizer for Gaussian radiance fields.

    With :math:`k` the number of curvature updates so far and :math:`\rho` = ``lr_warmup``:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        D &\leftarrow \max(\beta_2 D,\; h \odot h) \qquad \text{(curvature steps only, } h = Hv) \\
        \hat m_t &= \frac{\beta_1 m_t + (1 - \beta_1) g_t}{1 - \beta_1^{t+1}}
            \qquad \text{(Nesterov look-ahead)} \\
        \eta_t &= \eta \,(1 - \rho^{k}) \quad (\eta_t = \eta \text{ if } \rho = 0) \\
        \theta_t &= \theta_{t-1} (1 - \eta_t \lambda) - \eta_t\, \hat m_t / (\sqrt{D} + \epsilon)

    The maximum needs no bias correction. Same arguments as :class:`ESGD`, plus ``lr_warmup``
    (default ``PAPER.lr_warmup`` = 0.99, as published; 0 turns the ramp off).
    """

    use_max = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = PAPER.lr,
        betas: Tuple[float, float] = PAPER.betas,
        eps: float = PAPER.eps,
        weight_decay: float = 0.0,
        precondition_warmup_steps: int = PAPER.precondition_warmup_steps,
        precondition_frequency: int = PAPER.precondition_frequency,
        lr_warmup: float = PAPER.lr_warmup,
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
            lr_warmup=lr_warmup,
        )
        super().__init__(params, defaults, generator=generator, seed=seed, process_group=process_group)

    def _check_group(self, group: Dict[str, Any]) -> None:
        super()._check_group(group)
        if not 0.0 <= group["lr_warmup"] < 1.0:
            raise ValueError(f"invalid lr_warmup={group['lr_warmup']}: must lie in [0, 1) (0 disables it)")

    def _lr_warmup(self, group: Dict[str, Any]) -> float:
        return group["lr_warmup"]


def esgd(
    params: List[Tensor],
    grads: List[Tensor],
    exp_avgs: List[Tensor],
    curvatures: List[Tensor],
    hvps: Optional[List[Tensor]],
    state_steps: List[Tensor],
    curvature_updates: List[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    lr_warmup: float,
    use_max: bool,
    foreach: bool = False,
    correct_by_updates: bool = False,
) -> None:
    """Functional ESGD (``use_max=False``) / ESGD-Max (``use_max=True``) update over lists of tensors.

    See :class:`ESGD` and :class:`ESGDMax` for the maths. ``hvps`` is ``None`` on steps without
    curvature. As ``torch.optim.adam.adam`` does with ``state_steps``, it counts this step in
    ``state_steps`` and, on curvature steps, this update in ``curvature_updates`` (float32 scalars)
    before using them; each parameter is corrected with its own counts. ``correct_by_updates``
    bias-corrects ESGD's running mean with the number of curvature updates instead of the step
    count (:class:`~gnerf.optim.adam_start.ESGDAdamStart`).
    """
    for step_t in state_steps:
        step_t.add_(1)
    if hvps is not None:
        for k_t in curvature_updates:
            k_t.add_(1)
    lrs, bias_corrections1, bias_corrections2_sqrt = [], [], []
    for step_t, k_t in zip(state_steps, curvature_updates):
        step, k = int(step_t), int(k_t)
        lrs.append(lr * (1.0 - lr_warmup**k) if lr_warmup > 0 else lr)
        if use_max:  # Nesterov look-ahead, no correction of the maximum
            bias_corrections1.append(1.0 - beta1 ** (step + 1))
            bias_corrections2_sqrt.append(1.0)
        else:  # plain momentum; both statistics corrected with the step count (or D by its updates)
            bias_corrections1.append(1.0 - beta1**step)
            bias_corrections2_sqrt.append(math.sqrt(1.0 - beta2 ** (max(k, 1) if correct_by_updates else step)))
    fn = _multi_tensor_esgd if foreach else _single_tensor_esgd
    fn(
        params,
        grads,
        exp_avgs,
        curvatures,
        hvps,
        lrs=lrs,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        use_max=use_max,
        bias_corrections1=bias_corrections1,
        bias_corrections2_sqrt=bias_corrections2_sqrt,
    )


def _single_tensor_esgd(
    params,
    grads,
    exp_avgs,
    curvatures,
    hvps,
    *,
    lrs,
    beta1,
    beta2,
    eps,
    weight_decay,
    use_max,
    bias_corrections1,
    bias_corrections2_sqrt,
) -> None:
    for i, (p, g, m, d) in enumerate(zip(params, grads, exp_avgs, curvatures)):
        if weight_decay != 0:
            p.mul_(1.0 - lrs[i] * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        if hvps is not None:
            h = hvps[i]
            if use_max:
                torch.maximum(d.mul_(beta2), h * h, out=d)
            else:
                d.mul_(beta2).addcmul_(h, h, value=1.0 - beta2)
        step_dir = m.lerp(g, 1.0 - beta1) if use_max else m
        denom = d.sqrt().div_(bias_corrections2_sqrt[i]).add_(eps)
        p.addcdiv_(step_dir, denom, value=-lrs[i] / bias_corrections1[i])


def _multi_tensor_esgd(
    params,
    grads,
    exp_avgs,
    curvatures,
    hvps,
    *,
    lrs,
    beta1,
    beta2,
    eps,
    weight_decay,
    use_max,
    bias_corrections1,
    bias_corrections2_sqrt,
) -> None:
    if weight_decay != 0:
        torch._foreach_mul_(params, [1.0 - lr * weight_decay for lr in lrs])
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    if hvps is not None:
        torch._foreach_mul_(curvatures, beta2)
        if use_max:
            torch._foreach_maximum_(curvatures, torch._foreach_mul(hvps, hvps))
        else:
            torch._foreach_addcmul_(curvatures, hvps, hvps, value=1.0 - beta2)
    step_dir = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1) if use_max else exp_avgs
    denom = torch._foreach_sqrt(curvatures)
    torch._foreach_div_(denom, bias_corrections2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, step_dir, denom, [-lr / bc for lr, bc in zip(lrs, bias_corrections1)])
