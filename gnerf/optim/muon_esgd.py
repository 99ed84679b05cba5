r"""MuonESGD: Muon on a network's hidden matrices and equilibrated SGD (curvature) on the rest.

gnerf's own optimizer for neural fields, not the paper's. Muon's orthogonalised steps train the
square hidden matrices of a coordinate network quickly (the INR recipe, :class:`~gnerf.optim.muon.MuonAdam`),
but that recipe leaves the input layer, which sets the field's frequencies, the output layer and
every bias to Adam. This optimizer gives them ESGD instead: steps preconditioned by the Hutchinson
equilibration statistic :math:`\sqrt{\mathrm{diag}(H^2)}`, which the paper found better than
Adam's second moment on Gaussian, sine and wavelet networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, List, Literal, Optional, Tuple

import torch
from torch import Tensor

from gnerf.optim.base import new_counter
from gnerf.optim.configs import OptimizerConfig, register_optimizer
from gnerf.optim.defaults import PAPER
from gnerf.optim.distributed import ProcessGroupSetting
from gnerf.optim.hybrid import HiddenESGD
from gnerf.optim.muon import NS_COEFFICIENTS, check_muon_settings, muon_update
from gnerf.optim.schedules import CosineSchedule, ScheduleConfig

__all__ = ["MuonESGD", "MuonESGDConfig", "MuonESGDEqConfig"]

HIDDEN_CURVATURE = ("off", "before", "after", "rows")


class MuonESGD(HiddenESGD):
    r"""Muon on the hidden (square) weight matrices, ESGD on every other parameter, one optimizer.

    Param groups tagged ``"algorithm": "muon"`` take ``torch.optim.Muon``'s update
    (:func:`~gnerf.optim.muon.muon_update`: Nesterov momentum :math:`\mu`, the Newton-Schulz
    orthogonalisation, the shape-adjusted lr). Groups tagged ``"esgd"`` take ESGD's update with its
    curvature averaged over the curvature updates :math:`k` (as :class:`~gnerf.optim.adam_start.ESGDAdamStart`
    after its switch), with gradient :math:`g_t` and :math:`h = Hv` for a Rademacher :math:`v`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        D \leftarrow \beta_2 D + (1 - \beta_2)\, h \odot h \quad \text{(curvature steps)} \\
        \theta_t &= \theta_{t-1} (1 - \eta_E \lambda)
            - \eta_E\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{D / (1 - \beta_2^k)} + \epsilon}

    Curvature is estimated on each of the first ``precondition_warmup_steps`` steps, then on every
    ``precondition_frequency``-th: one Hessian-vector product over all parameters, of which the ESGD
    groups use theirs. The first ESGD steps rest on few probes and can be large: train with a
    warm-up of the learning rate (the registered schedule ramps over 100 steps). A learning-rate
    scheduler scales both algorithms' groups alike.

    ``hidden_curvature`` lets the Muon groups use their share of the same product (it costs nothing more):
    they keep their own running mean :math:`D` of :math:`h \odot h`, and Muon's Nesterov momentum
    :math:`\tilde B` is divided elementwise by :math:`\sqrt{\hat D} + \epsilon` (:math:`\hat D` corrected by
    its updates) ``"before"`` the orthogonalisation, :math:`\mathrm{NS}_k(\tilde B \oslash (\sqrt{\hat D} +
    \epsilon))`, or its orthogonalised update ``"after"`` it, :math:`O \oslash (\sqrt{\hat D} + \epsilon)`
    rescaled to :math:`\|O\|_F`; ``"rows"`` divides each row of :math:`O` (an output neuron's weights) by
    :math:`\sqrt{\mathrm{mean}_j \hat D_{ij}} + \epsilon` instead, then rescales alike; ``"off"`` (the default) is
    Muon's update. Elementwise after the orthogonalisation, the entries whose curvature is near zero (the weights
    from inactive units, floored at :math:`\epsilon`) take most of the rescaled step, and the other entries of
    that matrix move far less than under Muon; ``"rows"`` averages over a row's entries and does not.
    ``curvature_damping`` :math:`\delta` adds :math:`\delta\,\mathrm{mean}(\sqrt{\hat D})` (the matrix's mean) to every
    denominator, which bounds the ratio of any two by :math:`1 + \max(\sqrt{\hat D}) / (\delta\,\mathrm{mean}(\sqrt{\hat D}))`
    and so keeps the entries of near-zero curvature from taking the step; :math:`\delta \to \infty` is Muon's
    direction.

    Args:
        params: parameters (split by :func:`~gnerf.optim.muon.hidden_matrices`), or param groups that each
            give ``"algorithm"``.
        lr: Muon's learning rate :math:`\eta` (before ``adjust_lr_fn``).
        esgd_lr: ESGD's learning rate :math:`\eta_E`.
        momentum, nesterov, ns_steps, ns_coefficients, ns_eps, adjust_lr_fn, ns_dtype: Muon's
            (``ns_eps`` is ``torch.optim.Muon``'s ``eps``); see :class:`~gnerf.optim.muon.MuonAdam`.
        hidden_curvature: ``"off"``, ``"before"``, ``"after"`` or ``"rows"``: where and how the Muon groups divide by
            their curvature.
        curvature_damping: :math:`\delta \geq 0`, the hidden matrices' damping relative to their mean curvature.
        betas, eps, precondition_warmup_steps, precondition_frequency: ESGD's.
        weight_decay: decoupled weight decay of both.
        foreach, generator, seed, process_group: as :class:`~gnerf.optim.base.HutchinsonOptimizer`.
    """

    hidden_algorithm = "muon"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-4,
        esgd_lr: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_coefficients: Tuple[float, float, float] = NS_COEFFICIENTS,
        ns_eps: float = 1e-7,
        adjust_lr_fn: Optional[str] = "match_rms_adamw",
        ns_dtype: str = "auto",
        hidden_curvature: str = "off",
        curvature_damping: float = 0.0,
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
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients),
            ns_eps=ns_eps,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
            hidden_curvature=hidden_curvature,
            curvature_damping=curvature_damping,
        )
        super().__init__(params, esgd_lr, defaults, generator=generator, seed=seed, process_group=process_group)

    def _check_group(self, group: Dict[str, Any]) -> None:
        if group["hidden_curvature"] not in HIDDEN_CURVATURE:
            raise ValueError(
                f"invalid hidden_curvature={group['hidden_curvature']!r}: choose one of {', '.join(HIDDEN_CURVATURE)}"
            )
        if not group["curvature_damping"] >= 0.0:
            raise ValueError(f"invalid curvature_damping={group['curvature_damping']}: must be >= 0")
        super()._check_group(group)
        check_muon_settings(group["momentum"], group["ns_steps"], group["adjust_lr_fn"], group["ns_dtype"])

    def _check_hidden_params(self, params: List[Tensor]) -> None:
        if any(p.ndim != 2 for p in params):
            raise ValueError("MuonESGD: a 'muon' param group may hold only 2-D weight matrices")

    def _hidden_uses_curvature(self, group: Dict[str, Any]) -> bool:
        return group["hidden_curvature"] != "off"

    def _init_hidden_state(self, p: Tensor, state: dict) -> None:
        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hidden_step(self, group, params, states, hvps) -> None:
        denominators = None
        if group["hidden_curvature"] != "off":
            denominators = []
            beta2 = group["betas"][1]
            for i, s in enumerate(states):
                if "curvature" not in s:
                    s["curvature"] = torch.zeros_like(params[i], memory_format=torch.preserve_format)
                    s["curvature_updates"] = new_counter()
                if hvps is not None:
                    s["curvature_updates"].add_(1)
                    s["curvature"].mul_(beta2).addcmul_(hvps[i], hvps[i], value=1.0 - beta2)
                curvature = s["curvature"]
                if group["hidden_curvature"] == "rows":
                    curvature = curvature.mean(dim=1, keepdim=True)
                correction = math.sqrt(1.0 - beta2 ** max(int(s["curvature_updates"]), 1))
                root = curvature.sqrt().div_(correction)
                if group["curvature_damping"]:
                    root.add_(root.mean() * group["curvature_damping"])
                denominators.append(root.add_(group["eps"]))
        muon_update(
            params,
            [p.grad.detach() for p in params],
            [s["momentum_buffer"] for s in states],
            dict(group, eps=group["ns_eps"]),
            denominators,
            "before" if group["hidden_curvature"] == "before" else "after",
        )


@register_optimizer
@dataclass
class MuonESGDConfig(OptimizerConfig):
    """gnerf's :class:`MuonESGD`: Muon (lr 6.67e-5) on the hidden matrices, ESGD (lr 0.1) on the rest, cosine to 0
    after a 100-step warm-up. The Muon lr won its sweep on kodim01-04 (``python -m experiments.sweep``,
    docs/sweep.md: mean final PSNR 83.62 dB against 77.91 at 2e-4); ESGD's lr and the schedule are not swept."""

    name: ClassVar[str] = "muon-esgd"
    schedule: ClassVar[ScheduleConfig] = CosineSchedule(lr_final=0.0, warmup_steps=100)
    curvature: ClassVar[bool] = True
    lr: Optional[float] = 6.67e-5
    """Muon's learning rate on the hidden matrices."""
    esgd_lr: float = 0.1
    """ESGD's learning rate on the first and last layers and the biases."""
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    adjust_lr_fn: str = "match_rms_adamw"
    ns_dtype: str = "auto"
    """Precision of the Newton-Schulz iteration: auto (bfloat16 on CUDA, float32 elsewhere), bfloat16, float32."""
    hidden_curvature: Literal["off", "before", "after", "rows"] = "off"
    """Where Muon's hidden matrices divide by their own curvature (the same product as ESGD's): off, before or
    after the orthogonalisation, or after it by each row's (neuron's) mean curvature."""
    curvature_damping: float = 0.0
    """delta: the hidden matrices divide by sqrt(D) + delta * mean(sqrt(D)) + eps (0: by sqrt(D) + eps; large: by a
    constant, Muon's direction)."""
    betas: Tuple[float, float] = PAPER.betas
    eps: float = PAPER.eps
    weight_decay: float = 0.0
    precondition_warmup_steps: int = PAPER.precondition_warmup_steps
    precondition_frequency: int = PAPER.precondition_frequency
    foreach: Optional[bool] = None

    def _make(self, params, *, seed=None, process_group="auto"):
        return MuonESGD(
            params,
            lr=self.resolved_lr(),
            esgd_lr=self.esgd_lr,
            momentum=self.momentum,
            nesterov=self.nesterov,
            ns_steps=self.ns_steps,
            adjust_lr_fn=self.adjust_lr_fn,
            ns_dtype=self.ns_dtype,
            hidden_curvature=self.hidden_curvature,
            curvature_damping=self.curvature_damping,
            betas=tuple(self.betas),
            eps=self.eps,
            weight_decay=self.weight_decay,
            precondition_warmup_steps=self.precondition_warmup_steps,
            precondition_frequency=self.precondition_frequency,
            foreach=self.foreach,
            seed=seed,
            process_group=process_group,
        )


@register_optimizer
@dataclass
class MuonESGDEqConfig(MuonESGDConfig):
    """gnerf's :class:`MuonESGD` with Muon's step equilibrated: the hidden matrices divide their orthogonalised step
    elementwise by their own curvature, damped by 0.1 x its mean, and rescale it to its norm; ESGD (lr 0.1) on the
    rest; Muon lr 6.67e-5; cosine to 0 after a 100-step warm-up.

    Chosen at the sweep's protocol (128 x 128, 100 epochs): the damping among 0, 0.1 and 1 on kodim01 (0.1 ended
    highest), and the lr by its sweep on kodim01-04 like every other optimizer's (``python -m experiments.sweep``,
    docs/sweep.md: mean final PSNR 85.40 dB against 79.25 at 2e-4 and 38.45 at 2.22e-5).
    """

    name: ClassVar[str] = "muon-esgd-eq"
    lr: Optional[float] = 6.67e-5
    """Muon's learning rate on the hidden matrices."""
    hidden_curvature: Literal["off", "before", "after", "rows"] = "after"
    curvature_damping: float = 0.1
