r"""ESGD and ESGD-Max: equilibrated SGD with Hutchinson curvature, as published with the paper.

Equilibrated SGD (Dauphin, de Vries & Bengio, "Equilibrated adaptive learning rates for
non-convex optimization", NeurIPS 2015) preconditions the gradient by the equilibration
statistic :math:`\sqrt{\mathrm{diag}(H^2)}`, estimated from Hessian-vector products with
Rademacher vectors, :math:`\mathbb{E}_v[(Hv)^2] = \mathrm{diag}(H^2)`. Chng, Saratchandran &
Lucey, "Preconditioners for the Stochastic Training of Neural Fields", train images and shapes
with :class:`ESGD` and radiance fields with :class:`ESGDMax`, which replaces the running mean by
an exponentially weighted maximum. Both follow the implementation published with the paper.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from gnerf.optim.base import HutchinsonOptimizer, check_hyperparameters
from gnerf.optim.defaults import PAPER, check_cadence, is_preconditioning_step
from gnerf.optim.distributed import ProcessGroupSetting

__all__ = ["ADAM_START_LR", "ESGD", "ESGDAdamStart", "ESGDMax", "esgd"]


class ESGD(HutchinsonOptimizer):
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
    with the paper's settings, as published; :func:`gnerf.optim.defaults.is_preconditioning_step`).
    On those steps the gradients must carry a graph: call
    ``loss.backward(create_graph=optimizer.should_create_graph())``. The optimizer detaches
    the gradients at the end of every step, which releases that graph.

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        lr: learning rate :math:`\eta` (the paper: 0.15 for images and shapes).
        betas: :math:`(\beta_1, \beta_2)`, momentum and curvature averaging coefficients.
        eps: :math:`\epsilon` added to the square root of the corrected curvature.
        weight_decay: decoupled weight decay :math:`\lambda`.
        precondition_warmup_steps: number of initial steps that all update the curvature.
        precondition_frequency: curvature cadence after the warm-up.
        foreach, generator, seed, process_group: as
            :class:`~gnerf.optim.base.HutchinsonOptimizer`.
    """

    #: Exponentially weighted maximum (ESGD-Max) instead of the running mean.
    use_max = False
    #: Bias-correct the running mean with the number of curvature updates instead of the step count.
    correct_by_updates = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = PAPER.lr,
        betas: Tuple[float, float] = PAPER.betas,
        eps: float = PAPER.eps,
        weight_decay: float = 0.0,
        precondition_warmup_steps: int = PAPER.precondition_warmup_steps,
        precondition_frequency: int = PAPER.precondition_frequency,
        foreach: Optional[bool] = None,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        process_group: ProcessGroupSetting = "auto",
        *,
        lr_warmup: float = 0.0,
    ) -> None:
        check_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        if not 0.0 <= lr_warmup < 1.0:
            raise ValueError(f"invalid lr_warmup={lr_warmup}: must lie in [0, 1) (0 disables it)")
        if lr_warmup and not self.use_max:
            raise ValueError("ESGD has no learning-rate warm-up (the published ESGD has none); "
                             "use ESGDMax for lr_warmup")
        check_cadence(precondition_warmup_steps=precondition_warmup_steps,
                      precondition_frequency=precondition_frequency)
        super().__init__(params, dict(lr_warmup=lr_warmup), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=foreach, generator=generator, seed=seed, process_group=process_group)
        self.precondition_warmup_steps = int(precondition_warmup_steps)
        self.precondition_frequency = int(precondition_frequency)
        self.num_curvature_updates = 0  # completed curvature updates (k)

    state_key = "esgd"
    state_fields = ("num_steps", "num_curvature_updates", "precondition_warmup_steps", "precondition_frequency")
    matching_fields = ("use_max",)

    def is_curvature_step(self) -> bool:
        """Whether the next ``step`` estimates curvature (see :func:`~gnerf.optim.defaults.is_preconditioning_step`)."""
        return is_preconditioning_step(self.num_steps, self.precondition_frequency, self.precondition_warmup_steps)

    def _on_curvature_update(self) -> None:
        self.num_curvature_updates += 1

    def _update_group(self, group, params, states, foreach, vectors, hvps) -> None:
        esgd(
            *self._group_tensors(params, states),
            hvps,
            step=self.num_steps,
            num_curvature_updates=self.num_curvature_updates,
            **self._group_hyperparameters(group),
            lr_warmup=group["lr_warmup"],
            use_max=self.use_max,
            foreach=foreach,
            correct_by_updates=self.correct_by_updates,
        )


