r"""Muon on a network's hidden weight matrices and Adam on the rest, as one ``torch.optim.Optimizer``.

Muon's update is ``torch.optim.Muon``'s, step for step (tests/test_muon.py checks it bit for bit):
Nesterov momentum, the quintic Newton-Schulz orthogonalisation of the update matrix, an lr adjusted
to the matrix's shape. The one setting ``torch.optim.Muon`` does not have is the precision of the
Newton-Schulz iteration (``ns_dtype``): torch always runs it in bfloat16, which GPUs multiply natively
and CPUs without bfloat16 instructions emulate (on this project's 2-core CPU, 0.68 s of a 0.72 s
training step of the 5 x 256 image network, against 0.03 s for Adam's whole step:
``python -m benchmarks.optimizer_steps``). ``ns_dtype="auto"`` therefore runs it in bfloat16 on a GPU,
as torch does, and in float32 elsewhere.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = [
    "MuonAdam",
    "NS_COEFFICIENTS",
    "adjusted_lr",
    "check_muon_settings",
    "hidden_matrices",
    "muon_update",
    "newton_schulz",
    "ns_dtype_for",
]

#: The quintic Newton-Schulz coefficients of Keller Jordan's Muon (``torch.optim.Muon``'s defaults).
NS_COEFFICIENTS: Tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
ADJUST_LR_FNS = ("original", "match_rms_adamw", "spectral_unclamped")


def hidden_matrices(params: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
    """``(hidden, rest)``: the square 2-D parameters, and all the others, each in the order given.

    In a coordinate MLP the square matrices are the weights between its hidden layers; the input and
    output layers' weights, the biases and (in the radiance field) the skip layer's and the heads'
    rectangular weights are the rest.
    """
    hidden = [p for p in params if p.ndim == 2 and p.shape[0] == p.shape[1]]
    ids = {id(p) for p in hidden}
    return hidden, [p for p in params if id(p) not in ids]


def ns_dtype_for(setting: str, device: torch.device) -> torch.dtype:
    """The dtype of the Newton-Schulz iteration: ``setting`` by name, or for ``"auto"`` bfloat16 on CUDA, else float32."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return NS_DTYPES[setting]


def newton_schulz(
    matrix: Tensor,
    steps: int = 5,
    coefficients: Tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    r"""The quintic Newton-Schulz iteration towards the orthogonal factor :math:`UV^\top` of ``matrix`` (in ``dtype``).

    :math:`X_0 = G / \max(\|G\|_F, \epsilon)` (transposed when it has more rows than columns), then
    ``steps`` times :math:`X \leftarrow aX + (bA + cA^2)X` with :math:`A = XX^\top`: torch.optim.Muon's iteration,
    whose singular values end near, not at, 1.
    """
    a, b, c = coefficients
    x = matrix.to(dtype)
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: Optional[str], shape: torch.Size) -> float:
    """``torch.optim.Muon``'s lr for a matrix of ``shape`` (fan-out A, fan-in B): original
    :math:`\\sqrt{\\max(1, A/B)}`, match_rms_adamw :math:`0.2\\sqrt{\\max(A, B)}`, spectral_unclamped :math:`\\sqrt{A/B}`."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(rows / cols)


@torch.no_grad()
def muon_update(
    params: List[Tensor],
    grads: List[Tensor],
    momentum_buffers: List[Tensor],
    group: Dict[str, Any],
    denominators: Optional[List[Tensor]] = None,
    divide: str = "after",
) -> None:
    """``torch.optim.Muon``'s update of ``params`` with the settings of param ``group`` (lr, momentum, nesterov,
    ns_steps, ns_coefficients, eps, adjust_lr_fn, weight_decay, ns_dtype); see :class:`MuonAdam`.

    With ``denominators`` (one per parameter, broadcastable to its shape), the update is divided by them, ``divide``
    ``"before"`` the orthogonalisation (which sets the scale) or ``"after"`` it, then rescaled to the Frobenius
    norm of the orthogonalised update, so only its direction changes."""
    momentum = group["momentum"]
    for i, (p, grad, buf) in enumerate(zip(params, grads, momentum_buffers)):
        buf.lerp_(grad, 1 - momentum)
        update = grad.lerp(buf, momentum) if group["nesterov"] else buf
        if denominators is not None and divide == "before":
            update = update / denominators[i]
        update = newton_schulz(
            update, group["ns_steps"], group["ns_coefficients"], group["eps"], ns_dtype_for(group["ns_dtype"], p.device)
        )
        if denominators is not None and divide == "after":
            divided = update / denominators[i].to(update.dtype)
            update = divided * (update.norm() / divided.norm().clamp(min=group["eps"]))
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-adjusted_lr(group["lr"], group["adjust_lr_fn"], p.shape))


def check_muon_settings(momentum: float, ns_steps: int, adjust_lr_fn: Optional[str], ns_dtype: str) -> None:
    """Raise ``ValueError`` naming the first Muon setting out of range."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"invalid momentum={momentum}: must lie in [0, 1)")
    if not 1 <= ns_steps < 100:
        raise ValueError(f"invalid ns_steps={ns_steps}: must lie in [1, 100)")
    if adjust_lr_fn is not None and adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(f"invalid adjust_lr_fn={adjust_lr_fn!r}: choose one of {', '.join(ADJUST_LR_FNS)}")
    if ns_dtype != "auto" and ns_dtype not in NS_DTYPES:
        raise ValueError(f"invalid ns_dtype={ns_dtype!r}: choose one of auto, {', '.join(NS_DTYPES)}")


