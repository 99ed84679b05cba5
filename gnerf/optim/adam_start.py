r"""ESGDAdamStart: Adam's first steps, then ESGD with its curvature corrected by the number of updates."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from torch.optim.adam import adam

from gnerf.optim.defaults import PAPER, is_preconditioning_step
from gnerf.optim.distributed import ProcessGroupSetting
from gnerf.optim.esgd import EquilibratedSGD

__all__ = ["ADAM_START_LR", "ESGDAdamStart"]

#: :class:`ESGDAdamStart`'s ESGD learning rate after the switch (gnerf's choice, not the paper's 0.15: chosen on
#: kodim01-04 in docs/reproduction.md, where 0.15 fell behind Adam just after the switch on kodim02 and 0.1 did not;
#: checked on kodim05-12 in docs/reproduction_heldout.md).
ADAM_START_LR = 0.1


class ESGDAdamStart(EquilibratedSGD):
    r"""Adam for the first ``adam_steps`` steps, then ESGD with its curvature corrected by the number of updates.

    A variant of gnerf's, not the paper's. The published :class:`~gnerf.optim.esgd.ESGD` lags Adam
    for the first tens of epochs of an image fit and its final PSNR swings by several dB between
    seeds; from a point Adam has reached, ESGD converges fast and steadily. So this optimizer takes
    Adam's steps (:math:`\eta_A` = ``adam_lr``, :math:`\epsilon_A` = ``adam_eps``), then switches
    to ESGD. Its curvature cadence starts ``precondition_warmup_steps`` steps before the switch
    (curvature on each of those steps, then every ``precondition_frequency``-th), so the Adam phase
    costs what Adam costs and :math:`D` is estimated where ESGD takes over:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        s_t = \beta_2 s_{t-1} + (1 - \beta_2) g_t^2 \quad (t \le T) \\
        D &\leftarrow \beta_2 D + (1 - \beta_2)\, h \odot h \qquad \text{(curvature steps, } h = Hv) \\
        \theta_t &= \theta_{t-1} - \eta_A\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{s_t / (1 - \beta_2^t)} + \epsilon_A}
            \qquad (t \le T = \text{adam\_steps}) \\
        \theta_t &= \theta_{t-1} (1 - \eta \lambda) - \eta\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{D / (1 - \beta_2^k)} + \epsilon}
            \qquad (t > T)

    where :math:`k` counts the curvature updates, so :math:`D / (1 - \beta_2^k)` is the mean of
    :math:`(Hv)^2` over them. The first ``adam_steps`` steps are ``torch.optim.Adam``'s, taken by
    its own update (``torch.optim.adam.adam``, per-tensor or multi-tensor as ``foreach`` says) with
    lr ``adam_lr``, eps ``adam_eps``, the optimizer's betas and no weight decay; Adam's first moment
    :math:`m` is the one ESGD carries on with. A learning-rate scheduler scales both phases: Adam's lr
    keeps its ratio ``adam_lr / lr`` to the group's lr when the group was added (the group's
    ``adam_lr_ratio``). Each param group switches after its own first ``adam_steps`` steps.

    Same arguments as :class:`~gnerf.optim.esgd.ESGD`, except that ``lr`` defaults to
    :data:`ADAM_START_LR` (0.1), plus ``adam_steps`` (default 800), ``adam_lr`` (1e-4) and
    ``adam_eps`` (1e-8, torch's).
    """

    correct_by_updates = True
    state_tensors = EquilibratedSGD.state_tensors + ("exp_avg_sq",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = ADAM_START_LR,
        betas: Tuple[float, float] = PAPER.betas,
        eps: float = PAPER.eps,
        weight_decay: float = 0.0,
        precondition_warmup_steps: int = PAPER.precondition_warmup_steps,
        precondition_frequency: int = PAPER.precondition_frequency,
        adam_steps: int = 800,
        adam_lr: float = 1e-4,
        adam_eps: float = 1e-8,
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
            adam_steps=adam_steps,
            adam_lr=adam_lr,
            adam_eps=adam_eps,
        )
        super().__init__(params, defaults, generator=generator, seed=seed, process_group=process_group)

    def _check_group(self, group: Dict[str, Any]) -> None:
        super()._check_group(group)
        for name, low in (("adam_steps", 0), ("adam_lr", 0.0)):
            if not group[name] >= low:
                raise ValueError(f"invalid {name}={group[name]}: must be >= {low}")
        if not group["adam_eps"] > 0.0:
            raise ValueError(f"invalid adam_eps={group['adam_eps']}: must be > 0")

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["adam_lr_ratio"] = group["adam_lr"] / group["lr"] if group["lr"] > 0 else 0.0

    def _is_due(self, group: Dict[str, Any]) -> bool:
        """ESGD's cadence, started ``precondition_warmup_steps`` steps before the group's switch from Adam."""
        warmup = group["precondition_warmup_steps"]
        n = self._group_step(group) - max(group["adam_steps"] - warmup, 0)
        return n >= 0 and is_preconditioning_step(n, group["precondition_frequency"], warmup)

    def _update_group(self, group, params, states, foreach, vectors, hvps) -> None:
        if self._group_step(group) >= group["adam_steps"]:  # the group's Adam steps are done
            return super()._update_group(group, params, states, foreach, vectors, hvps)
        beta1, beta2 = group["betas"]
        if hvps is not None:  # the curvature cadence starts before the switch
            curvatures = [s["curvature"] for s in states]
            if foreach:
                torch._foreach_mul_(curvatures, beta2)
                torch._foreach_addcmul_(curvatures, hvps, hvps, value=1.0 - beta2)
            else:
                for d, h in zip(curvatures, hvps):
                    d.mul_(beta2).addcmul_(h, h, value=1.0 - beta2)
            for s in states:
                s["curvature_updates"].add_(1)
        adam(
            params,
            [p.grad.detach() for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            foreach=foreach,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"] * group["adam_lr_ratio"],
            weight_decay=0.0,
            eps=group["adam_eps"],
            maximize=False,
        )
