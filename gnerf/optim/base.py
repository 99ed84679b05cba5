"""What gnerf's optimizers share: checks of the usual hyperparameters, and counters in ``state_dict``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from gnerf.optim.curvature import HutchinsonProbe
from gnerf.optim.distributed import ProcessGroupSetting

_RULES = {
    "lr": (lambda v: v >= 0.0, "must be >= 0"),
    "eps": (lambda v: v > 0.0, "must be > 0"),
    "weight_decay": (lambda v: v >= 0.0, "must be >= 0"),
    "momentum": (lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)"),
    "betas": (lambda v: len(v) == 2 and all(0.0 <= b < 1.0 for b in v), "each must lie in [0, 1)"),
}


def check_hyperparameters(**values: Any) -> None:
    """Raise ``ValueError`` naming the first of ``lr``, ``eps``, ``weight_decay``, ``momentum``, ``betas`` out of range."""
    for name, value in values.items():
        ok, rule = _RULES[name]
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
    optimizer's, so that a state saved by a different variant is refused with a clear error.
    """

    state_key: str = ""
    state_fields: Tuple[str, ...] = ()
    matching_fields: Tuple[str, ...] = ()

    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd[self.state_key] = {f: getattr(self, f) for f in self.state_fields + self.matching_fields}
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop(self.state_key, None)
        name = type(self).__name__
        if saved is None:
            raise ValueError(f"{name}.load_state_dict: the state dict has no {self.state_key!r} counters; "
                             f"it was not saved by a {name} optimizer")
        for f in self.matching_fields:
            if saved[f] != getattr(self, f):
                raise ValueError(f"{name}.load_state_dict: the state dict was saved with {f}={saved[f]!r}, "
                                 f"this optimizer uses {f}={getattr(self, f)!r}")
        missing = [f for f in self.state_fields if f not in saved]
        if missing:
            raise ValueError(f"{name}.load_state_dict: the state dict lacks {', '.join(missing)}; it was saved by "
                             "another version of gnerf")
        super().load_state_dict(state_dict)
        for f in self.state_fields:
            setattr(self, f, type(getattr(self, f))(saved[f]))


class HutchinsonOptimizer(CountedOptimizer):
    """A counted optimizer whose curvature comes from a :class:`~gnerf.optim.curvature.HutchinsonProbe`.

    With ``hvp_method="forward-over-reverse"``, pass ``step(loss_fn=...)`` whenever
    ``is_curvature_step()`` (see :data:`gnerf.optim.curvature.LossFn`).

    The probe's own generator (used with ``seed`` or in distributed runs) travels in
    ``state_dict()[state_key]["probe"]``, so a resumed run draws the probes it would have drawn.
    """

    probe: HutchinsonProbe

    def _init_probe(self, generator: Optional[torch.Generator], seed: Optional[int],
                    process_group: ProcessGroupSetting, hvp_method: str) -> None:
        self.probe = HutchinsonProbe(generator, seed, process_group, hvp_method)

    def is_curvature_step(self) -> bool:
        """Whether the next ``step`` estimates curvature."""
        raise NotImplementedError

    def should_create_graph(self) -> bool:
        """Whether the next ``backward`` must use ``create_graph=True`` (curvature steps, double backward)."""
        return self.probe.needs_graph and self.is_curvature_step()

    @property
    def hvp_method(self) -> str:
        """How ``H v`` is formed: ``"double-backward"`` or ``"forward-over-reverse"``."""
        return self.probe.hvp_method

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
