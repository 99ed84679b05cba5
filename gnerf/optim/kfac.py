r"""K-FAC: Kronecker-factored approximate curvature for the linear layers of a field.

K-FAC (Martens & Grosse, "Optimizing neural networks with Kronecker-factored approximate
curvature", ICML 2015), as summarised in sec. 2.1 of the supplementary material of Chng,
Saratchandran & Lucey, "Preconditioners for the Stochastic Training of Neural Fields": the
empirical Fisher block of a linear layer :math:`s = W a + b` is approximated by

.. math::
    F \approx A \otimes G, \qquad A = \mathbb{E}[\tilde a \tilde a^T], \quad
    G = \mathbb{E}[g g^T], \qquad \tilde a = [a; 1],\ g = \partial \ell / \partial s

where :math:`\ell` is the per-sample loss (the minibatch loss is their mean, so :math:`g` is
the gradient a hook sees times the number of rows). The factors come from forward hooks
(:math:`a`) and tensor hooks on the layer outputs (:math:`g`), so K-FAC works for any loss
whose minibatch value is a mean over samples (MSE, BCE, ...).

Two K-FACs. :class:`KFAC` is the one the paper's text describes (momentum SGD on the
preconditioned gradient, lr 0.1, inverses every 100 iterations). :class:`KFACAdam` is the one the
code published with the paper runs: that code passes its "lr 0.1, update every 100" positionally
into a preconditioner whose arguments are (damping, SUA, ...), so its K-FAC damps each factor by
:math:`\sqrt{0.1}`, uses each minibatch's factors alone, inverts them every step, and hands the
preconditioned gradient to Adam at lr 1e-4 (:class:`gnerf.optim.kfac_adam.KFACAdam`). The paper's K-FAC
numbers come from that code.

Construction. :class:`KFAC` takes the model (or a list of its ``nn.Linear`` modules), or,
so that the registry, the fitting loop and nerfstudio can build it like any other optimizer,
plain parameters: it then finds the ``nn.Linear`` modules owning those parameters during the
first forward pass, through a temporary global module forward hook that is removed at the end
of the first ``step``. Parameters outside a hooked linear layer get the plain (momentum SGD)
update.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gnerf.optim.base import CheckedOptimizer, check_hyperparameters, damped_inverse, new_counter, symmetric_eigh
from gnerf.optim.defaults import check_cadence, is_preconditioning_step
from gnerf.optim.distributed import is_distributed

__all__ = ["KFAC", "kfac_precondition"]


def kfac_precondition(grad: Tensor, qa: Tensor, da: Tensor, qg: Tensor, dg: Tensor, damping: float) -> Tensor:
    r""":math:`(A \otimes G + \lambda I)^{-1} \mathrm{vec}(\nabla)` as a matrix, from the eigendecompositions.

    With :math:`A = Q_A \mathrm{diag}(d_A) Q_A^T`, :math:`G = Q_G \mathrm{diag}(d_G) Q_G^T` and
    ``grad`` of shape ``[out, in(+1)]``:
    :math:`Q_G \big[(Q_G^T \nabla Q_A) \oslash (d_G d_A^T + \lambda)\big] Q_A^T`.
    """
    v = qg.T @ grad @ qa
    v = v / (dg[:, None] * da[None, :] + damping)
    return qg @ v @ qa.T


class KFAC(CheckedOptimizer):
    r"""K-FAC with Tikhonov damping and momentum.

    For every hooked linear layer with gradient :math:`\nabla = [\nabla_W, \nabla_b]`:

    .. math::
        A &\leftarrow \rho_k A + (1 - \rho_k)\, \hat{\mathbb{E}}[\tilde a \tilde a^T], \quad
        G \leftarrow \rho_k G + (1 - \rho_k)\, \hat{\mathbb{E}}[g g^T], \quad
        \rho_k = \min(1 - 1/k, \rho) \\
        U &= (A \otimes G + \lambda I)^{-1} \nabla
            \qquad \text{(refreshed every } T \text{ steps: eigendecompositions of } A, G\text{, or with factored}
            \text{ damping the inverses of } A + \sqrt\lambda I, G + \sqrt\lambda I \text{ by Cholesky)} \\
        \nu &= \min\Big(1, \sqrt{\kappa / (\eta^2 \textstyle\sum_{\text{layers}} \langle U, \nabla \rangle)}\Big)
            \qquad \text{(KL clipping; } \nu = 1 \text{ if } \kappa = 0\text{)}

    and then, with :math:`u = \nu U` (or :math:`u = \nabla` for parameters outside hooked layers),
    weight decay :math:`\lambda_w` and momentum :math:`\mu`:

    .. math::
        b \leftarrow \mu b + u + \lambda_w \theta, \qquad \theta \leftarrow \theta - \eta b

    :math:`k` counts the factor updates of the layer (so the first ones are exact averages).
    First-order: it takes no Hessian-vector products.

    Settings live in the param groups (each group may give its own; a layer follows the group of
    its weight, and the KL clipping factor :math:`\nu` is computed over the layers of each group),
    counters in the per-parameter state: ``step`` for every parameter, and for a layer's weight the
    factor updates :math:`k` (``kfac_stat_updates``) and the refreshes of the eigendecompositions or inverses
    (``kfac_inverse_updates``). Parameters added with ``add_param_group`` get K-FAC's update when
    their layer is hooked already, the plain update otherwise.

    Args:
        params: an ``nn.Module`` (its ``nn.Linear`` layers are hooked, all its parameters are
            optimised), a list of ``nn.Linear`` modules, or parameters / param groups (the
            owning ``nn.Linear`` layers are found at the first forward pass).
        lr: learning rate :math:`\eta` (the paper: 0.1).
        momentum: :math:`\mu`.
        damping: Tikhonov damping :math:`\lambda` (the paper: 0.01).
        factored_damping: add :math:`\sqrt\lambda I` to each factor instead of :math:`\lambda I` to their
            Kronecker product (as the paper's published code does; see :class:`gnerf.optim.kfac_adam.KFACAdam`).
        stat_decay: :math:`\rho`, the running-average coefficient of the factors.
        weight_decay: :math:`\lambda_w` (added to the update, as in SGD).
        kl_clip: :math:`\kappa`; ``0`` disables clipping.
        precondition_frequency: :math:`T`, steps between refreshes of the inverses (the paper: 100).
        statistics_frequency: steps between updates of the factors :math:`A, G` (the hooks record only
            on those steps).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        momentum: float = 0.9,
        damping: float = 0.01,
        factored_damping: bool = False,
        stat_decay: float = 0.95,
        weight_decay: float = 0.0,
        kl_clip: float = 1e-3,
        precondition_frequency: int = 100,
        statistics_frequency: int = 1,
    ) -> None:
        update = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, kl_clip=kl_clip)
        self._init_kfac(
            params, update, damping, factored_damping, stat_decay, precondition_frequency, statistics_frequency
        )

    def _init_kfac(
        self,
        params: Any,
        update: Dict[str, Any],
        damping: float,
        factored_damping: bool,
        stat_decay: float,
        precondition_frequency: int,
        statistics_frequency: int,
    ) -> None:
        """Build the optimizer with the preconditioner's settings and the ``update``'s as its defaults, and hook the
        layers (now, or at the first forward pass)."""
        defaults = dict(
            update,
            damping=damping,
            factored_damping=factored_damping,
            stat_decay=stat_decay,
            precondition_frequency=int(precondition_frequency),
            statistics_frequency=int(statistics_frequency),
        )
        params, modules = self._params_and_layers(params)
        self._param_ids: set = set()  # filled by add_param_group
        super().__init__(params, defaults)
        self._layers: List[nn.Linear] = []
        self._layer_ids: set = set()
        self._captures: Dict[int, Dict[str, List[Tensor]]] = {}
        self._handles: List[Any] = []
        self._discovery = None
        if modules is not None:
            for m in modules:
                if id(m.weight) in self._param_ids:
                    self._track(m)
        else:
            ref = weakref.ref(self)

            def discover(module: nn.Module, inputs: Any, output: Any) -> None:
                opt = ref()
                if (
                    opt is not None
                    and isinstance(module, nn.Linear)
                    and id(module) not in opt._layer_ids
                    and id(module.weight) in opt._param_ids
                ):
                    opt._track(module)
                    opt._record(module, inputs, output)  # this forward ran before the new hook existed

            self._discovery = torch.nn.modules.module.register_module_forward_hook(discover)
            self._handles.append(self._discovery)
        weakref.finalize(self, KFAC._remove_handles, self._handles)

    def _check_group(self, group: Dict[str, Any]) -> None:
        check_hyperparameters(lr=group["lr"], momentum=group["momentum"], weight_decay=group["weight_decay"])
        if not group["kl_clip"] >= 0.0:
            raise ValueError(f"invalid kl_clip={group['kl_clip']}: must be >= 0 (0 disables it)")
        self._check_preconditioner(group)

    @staticmethod
    def _check_preconditioner(group: Dict[str, Any]) -> None:
        """Check the settings of the K-FAC preconditioner itself (shared with :class:`~gnerf.optim.kfac_adam.KFACAdam`)."""
        if not group["damping"] > 0.0:
            raise ValueError(f"invalid damping={group['damping']}: must be > 0")
        if not isinstance(group["factored_damping"], bool):
            raise ValueError(f"invalid factored_damping={group['factored_damping']!r}: must be True or False")
        if not 0.0 <= group["stat_decay"] < 1.0:
            raise ValueError(f"invalid stat_decay={group['stat_decay']}: must lie in [0, 1)")
        check_cadence(
            precondition_frequency=group["precondition_frequency"], statistics_frequency=group["statistics_frequency"]
        )

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._param_ids.update(id(p) for p in self.param_groups[-1]["params"])

    @staticmethod
    def _params_and_layers(params: Any) -> Tuple[List[Any], Optional[List[nn.Linear]]]:
        """``(params or param groups, the nn.Linear layers to hook or None to find them at the first forward)``."""
        if isinstance(params, nn.Module):
            return list(params.parameters()), [m for m in params.modules() if isinstance(m, nn.Linear)]
        params = list(params)
        if params and all(isinstance(m, nn.Module) for m in params):
            if not all(isinstance(m, nn.Linear) for m in params):
                raise ValueError(
                    "KFAC: a list of modules must hold only nn.Linear layers; "
                    "pass the model itself to hook all of its linear layers"
                )
            return [p for m in params for p in m.parameters()], list(params)
        return params, None

    # ------------------------------------------------------------------ hooks
    @staticmethod
    def _remove_handles(handles: List[Any]) -> None:
        for h in handles:
            h.remove()
        handles.clear()

    def _track(self, module: nn.Linear) -> None:
        self._layers.append(module)
        self._layer_ids.add(id(module))
        ref = weakref.ref(self)

        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            opt = ref()
            if opt is not None:
                opt._record(mod, inputs, output)

        self._handles.append(module.register_forward_hook(hook))

    def _record(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if (
            id(module) not in self._layer_ids  # a copy of a hooked layer (deepcopy copies its hooks)
            or not torch.is_grad_enabled()
            or not isinstance(output, Tensor)
            or not output.requires_grad
        ):
            return
        w = module.weight
        if not is_preconditioning_step(self._steps_taken(w), self._group_of(w)["statistics_frequency"]):
            return
        cap = self._captures.setdefault(id(module), {"a": [], "g": []})
        cap["a"].append(inputs[0].detach().reshape(-1, inputs[0].shape[-1]))

        def grad_hook(grad: Tensor) -> None:
            g = grad.detach().reshape(-1, grad.shape[-1])
            cap["g"].append(g * g.shape[0])

        output.register_hook(grad_hook)

    def tracked_layers(self) -> Sequence[nn.Linear]:
        """The ``nn.Linear`` layers K-FAC preconditions (found so far)."""
        return tuple(self._layers)

    # ------------------------------------------------------------------ step
    def _group_of(self, p: Tensor) -> Dict[str, Any]:
        return next(g for g in self.param_groups if any(q is p for q in g["params"]))

    def _has_bias(self, layer: nn.Linear) -> bool:
        return layer.bias is not None and id(layer.bias) in self._param_ids

    @torch.no_grad()
    def _update_factors(self, layer: nn.Linear, stat_decay: float) -> None:
        cap = self._captures.get(id(layer))
        if not cap or not cap["a"] or not cap["g"]:
            return
        a = torch.cat(cap["a"])
        if self._has_bias(layer):
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
        g = torch.cat(cap["g"])
        a_batch = a.T @ a / a.shape[0]
        g_batch = g.T @ g / g.shape[0]
        state = self.state[layer.weight]
        k = int(state.get("kfac_stat_updates", 0)) + 1
        rho = min(1.0 - 1.0 / k, stat_decay)
        if k == 1:
            state["kfac_A"], state["kfac_G"] = a_batch, g_batch
        else:
            state["kfac_A"].mul_(rho).add_(a_batch, alpha=1.0 - rho)
            state["kfac_G"].mul_(rho).add_(g_batch, alpha=1.0 - rho)
        state["kfac_stat_updates"] = k

    @staticmethod
    def _eigh(m: Tensor) -> Any:
        d, q = symmetric_eigh(m)
        return q.to(m.dtype), d.clamp_min(0.0).to(m.dtype)

    def _precondition(self, grad: Tensor, state: Dict[str, Any], group: Dict[str, Any], refresh: bool) -> Tensor:
        """A layer's preconditioned gradient ``[out, in(+1)]``, refreshing the damped factors' inverses (factored
        damping, kept with the shift they were made with) or the factors' eigendecompositions (damping of their
        product) first when ``refresh``, when absent, or when the shift is not the group's."""
        if group["factored_damping"]:
            c = math.sqrt(group["damping"])
            if refresh or state.get("kfac_inv_shift") != c:  # absent: first step, or the other damping's state
                for key in ("kfac_QA", "kfac_dA", "kfac_QG", "kfac_dG"):
                    state.pop(key, None)
                state["kfac_invA"] = damped_inverse(state["kfac_A"], c)
                state["kfac_invG"] = damped_inverse(state["kfac_G"], c)
                state["kfac_inv_shift"] = c
                state["kfac_inverse_updates"] = int(state.get("kfac_inverse_updates", 0)) + 1
            return state["kfac_invG"] @ grad @ state["kfac_invA"]
        if refresh or "kfac_QA" not in state:
            for key in ("kfac_invA", "kfac_invG", "kfac_inv_shift"):
                state.pop(key, None)
            state["kfac_QA"], state["kfac_dA"] = self._eigh(state["kfac_A"])
            state["kfac_QG"], state["kfac_dG"] = self._eigh(state["kfac_G"])
            state["kfac_inverse_updates"] = int(state.get("kfac_inverse_updates", 0)) + 1
        return kfac_precondition(
            grad, state["kfac_QA"], state["kfac_dA"], state["kfac_QG"], state["kfac_dG"], group["damping"]
        )

    def _preconditioned_updates(self) -> Dict[int, Tensor]:
        """Update the factors, refresh their inverses when due, and return the preconditioned
        gradient of every hooked layer's parameters (by ``id``), scaled by its group's KL-clipping factor ``nu``."""
        index_of = {id(p): i for i, g in enumerate(self.param_groups) for p in g["params"]}
        preconditioned: Dict[int, Tuple[int, Tensor]] = {}  # id -> (index of the layer's group, update)
        vg_sums = [0.0] * len(self.param_groups)
        for layer in self._layers:
            w = layer.weight
            i = index_of[id(w)]
            group = self.param_groups[i]
            self._update_factors(layer, group["stat_decay"])
            state = self.state[w]
            if "kfac_A" not in state or w.grad is None:
                continue
            refresh = is_preconditioning_step(self._steps_taken(w), group["precondition_frequency"])
            bias = self._has_bias(layer)
            grad = w.grad.detach()
            if bias:
                gb = layer.bias.grad.detach() if layer.bias.grad is not None else torch.zeros_like(layer.bias)
                grad = torch.cat([grad, gb[:, None]], dim=1)
            u = self._precondition(grad, state, group, refresh)
            if group.get("kl_clip", 0.0) > 0:  # the clip's sum costs a device sync: only where it is used
                vg_sums[i] += float((u * grad).sum()) * group["lr"] ** 2
            if bias:
                preconditioned[id(w)] = (i, u[:, :-1])
                preconditioned[id(layer.bias)] = (i, u[:, -1])
            else:
                preconditioned[id(w)] = (i, u)
        self._captures.clear()
        clips = [g.get("kl_clip", 0.0) for g in self.param_groups]  # KFACAdam's groups have none
        nus = [min(1.0, math.sqrt(k / vg)) if k > 0 and vg > 0 else 1.0 for k, vg in zip(clips, vg_sums)]
        return {pid: u * nus[i] for pid, (i, u) in preconditioned.items()}

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        """Perform one step (after ``loss.backward()``)."""
        if is_distributed():
            raise RuntimeError(
                f"{type(self).__name__} does not support data-parallel training: its Kronecker factors come from "
                "each rank's own activations and would differ between ranks. Train on one device, or use esgd-max, "
                "esgd, adahessian-e/-j, shampoo or adam, which keep every rank identical."
            )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._apply_updates(self._preconditioned_updates())
        if self._discovery is not None:
            self._discovery.remove()
            self._discovery = None
        return loss

    def _apply_updates(self, updates: Dict[int, Tensor]) -> None:
        """Momentum SGD on ``updates`` (by parameter ``id``; a parameter without one: its gradient)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                u = updates.get(id(p))
                d = p.grad.detach() if u is None else u
                if group["weight_decay"] != 0:
                    d = d.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if group["momentum"] > 0:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(d)
                    d = buf
                p.add_(d, alpha=-group["lr"])
                if "step" not in state:
                    state["step"] = new_counter()
                state["step"].add_(1)
