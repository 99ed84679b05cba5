"""What gnerf's optimizers share: checks of the usual hyperparameters, counters in ``state_dict``, the
symmetric eigendecomposition (Shampoo, K-FAC) and the step of the Hutchinson optimizers (ESGD, AdaHessian)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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


def symmetric_eigh(matrix: Tensor) -> Tuple[Tensor, Tensor]:
    """``(eigenvalues, eigenvectors)`` of the symmetric part ``(M + M^T) / 2`` of ``matrix``, in float64."""
    m = matrix.detach().to(torch.float64)
    return torch.linalg.eigh(0.5 * (m + m.T))


def needs_hessian_vector_products(optimizer: object) -> bool:
    """Whether ``optimizer`` (an instance or an optimizer class) takes Hessian-vector products (ESGD, ESGD-Max,
    AdaHessian), i.e. needs the curvature protocol; K-FAC, Shampoo and ``torch.optim`` optimizers are
    first-order for a training loop."""
    if isinstance(optimizer, type):
        return issubclass(optimizer, HutchinsonOptimizer)
    return isinstance(optimizer, HutchinsonOptimizer)


class CountedOptimizer(Optimizer):
    """An optimizer whose optimizer-wide counters and settings travel in ``state_dict()[state_key]``.

    ``state_fields`` are restored by ``load_state_dict``; ``matching_fields`` must equal this
    optimizer's, and the class that saved the state (``saved_by``) must be this one, so that a
    state saved by a different variant is refused with a clear error.
    """

    state_key: str = ""
    state_fields: Tuple[str, ...] = ()
    matching_fields: Tuple[str, ...] = ()

    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd[self.state_key] = {f: getattr(self, f) for f in self.state_fields + self.matching_fields}
        sd[self.state_key]["saved_by"] = type(self).__name__
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop(self.state_key, None)
        name = type(self).__name__
        if saved is None:
            raise ValueError(f"{name}.load_state_dict: the state dict has no {self.state_key!r} counters; "
                             f"it was not saved by a {name} optimizer")
        saved_by = saved.get("saved_by")  # absent from states saved before gnerf recorded it
        for f in self.matching_fields:
            if saved[f] != getattr(self, f):
                raise ValueError(f"{name}.load_state_dict: the state dict was saved with {f}={saved[f]!r}, "
                                 f"this optimizer uses {f}={getattr(self, f)!r}"
                                 + (f"; it was saved by {saved_by}: resume it with {saved_by}" if saved_by else ""))
        if saved_by is not None and saved_by != name:
            raise ValueError(f"{name}.load_state_dict: the state dict was saved by {saved_by}, not {name} "
                             f"(their states share the {self.state_key!r} key but not their meaning); "
                             f"resume it with {saved_by}, the optimizer that saved it, or start this {name} afresh")
        missing = [f for f in self.state_fields if f not in saved]
        if missing:
            raise ValueError(f"{name}.load_state_dict: the state dict lacks {', '.join(missing)}; it was saved by "
                             "another version of gnerf")
        super().load_state_dict(state_dict)
        for f in self.state_fields:
            setattr(self, f, type(getattr(self, f))(saved[f]))


class HutchinsonOptimizer(CountedOptimizer):
    """A counted optimizer whose curvature comes from a :class:`~gnerf.optim.curvature.HutchinsonProbe`.

    Its :meth:`step` is shared: run the closure, take ``(v, H v)`` on curvature steps, count the step,
    hand each param group to :meth:`_update_group` (the subclass's maths), release the graph.

    The probe's own generator (used with ``seed`` or in distributed runs) travels in
    ``state_dict()[state_key]["probe"]``, so a resumed run draws the probes it would have drawn.

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
    num_steps: int
    #: Per-parameter state tensors, created as zeros at a parameter's first step.
    state_tensors: Tuple[str, ...] = ("exp_avg", "curvature")

    def __init__(self, params: Any, extra_defaults: Dict[str, Any], *, lr: float, betas: Tuple[float, float],
                 eps: float, weight_decay: float, foreach: Optional[bool], generator: Optional[torch.Generator],
                 seed: Optional[int], process_group: ProcessGroupSetting) -> None:
        """Param group defaults ``lr, betas, eps, weight_decay``, then ``extra_defaults``, then ``foreach``;
        the probe; ``num_steps = 0``. The subclass checks the hyperparameters before calling this."""
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **extra_defaults,
                        foreach=foreach)
        super().__init__(params, defaults)
        self.probe = HutchinsonProbe(generator, seed, process_group)
        self.num_steps = 0  # completed optimisation steps

    @staticmethod
    def _group_tensors(params: List[Tensor], states: List[dict]) -> Tuple[List[Tensor], ...]:
        """``(params, grads, exp_avgs, curvatures)`` of one param group, for a functional update."""
        return (params, [p.grad.detach() for p in params], [s["exp_avg"] for s in states],
                [s["curvature"] for s in states])

    @staticmethod
    def _group_hyperparameters(group: Dict[str, Any]) -> Dict[str, Any]:
        """``lr, beta1, beta2, eps, weight_decay`` of a param group, as keywords of a functional update."""
        return dict(lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                    weight_decay=group["weight_decay"])

    def is_curvature_step(self) -> bool:
        """Whether the next ``step`` estimates curvature."""
        raise NotImplementedError

    def should_create_graph(self) -> bool:
        """Whether the next ``backward`` must use ``create_graph=True`` (curvature steps, double backward)."""
        return self.is_curvature_step()

    @property
    def generator(self) -> Optional[torch.Generator]:
        """The caller's generator for the Rademacher probes, if one was given."""
        return self.probe.generator

    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd[self.state_key]["probe"] = self.probe.state_dict()
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        probe = (state_dict.get(self.state_key) or {}).get("probe")
        super().load_state_dict(state_dict)
        if probe is not None:
            self.probe.load_state_dict(probe)

    def _state_for(self, p: Tensor) -> dict:
        state = self.state[p]
        if len(state) == 0:
            for key in self.state_tensors:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _on_curvature_update(self) -> None:
        """Called once per curvature step, after ``H v`` is formed (ESGD counts its updates here)."""

    def _update_group(self, group: Dict[str, Any], params: List[Tensor], states: List[dict], foreach: bool,
                      vectors: Optional[List[Tensor]], hvps: Optional[List[Tensor]]) -> None:
        """Update one param group's ``params`` (with gradients); ``vectors`` and ``hvps`` are ``None`` on
        steps without curvature. ``self.num_steps`` already counts this step."""
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
        vs: Optional[Sequence[Tensor]] = None
        hvps: Optional[Sequence[Tensor]] = None
        if self.is_curvature_step():
            vs, hvps = self.probe(all_params, who=type(self).__name__)
            self._on_curvature_update()
        self.num_steps += 1
        offset = 0
        for group, ps in zip(self.param_groups, groups):
            n = len(ps)
            if n:
                foreach = group.get("foreach")
                self._update_group(group, ps, [self._state_for(p) for p in ps],
                                   all(p.is_cuda for p in ps) if foreach is None else foreach,
                                   None if vs is None else vs[offset:offset + n],
                                   None if hvps is None else hvps[offset:offset + n])
            offset += n
        release_graph(all_params)
        return loss