class ESGDMax(ESGD):
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

    def __init__(self, params: Iterable[Any], lr: float = PAPER.lr, *args: Any, lr_warmup: float = PAPER.lr_warmup,
                 **kwargs: Any) -> None:
        super().__init__(params, lr, *args, lr_warmup=lr_warmup, **kwargs)


#: :class:`ESGDAdamStart`'s ESGD learning rate after the switch (gnerf's choice, not the paper's 0.15: chosen on
#: kodim01-04 in docs/reproduction.md, where 0.15 fell behind Adam just after the switch on kodim02 and 0.1 did not;
#: checked on kodim05-12 in docs/reproduction_heldout.md).
ADAM_START_LR = 0.1


class ESGDAdamStart(ESGD):
    r"""Adam for the first ``adam_steps`` steps, then ESGD with its curvature corrected by the number of updates.

    A variant of gnerf's, not the paper's. The published :class:`ESGD` lags Adam for the first
    tens of epochs of an image fit and its final PSNR swings by several dB between seeds; from
    a point Adam has reached, ESGD converges fast and steadily. So this optimizer takes Adam's
    steps (:math:`\eta_A` = ``adam_lr``), then switches to ESGD. Its curvature cadence starts
    ``precondition_warmup_steps`` steps before the switch (curvature on each of those steps, then every
    ``precondition_frequency``-th), so the Adam phase costs what Adam costs and :math:`D` is estimated
    where ESGD takes over:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        s_t = \beta_2 s_{t-1} + (1 - \beta_2) g_t^2 \quad (t \le T) \\
        D &\leftarrow \beta_2 D + (1 - \beta_2)\, h \odot h \qquad \text{(curvature steps, } h = Hv) \\
        \theta_t &= \theta_{t-1} - \eta_A\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{s_t / (1 - \beta_2^t)} + 10^{-8}}
            \qquad (t \le T = \text{adam\_steps}) \\
        \theta_t &= \theta_{t-1} (1 - \eta \lambda) - \eta\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{D / (1 - \beta_2^k)} + \epsilon}
            \qquad (t > T)

    where :math:`k` counts the curvature updates, so :math:`D / (1 - \beta_2^k)` is the mean of
    :math:`(Hv)^2` over them. The first ``adam_steps`` steps are ``torch.optim.Adam``'s (lr
    ``adam_lr``, the same betas, no weight decay). A learning-rate scheduler scales both phases.
    Same arguments as :class:`ESGD`, except that ``lr`` defaults to :data:`ADAM_START_LR` (0.1), plus
    ``adam_steps`` (default 800) and ``adam_lr`` (1e-4).
    """

    def __init__(self, params: Iterable[Any], lr: float = ADAM_START_LR, *args: Any, adam_steps: int = 800,
                 adam_lr: float = 1e-4, **kwargs: Any) -> None:
        if adam_steps < 0 or adam_lr < 0:
            raise ValueError(f"invalid adam_steps={adam_steps} or adam_lr={adam_lr}: both must be >= 0")
        super().__init__(params, lr, *args, **kwargs)
        self.adam_steps = int(adam_steps)
        for group in self.param_groups:
            group.setdefault("adam_lr_ratio", float(adam_lr) / group["lr"] if group["lr"] > 0 else 0.0)

    correct_by_updates = True
    state_fields = ESGD.state_fields + ("adam_steps",)
    state_tensors = ESGD.state_tensors + ("exp_avg_sq",)

    def is_curvature_step(self) -> bool:
        """ESGD's cadence, started ``precondition_warmup_steps`` steps before the switch from Adam."""
        n = self.num_steps - max(self.adam_steps - self.precondition_warmup_steps, 0)
        return n >= 0 and is_preconditioning_step(n, self.precondition_frequency, self.precondition_warmup_steps)

    def _update_group(self, group, params, states, foreach, vectors, hvps) -> None:
        if self.num_steps > self.adam_steps:  # this step (counted already) comes after Adam's
            return super()._update_group(group, params, states, foreach, vectors, hvps)
        t = self.num_steps
        beta1, beta2 = group["betas"]
        lr = group["lr"] * group["adam_lr_ratio"]
        for i, (p, state) in enumerate(zip(params, states)):
            g, m, s, d = p.grad.detach(), state["exp_avg"], state["exp_avg_sq"], state["curvature"]
            m.lerp_(g, 1.0 - beta1)
            s.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            if hvps is not None:
                h = hvps[i]
                d.mul_(beta2).addcmul_(h, h, value=1.0 - beta2)
            # torch.optim.Adam's order of operations, so that this phase is Adam's trajectory to the bit
            denom = s.sqrt().div_(math.sqrt(1.0 - beta2 ** t)).add_(1e-8)
            p.addcdiv_(m, denom, value=-lr / (1.0 - beta1 ** t))


