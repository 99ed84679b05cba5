"""What gnerf's optimizers share: torch's state schema (:class:`CheckedOptimizer`), checks of the usual
hyperparameters, the symmetric eigendecomposition (Shampoo, K-FAC), the damped inverse (K-FAC) and the step of
the Hutchinson optimizers (ESGD, AdaHessian)."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from gnerf.optim.curvature import HutchinsonProbe, release_graph
from gnerf.optim.distributed import ProcessGroupSetting

HYPERPARAMETER_RULES = {
    "lr": (lambda v: v >= 0.0, "must be >= 0"),
    "eps": (lambda v: v > 0.0, "must be > 0"),
    "weight_decay": (lambda v: v >= 0.0, "must be >= 0"),
    "momentum": (lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)"),
    "betas": (lambda v: len(v) == 2 and all(0.0 <= b < 1.0 for b in v), "each must lie in [0, 1)"),
}


#: Keys that torch adds to param groups (and ``differentiable`` to the defaults, when it loads a state) beside an
#: optimizer's settings: ``params``, ``param_names``, and those of torch's learning-rate schedulers.
GROUP_BOOKKEEPING = frozenset(
    {
        "params",
        "param_names",
        "differentiable",
        "initial_lr",
        "max_lr",
        "min_lr",
        "base_momentum",
        "max_momentum",
        "swa_lr",
    }
)

#: Where a Hutchinson optimizer's ``state_dict`` holds its probe generator's state: in the state of the first
#: parameter (index 0).
PROBE_RNG_STATE = "probe_rng_state"


def check_hyperparameters(**values: Any) -> None:
    """Raise ``ValueError`` naming the first of ``lr``, ``eps``, ``weight_decay``, ``momentum``, ``betas`` out of range."""
    for name, value in values.items():
        ok, rule = HYPERPARAMETER_RULES[name]
        if not ok(value):
            raise ValueError(f"invalid {name}={value}: {rule}")


def params_with_grads(optimizer: Optimizer) -> List[List[Tensor]]:
    """Per param group, the parameters that have a gradient; sparse gradients are refused by name."""
    groups = []
    for group in optimizer.param_groups:
        ps = [p for p in group["params"] if p.grad is not None]
        if any(p.grad.is_sparse for p in ps):
            raise RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients")
        groups.append(ps)
    return groups


def new_counter() -> Tensor:
    """A per-parameter counter at 0, as ``torch.optim.Adam`` keeps its ``step``: a float32 scalar on the CPU."""
    return torch.zeros((), dtype=torch.float32)


def symmetric_eigh(matrix: Tensor) -> Tuple[Tensor, Tensor]:
    """``(eigenvalues, eigenvectors)`` of the symmetric part ``(M + M^T) / 2`` of ``matrix``, in float64."""
    m = matrix.detach().to(torch.float64)
    return torch.linalg.eigh(0.5 * (m + m.T))


def damped_inverse(matrix: Tensor, shift: float) -> Tensor:
    r""":math:`(M_+ + c I)^{-1}`, :math:`M_+` the symmetric part of a positive semi-definite ``matrix`` with its
    eigenvalues clamped at 0, for ``shift`` :math:`c > 0`; in float64, returned in ``matrix``'s dtype.

    With factored damping, :math:`\big((A + c I) \otimes (G + c I)\big)^{-1} \mathrm{vec}(\nabla)` is
    ``damped_inverse(G, c) @ grad @ damped_inverse(A, c)``. From a Cholesky factorisation (a third of the cost of an
    eigendecomposition on a CPU), which ignores the clamp: rounding leaves a factor's zero eigenvalues within about
    float32's epsilon times its norm of 0, far below the default shift. Where that is not so (a tiny ``shift``, a
    huge or rank-deficient factor) and the factorisation fails, from the eigendecomposition with the clamp.
    """
    m = matrix.detach().to(torch.float64)
    m = 0.5 * (m + m.T)
    eye = torch.eye(m.shape[0], dtype=torch.float64, device=m.device)
    chol, info = torch.linalg.cholesky_ex(m + shift * eye)
    if int(info) == 0:
        return torch.cholesky_inverse(chol).to(matrix.dtype)
    d, q = torch.linalg.eigh(m)
    return ((q / (d.clamp_min(0.0) + shift)) @ q.T).to(matrix.dtype)


def needs_hessian_vector_products(optimizer: object) -> bool:
    """Whether ``optimizer`` (an instance or an optimizer class) takes Hessian-vector products (ESGD, ESGD-Max,
    AdaHessian), i.e. needs the curvature protocol; K-FAC, Shampoo and ``torch.optim`` optimizers are
    first-order for a training loop."""
    if isinstance(optimizer, type):
        return issubclass(optimizer, HutchinsonOptimizer)
    return isinstance(optimizer, HutchinsonOptimizer)


class CheckedOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` in torch's state schema, as Distributed Shampoo keeps it.

    Every setting lives in the param groups: the constructor's keywords are the defaults of each
    group, and a group may give its own (also one added later with ``add_param_group``).
    :meth:`_check_group` checks a group's settings when it is added and when a state is loaded.
    Every counter lives in the per-parameter state (``step``, as in ``torch.optim.Adam``), so
    ``state_dict()`` holds torch's ``state`` and ``param_groups`` and nothing else.

    ``load_state_dict`` refuses, with a one-line ``ValueError`` starting
    ``"<class>.load_state_dict: the state dict"``, a state with keys beside torch's two (saved by an
    older gnerf), and one whose param groups lack this optimizer's settings, hold another
    optimizer's, or hold values this optimizer does not take. A setting added after states were
    saved (:attr:`settings_added_later`) is filled in, with the value that runs as those states
    ran, where a saved group lacks it. The per-parameter counters (:attr:`counter_keys`) are loaded
    as saved, float32 on the CPU, where torch would cast them to the parameter's dtype and device.
    """

    #: Per-parameter counters (float32 scalars on the CPU), created by :func:`new_counter`.
    counter_keys: Tuple[str, ...] = ("step",)
    #: Settings added after states of this optimizer were saved, each with the value that runs as those states ran.
    settings_added_later: ClassVar[Dict[str, Any]] = {}

    def _check_group(self, group: Dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the first setting of ``group`` (defaults filled in) out of range."""
        raise NotImplementedError

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """torch's ``add_param_group``, after checking the group's settings (``ValueError`` names a bad one)."""
        self._check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's ``load_state_dict``, after checking that this optimizer saved ``state_dict`` (see the class);
        the counters are loaded as saved."""
        super().load_state_dict(_checked_state(self, state_dict))
        for state in self.state.values():  # the counters loaded as numbers become float32 scalars on the CPU again
            for key in self.counter_keys:
                if key in state:
                    state[key] = torch.tensor(state[key], dtype=torch.float32)

    def _steps_taken(self, p: Tensor) -> int:
        """The steps parameter ``p`` has taken (its ``step``; 0 before its first)."""
        state = self.state.get(p)
        return int(state["step"]) if state and "step" in state else 0

    def _group_step(self, group: Dict[str, Any]) -> int:
        """The steps ``group`` has taken: the most any of its parameters has taken."""
        return max((self._steps_taken(p) for p in group["params"]), default=0)


def _refusal(optimizer: Optimizer, why: str) -> ValueError:
    return ValueError(f"{type(optimizer).__name__}.load_state_dict: the state dict {why}")


def _checked_state(optimizer: CheckedOptimizer, state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """``state_dict`` with its counters as numbers, which torch loads unchanged; ``ValueError`` when ``optimizer``
    did not save it (see :class:`CheckedOptimizer`)."""
    extra = sorted(set(state_dict) - {"state", "param_groups"})
    if extra:
        raise _refusal(
            optimizer,
            f"holds {', '.join(map(repr, extra))} beside torch's 'state' and 'param_groups': "
            "it was saved by an older gnerf and cannot be resumed; start the run afresh",
        )
    settings = set(optimizer.defaults) - GROUP_BOOKKEEPING
    known = settings | GROUP_BOOKKEEPING | {k for g in optimizer.param_groups for k in g}
    groups = [{**optimizer.settings_added_later, **g} for g in state_dict["param_groups"]]
    for i, group in enumerate(groups):
        missing, foreign = sorted(settings - set(group)), sorted(set(group) - known)
        if missing or foreign:
            held = "; ".join(
                ([f"lacks {', '.join(missing)}"] if missing else [])
                + ([f"holds {', '.join(foreign)}"] if foreign else [])
            )
            raise _refusal(
                optimizer,
                f"was saved by another optimizer (its param group {i} {held}); "
                "resume it with the optimizer that saved it",
            )
        try:
            optimizer._check_group(group)
        except ValueError as err:
            raise _refusal(
                optimizer, f"was saved with settings this optimizer does not take (param group {i}: {err})"
            ) from None
    counters = optimizer.counter_keys
    return {
        **state_dict,
        "param_groups": groups,
        "state": {
            i: {k: float(v) if k in counters else v for k, v in s.items()} for i, s in state_dict["state"].items()
        },
    }


class HutchinsonOptimizer(CheckedOptimizer):
    """An optimizer whose curvature comes from a :class:`~gnerf.optim.curvature.HutchinsonProbe`.

    Its :meth:`step` is shared: run the closure; on a curvature step draw one Rademacher ``v`` over
    all parameters with gradients and form ``H v`` in one double backward (one probe call, whatever
    the number of param groups); hand each param group to :meth:`_update_group` (the subclass's
    maths), with its share of ``(v, H v)`` when the group is due; release the graph.

    The cadence: each param group is due by its own settings and step count (:meth:`_is_due`), and
    a step is a curvature step when some group that trains (one of its parameters requires a
    gradient) is due (:meth:`is_curvature_step`). With one group, or groups that share their
    settings and step count, that is the cadence of the paper; a group added later
    (``add_param_group``) is due at its own first steps, so it gets its curvature estimate before
    its first update, and the older groups step on at their own cadence, leaving the extra
    products unused. A group counts only the steps in which its parameters had gradients, so a
    group whose parameters require gradients but never receive one stays due and has every
    ``backward`` build the graph: set ``requires_grad=False`` on parameters that do not train.

    The probe's own generator (used with ``seed`` or in distributed runs) travels in the state of
    the first parameter, ``state_dict()["state"][0]["probe_rng_state"]``, so a resumed run draws
    the probes it would have drawn.

    Arguments shared by the Hutchinson optimizers (:class:`~gnerf.optim.esgd.ESGD`,
    :class:`~gnerf.optim.adahessian.AdaHessian` and their variants):

    Args:
        foreach: use the multi-tensor (``torch._foreach_*``) update; ``None`` picks it when the
            parameters live on a GPU. Both paths give the same numbers.
        generator: random generator for the Rademacher probes (default: the global one, or the
            optimizer's own when ``seed`` is given or the run is distributed).
        seed: seed for the optimizer's own probe generator; its state is saved in ``state_dict``.
        process_group: data parallelism (see :mod:`gnerf.optim.distributed`): ``"auto"`` averages
            gradients and Hessian-vector products of curvature steps over the default process group
            when one with several ranks is initialised; ``None`` never communicates.
    """

    probe: HutchinsonProbe
    #: Per-parameter state tensors, created as zeros at a parameter's first step.
    state_tensors: Tuple[str, ...] = ("exp_avg", "curvature")

    def __init__(
        self,
        params: Any,
        defaults: Dict[str, Any],
        *,
        generator: Optional[torch.Generator],
        seed: Optional[int],
        process_group: ProcessGroupSetting,
    ) -> None:
        super().__init__(params, defaults)
        self.probe = HutchinsonProbe(generator, seed, process_group)

    def state_dict(self) -> Dict[str, Any]:
        """torch's ``state_dict``, with the probe generator's state in the state of the first parameter."""
        state_dict = super().state_dict()
        rng = self.probe.rng_state()
        if rng is not None:
            state = state_dict["state"]
            state_dict["state"] = {**state, 0: {**state.get(0, {}), PROBE_RNG_STATE: rng}}
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """:meth:`CheckedOptimizer.load_state_dict`; the probe continues from the saved generator state."""
        first = state_dict.get("state", {}).get(0, {})
        rng = first.get(PROBE_RNG_STATE)
        if rng is not None:  # no parameter's state
            state = {**state_dict["state"], 0: {k: v for k, v in first.items() if k != PROBE_RNG_STATE}}
            state_dict = {**state_dict, "state": {i: s for i, s in state.items() if s}}
        super().load_state_dict(state_dict)
        if rng is not None:
            self.probe.set_rng_state(rng)

    def _is_due(self, group: Dict[str, Any]) -> bool:
        """Whether the next step of ``group`` estimates curvature."""
        raise NotImplementedError

    def is_curvature_step(self) -> bool:
        """Whether the next ``step`` estimates curvature: some training param group is due."""
        return any(self._is_due(g) for g in self.param_groups if any(p.requires_grad for p in g["params"]))

    def should_create_graph(self) -> bool:
        """Whether the next ``backward`` must use ``create_graph=True`` (curvature steps, double backward)."""
        return self.is_curvature_step()

    @property
    def generator(self) -> Optional[torch.Generator]:
        """The caller's generator for the Rademacher probes, if one was given."""
        return self.probe.generator

    def _state_for(self, p: Tensor) -> dict:
        state = self.state[p]
        if len(state) == 0:
            for key in self.counter_keys:
                state[key] = new_counter()
            for key in self.state_tensors:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _update_group(
        self,
        group: Dict[str, Any],
        params: List[Tensor],
        states: List[dict],
        foreach: bool,
        vectors: Optional[List[Tensor]],
        hvps: Optional[List[Tensor]],
    ) -> None:
        """Update one param group's ``params`` (with gradients) and count the step in their states;
        ``vectors`` and ``hvps`` are ``None`` unless the group is due."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        """Perform one step. A ``closure`` must call ``backward(create_graph=self.should_create_graph())``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = params_with_grads(self)
        all_params = [p for ps in groups for p in ps]
        if not all_params:  # nothing is counted without gradients
            return loss
        due = [bool(ps) and self._is_due(g) for g, ps in zip(self.param_groups, groups)]
        vs: Optional[Sequence[Tensor]] = None
        hvps: Optional[Sequence[Tensor]] = None
        if any(due):
            vs, hvps = self.probe(all_params, who=type(self).__name__)
        offset = 0
        for group, ps, is_due in zip(self.param_groups, groups, due):
            n = len(ps)
            if n:
                foreach = group["foreach"]
                self._update_group(
                    group,
                    ps,
                    [self._state_for(p) for p in ps],
                    all(p.is_cuda for p in ps) if foreach is None else foreach,
                    vs[offset : offset + n] if is_due else None,
                    hvps[offset : offset + n] if is_due else None,
                )
            offset += n
        release_graph(all_params)
        return loss
