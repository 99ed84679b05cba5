r"""HiddenESGD: equilibrated SGD on a network's first and last layers and biases, another algorithm on its hidden matrices.

The base of gnerf's hybrid optimizers (:class:`~gnerf.optim.muon_esgd.MuonESGD`,
:class:`~gnerf.optim.psgd_esgd.PSGDKronESGD`): the square hidden weight matrices of a coordinate network
(:func:`~gnerf.optim.muon.hidden_matrices`) take a matrix method's step, every other parameter ESGD's, with its
curvature averaged over its updates.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Iterable, List

from torch import Tensor

from gnerf.optim.base import new_counter
from gnerf.optim.esgd import EquilibratedSGD
from gnerf.optim.muon import hidden_matrices

__all__ = ["HiddenESGD", "hidden_and_esgd_groups"]


def hidden_and_esgd_groups(params: Iterable[Any], hidden_algorithm: str, esgd_lr: float) -> List[Any]:
    """Param groups for an optimizer that steps the square hidden matrices by ``hidden_algorithm`` and the rest by
    ESGD at ``esgd_lr`` (:func:`~gnerf.optim.muon.hidden_matrices` splits them); param groups given are kept."""
    items = list(params)
    if items and isinstance(items[0], dict):
        return items
    hidden, rest = hidden_matrices(items)
    return ([{"params": hidden, "algorithm": hidden_algorithm}] if hidden else []) + (
        [{"params": rest, "algorithm": "esgd", "lr": esgd_lr}] if rest else []
    )


class HiddenESGD(EquilibratedSGD):
    """ESGD (curvature averaged over its updates) on the param groups tagged ``"algorithm": "esgd"``, a subclass's
    :attr:`hidden_algorithm` on those tagged with its name.

    A subclass steps its hidden groups in :meth:`_hidden_step`, adds their state in :meth:`_init_hidden_state`, and
    may claim their share of the Hessian-vector product (:meth:`_hidden_uses_curvature`). Each parameter keeps a
    ``step`` counter in its state, whichever algorithm steps it.
    """

    hidden_algorithm: ClassVar[str]
    correct_by_updates = True

    def __init__(self, params: Iterable[Any], esgd_lr: float, defaults: Dict[str, Any], **kwargs: Any) -> None:
        """``params`` split by :func:`hidden_and_esgd_groups` (``esgd_lr`` for the ESGD group), or param groups."""
        self._algorithm: Dict[Tensor, str] = {}
        groups = hidden_and_esgd_groups(params, self.hidden_algorithm, esgd_lr)
        super().__init__(groups, dict(defaults, algorithm="esgd"), **kwargs)

    def _check_group(self, group: Dict[str, Any]) -> None:
        if group["algorithm"] not in (self.hidden_algorithm, "esgd"):
            raise ValueError(
                f"invalid algorithm={group['algorithm']!r}: each param group is {self.hidden_algorithm!r} or 'esgd'"
            )
        super()._check_group(group)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        hidden = param_group.get("algorithm", self.defaults["algorithm"]) == self.hidden_algorithm
        if hidden:
            self._check_hidden_params(params)
        super().add_param_group(dict(param_group, params=params))
        group = self.param_groups[-1]
        self._algorithm.update({p: group["algorithm"] for p in group["params"]})
        if hidden:
            self._add_hidden_group(group)

    def _check_hidden_params(self, params: List[Tensor]) -> None:
        """Refuse, with one line, the parameters a hidden group cannot hold."""

    def _add_hidden_group(self, group: Dict[str, Any]) -> None:
        """Called once a hidden group has joined ``param_groups``."""

    def _hidden_uses_curvature(self, group: Dict[str, Any]) -> bool:
        """Whether a hidden group takes its share of the Hessian-vector product."""
        return False

    def _is_due(self, group: Dict[str, Any]) -> bool:
        """ESGD's cadence for the 'esgd' groups, and for the hidden groups that use curvature."""
        return (group["algorithm"] == "esgd" or self._hidden_uses_curvature(group)) and super()._is_due(group)

    def _state_for(self, p: Tensor) -> dict:
        if self._algorithm[p] == "esgd":
            return super()._state_for(p)
        state = self.state[p]
        if len(state) == 0:
            state["step"] = new_counter()
            self._init_hidden_state(p, state)
        return state

    def _init_hidden_state(self, p: Tensor, state: dict) -> None:
        """Add a hidden parameter's own state beside its ``step``."""

    def _update_group(self, group, params, states, foreach, vectors, hvps) -> None:
        if group["algorithm"] == "esgd":
            return super()._update_group(group, params, states, foreach, vectors, hvps)
        for s in states:
            s["step"].add_(1)
        self._hidden_step(group, params, states, hvps)

    def _hidden_step(self, group: Dict[str, Any], params: List[Tensor], states: List[dict], hvps) -> None:
        """Step a hidden group (``hvps``: its Hessian-vector products on a curvature step it takes, else None)."""
        raise NotImplementedError