def esgd(
    params: List[Tensor],
    grads: List[Tensor],
    exp_avgs: List[Tensor],
    curvatures: List[Tensor],
    hvps: Optional[List[Tensor]],
    *,
    step: int,
    num_curvature_updates: int,
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

    See :class:`ESGD` and :class:`ESGDMax` for the maths. ``step`` is the 1-based index of this
    step, ``num_curvature_updates`` the number of curvature updates including this step's;
    ``hvps`` is ``None`` on steps without curvature. ``correct_by_updates`` bias-corrects ESGD's
    running mean with ``num_curvature_updates`` instead of ``step`` (:class:`ESGDAdamStart`).
    """
    k = num_curvature_updates
    lr_t = lr * (1.0 - lr_warmup ** k) if lr_warmup > 0 else lr
    if use_max:  # Nesterov look-ahead, no correction of the maximum
        bias_correction1, bias_correction2_sqrt = 1.0 - beta1 ** (step + 1), 1.0
    else:  # plain momentum; both statistics corrected with the step count (or D by its updates)
        d_count = max(k, 1) if correct_by_updates else step
        bias_correction1, bias_correction2_sqrt = 1.0 - beta1 ** step, math.sqrt(1.0 - beta2 ** d_count)
    fn = _multi_tensor_esgd if foreach else _single_tensor_esgd
    fn(params, grads, exp_avgs, curvatures, hvps, lr_t=lr_t, beta1=beta1, beta2=beta2, eps=eps,
       weight_decay=weight_decay, use_max=use_max, bias_correction1=bias_correction1,
       bias_correction2_sqrt=bias_correction2_sqrt)


def _single_tensor_esgd(params, grads, exp_avgs, curvatures, hvps, *, lr_t, beta1, beta2, eps, weight_decay,
                        use_max, bias_correction1, bias_correction2_sqrt) -> None:
    for i, (p, g, m, d) in enumerate(zip(params, grads, exp_avgs, curvatures)):
        if weight_decay != 0:
            p.mul_(1.0 - lr_t * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        if hvps is not None:
            h = hvps[i]
            if use_max:
                torch.maximum(d.mul_(beta2), h * h, out=d)
            else:
                d.mul_(beta2).addcmul_(h, h, value=1.0 - beta2)
        step_dir = m.lerp(g, 1.0 - beta1) if use_max else m
        denom = d.sqrt().div_(bias_correction2_sqrt).add_(eps)
        p.addcdiv_(step_dir, denom, value=-lr_t / bias_correction1)


def _multi_tensor_esgd(params, grads, exp_avgs, curvatures, hvps, *, lr_t, beta1, beta2, eps, weight_decay,
                       use_max, bias_correction1, bias_correction2_sqrt) -> None:
    if weight_decay != 0:
        torch._foreach_mul_(params, 1.0 - lr_t * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    if hvps is not None:
        torch._foreach_mul_(curvatures, beta2)
        if use_max:
            torch._foreach_maximum_(curvatures, torch._foreach_mul(hvps, hvps))
        else:
            torch._foreach_addcmul_(curvatures, hvps, hvps, value=1.0 - beta2)
    step_dir = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1) if use_max else exp_avgs
    denom = torch._foreach_sqrt(curvatures)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, step_dir, denom, -lr_t / bias_correction1)