class MuonAdam(Optimizer):
    r"""Muon on the hidden weight matrices and Adam on the rest (the INR recipe of arXiv 2512.14366).

    Param groups tagged ``"algorithm": "muon"`` take ``torch.optim.Muon``'s update; with gradient :math:`G_t`,
    momentum :math:`\mu` and lr :math:`\eta`:

    .. math::
        B_t = \mu B_{t-1} + (1 - \mu) G_t, \qquad
        \tilde B_t = (1 - \mu) G_t + \mu B_t \ \text{(Nesterov)}, \qquad
        W_t = W_{t-1}(1 - \eta\lambda) - \eta'\, \mathrm{NS}_k(\tilde B_t)

    with :math:`\mathrm{NS}_k` :func:`newton_schulz` and :math:`\eta'` :func:`adjusted_lr`. Groups tagged
    ``"adam"`` step with ``torch.optim.Adam``'s update (a contained ``torch.optim.Adam`` that shares this
    optimizer's groups and state). Every hyperparameter lives in the param groups, the momentum buffers and
    Adam's moments in the per-parameter state, so ``state_dict`` is torch's schema and one LR scheduler
    scales every group (keeping the ratio of Muon's lr to Adam's).

    Args:
        params: parameters (split by :func:`hidden_matrices`), or param groups that each
            give ``"algorithm"``.
        lr: Muon's learning rate (before ``adjust_lr_fn``).
        adam_lr: Adam's learning rate.
        momentum, nesterov, ns_steps, ns_coefficients, eps, adjust_lr_fn, weight_decay: ``torch.optim.Muon``'s.
        ns_dtype: precision of the Newton-Schulz iteration: ``"auto"`` (bfloat16 on CUDA, float32 elsewhere),
            ``"bfloat16"`` (``torch.optim.Muon``'s, bit for bit), ``"float32"`` or ``"float64"``.
        adam_betas, adam_eps: Adam's.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-4,
        adam_lr: float = 1e-4,
        *,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_coefficients: Tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        adjust_lr_fn: Optional[str] = "match_rms_adamw",
        weight_decay: float = 0.0,
        ns_dtype: str = "auto",
        adam_betas: Tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
    ) -> None:
        check_muon_settings(momentum, ns_steps, adjust_lr_fn, ns_dtype)
        items = list(params)
        if items and isinstance(items[0], dict):
            groups = items
        else:
            hidden, rest = hidden_matrices(items)
            groups = ([{"params": hidden, "algorithm": "muon"}] if hidden else []) + (
                [{"params": rest, "algorithm": "adam"}] if rest else []
            )
        if any(g.get("algorithm") not in ("muon", "adam") for g in groups):
            raise ValueError("MuonAdam param groups must each give 'algorithm': 'muon' or 'adam'")
        muon = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            adjust_lr_fn=adjust_lr_fn,
            weight_decay=weight_decay,
            ns_dtype=ns_dtype,
        )
        adam = dict(lr=adam_lr, betas=tuple(adam_betas), eps=adam_eps)
        groups = [dict(muon if g["algorithm"] == "muon" else adam, **g) for g in groups]
        for g in groups:
            if g["algorithm"] == "muon" and any(p.ndim != 2 for p in g["params"]):
                raise ValueError("MuonAdam: a 'muon' param group may hold only 2-D weight matrices")
        adam_groups = [g for g in groups if g["algorithm"] == "adam"]
        self._adam = (
            torch.optim.Adam(adam_groups, lr=adam_lr, betas=tuple(adam_betas), eps=adam_eps) if adam_groups else None
        )
        super().__init__(groups, {})
        self._link()

    def _link(self) -> None:
        """Point the contained Adam at this optimizer's 'adam' groups and state (after ``__init__`` and a load)."""
        if self._adam is not None:
            self._adam.param_groups = [g for g in self.param_groups if g["algorithm"] == "adam"]
            self._adam.state = self.state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        saved = [g.get("algorithm") for g in state_dict["param_groups"]]
        if saved != [g["algorithm"] for g in self.param_groups]:
            raise ValueError(
                f"MuonAdam.load_state_dict: the state dict's groups are {saved}, this optimizer's "
                f"{[g['algorithm'] for g in self.param_groups]}; it was saved by another optimizer"
            )
        super().load_state_dict(state_dict)
        self._link()

    @torch.no_grad()
    def _muon_step(self, group: Dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
        muon_update(params, [p.grad for p in params], [self.state[p]["momentum_buffer"] for p in params], group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["algorithm"] == "muon":
                self._muon_step(group)
        if self._adam is not None:
            self._adam.step()
        return loss
