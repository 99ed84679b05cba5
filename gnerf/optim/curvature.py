"""Hutchinson curvature: Rademacher probes and Hessian-vector products.

Every curvature optimizer in gnerf (ESGD, ESGD-Max, AdaHessian) estimates curvature through a
:class:`HutchinsonProbe`: it draws a Rademacher ``v`` and forms ``H v``, by double backward from
gradients that carry a graph (``backward(create_graph=True)``), or by forward-over-reverse from the
loss as a function of the weights. The training-step protocol that provides either lives in
:mod:`gnerf.optim.step`. A curvature optimizer detaches the gradients it was given at the end of a
step (:func:`release_graph`), so the parameter -> grad -> graph -> parameter reference cycle never
outlives the step.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from gnerf.optim.distributed import ProcessGroupSetting, all_reduce_mean_, broadcast_seed, curvature_process_group

class MissingGraphError(RuntimeError):
    """A curvature step found gradients that were computed without ``create_graph=True``."""


def rademacher_like(tensors: Sequence[Tensor], generator: Optional[torch.Generator] = None) -> List[Tensor]:
    """Independent Rademacher vectors (entries -1 or +1 with probability 1/2) shaped like ``tensors``.

    ``generator`` makes the draw reproducible (and, with a shared seed, identical across processes).
    """
    return [
        torch.randint(0, 2, t.shape, generator=generator, device=t.device, dtype=t.dtype).mul_(2).sub_(1)
        for t in tensors
    ]


def hessian_vector_product(
    params: Sequence[Tensor], grads: Sequence[Tensor], vectors: Sequence[Tensor], *, who: str = "optimizer"
) -> List[Tensor]:
    """``H v`` for the loss whose gradients ``grads`` (with respect to ``params``) carry a graph.

    Differentiates ``sum_i <grads[i], vectors[i]>`` once more (double backward), which frees the
    graph. Parameters whose gradient does not depend on any parameter get a zero product.

    Raises:
        MissingGraphError: no gradient carries a graph, i.e. ``backward`` ran without
            ``create_graph=True``.
    """
    if not (len(params) == len(grads) == len(vectors)):
        raise ValueError("params, grads and vectors must have the same length")
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:
        raise MissingGraphError(
            f"{who}: this step needs a Hessian-vector product, but the gradients carry no graph. "
            "Call loss.backward(create_graph=optimizer.should_create_graph()) before optimizer.step() "
            "(gnerf.optim.step.take_step does it for any optimizer)."
        )
    hv = torch.autograd.grad(
        [grads[i] for i in live],
        [params[i] for i in live],
        grad_outputs=[vectors[i] for i in live],
        allow_unused=True,
    )
    out = [torch.zeros_like(p) for p in params]
    for i, h in zip(live, hv):
        if h is not None:
            out[i] = h.detach()
    return out


def release_graph(params: Iterable[Tensor]) -> None:
    """Detach gradients that still hold an autograd graph (breaks the param/grad reference cycle)."""
    for p in params:
        if p.grad is not None and p.grad.grad_fn is not None:
            p.grad = p.grad.detach()


# --- Forward-over-reverse Hessian-vector products ------------------------------------------------
#
# ``hessian_vector_product`` above is reverse-over-reverse (double backward): it fits the training
# protocol, where ``backward(create_graph=True)`` leaves gradients that carry a graph. The functional
# variant below is forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``): it needs the
# loss as a function of the parameters instead, and returns the gradient with the product in one
# pass. ``benchmarks/trunk.py`` times both; see ``docs/benchmarks.md``.

HVP_METHODS = ("double-backward", "forward-over-reverse")
"""The ways a :class:`HutchinsonProbe` forms ``H v`` (its ``hvp_method``)."""

DEFAULT_HVP_METHOD = "double-backward"
"""The method gnerf's optimizers use unless told otherwise (``hvp_method=``): the measured costs
(docs/benchmarks.md) give forward-over-reverse no speed advantage and twice the memory."""


LossFn = Callable[[Mapping[Tensor, Tensor]], Tensor]
"""A loss as a function of parameter values: ``loss_fn({param: value, ...})`` computes the loss with
each listed parameter replaced by its value (keys are the parameter tensors themselves)."""


def hessian_vector_product_fwd_rev(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    vectors: Sequence[Tensor],
    *,
    with_grad: bool = False,
) -> Union[List[Tensor], Tuple[List[Tensor], List[Tensor]]]:
    """``H v`` of ``loss_fn`` at ``params`` by forward-over-reverse (``torch.func.jvp`` of ``grad``).

    Args:
        loss_fn: maps ``{param: value}`` for every tensor in ``params`` to a scalar loss (see
            :data:`LossFn`, and :func:`functional_loss` for an ``nn.Module``). It must be a pure
            function of those values: tensors it closes over are treated as constants. Write an MSE as
            ``(pred - target).square().mean()``: in torch 2.x ``F.mse_loss`` has no
            forward-over-reverse rule for a target without tangent ("ZeroTensors are immutable").
        params: the point at which the Hessian is taken (used detached; nothing is written to them).
        vectors: the directions ``v``, shaped like ``params``.
        with_grad: also return the gradient, which the same pass computes at no extra cost.

    Returns:
        ``[H v]`` per parameter, or ``(grads, hvps)`` when ``with_grad``; all detached.
    """
    if len(params) != len(vectors):
        raise ValueError("params and vectors must have the same length")
    primals = tuple(p.detach() for p in params)
    tangents = tuple(v.detach().to(dtype=p.dtype) for v, p in zip(vectors, primals))
    for p, v in zip(primals, tangents):
        if p.shape != v.shape:
            raise ValueError(f"a vector of shape {tuple(v.shape)} does not match its parameter {tuple(p.shape)}")

    def grad_fn(*ps: Tensor) -> Tuple[Tensor, ...]:
        return torch.func.grad(lambda *qs: loss_fn(dict(zip(params, qs))), argnums=tuple(range(len(ps))))(*ps)

    with torch.enable_grad():
        grads, hvps = torch.func.jvp(grad_fn, primals, tangents)
    hvps = [h.detach() for h in hvps]
    if with_grad:
        return [g.detach() for g in grads], hvps
    return hvps


def functional_loss(
    module: torch.nn.Module, loss: Callable[[Callable[..., Any]], Tensor]
) -> Tuple[LossFn, List[Tensor]]:
    """Glue for :func:`hessian_vector_product_fwd_rev`: a module's loss as a function of its parameters.

    ``loss(forward)`` computes the scalar loss, calling ``forward(*inputs)`` where it would call
    ``module(*inputs)``. Returns ``(loss_fn, params)``: ``loss_fn({param: value})`` runs ``loss``
    with those of ``module``'s parameters replaced (``torch.func.functional_call``), and
    ``params`` lists the module's trainable parameters.

        loss_fn, params = functional_loss(net, lambda f: (f(x) - y).square().mean())
        hv = hessian_vector_product_fwd_rev(loss_fn, params, rademacher_like(params))
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]

    def loss_fn(values: Mapping[Tensor, Tensor]) -> Tensor:
        table = {n: values.get(p, p) for n, p in named}
        return loss(lambda *args, **kwargs: torch.func.functional_call(module, table, args, kwargs))

    return loss_fn, [p for _, p in named]


class HutchinsonProbe:
    """The curvature step every Hutchinson optimizer takes: draw Rademacher ``v``, form ``H v``.

    It owns what must agree across data-parallel ranks (see :mod:`gnerf.optim.distributed`):

    * the random generator: the caller's ``generator`` if given; otherwise, when a ``seed`` is
      given or the run is distributed, its own generator seeded with ``seed`` (or with a seed drawn
      on rank 0 and broadcast once), so every rank draws the same ``v``; otherwise torch's global one;
    * the averaging: in a distributed run the local gradients and products are averaged with one
      all-reduce, and the parameters' ``.grad`` are replaced by the (graph-free) averages.

    ``hvp_method`` picks how ``H v`` is formed (:data:`HVP_METHODS`): ``"double-backward"`` (the
    default) differentiates the gradients, which must carry a graph (``backward(create_graph=True)``,
    run under DDP's ``no_sync``); ``"forward-over-reverse"`` needs no graph but the loss as a
    function of the parameters (``loss_fn``, see :data:`LossFn`), which it evaluates once more. Its
    gradients come from an ordinary backward (under DDP, already averaged), so in a distributed run
    only the products are all-reduced.

    Args:
        generator: random generator for the probes (the caller keeps it identical across ranks).
        seed: seed for the probe's own generator.
        process_group: ``"auto"``, ``None`` or a ``torch.distributed.ProcessGroup``
            (see :data:`gnerf.optim.distributed.ProcessGroupSetting`).
        hvp_method: one of :data:`HVP_METHODS`.
    """

    def __init__(self, generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                 process_group: "ProcessGroupSetting" = "auto", hvp_method: str = DEFAULT_HVP_METHOD) -> None:
        curvature_process_group(process_group)  # reject a bad setting now
        if hvp_method not in HVP_METHODS:
            raise ValueError(f"invalid hvp_method={hvp_method!r}: choose one of {', '.join(HVP_METHODS)}")
        self.hvp_method = hvp_method
        self.generator = generator
        self.seed = seed
        self.process_group = process_group
        self._own: Optional[torch.Generator] = None  # created at the first probe, on the parameters' device
        self._pending_state: Optional[Tensor] = None  # loaded before the first probe

    def _generator(self, device: torch.device, group: Optional[Any]) -> Optional[torch.Generator]:
        if self.generator is not None:
            return self.generator
        if self._own is None and (self.seed is not None or group is not None or self._pending_state is not None):
            self._own = torch.Generator(device=device)
            self._own.manual_seed(broadcast_seed(self.seed, group, device))
            if self._pending_state is not None:
                self._own.set_state(self._pending_state)
                self._pending_state = None
        return self._own

    @property
    def needs_graph(self) -> bool:
        """Whether a curvature step's ``backward`` must use ``create_graph=True``."""
        return self.hvp_method == "double-backward"

    def __call__(self, params: Sequence[Tensor], *, who: str = "optimizer",
                 loss_fn: Optional[LossFn] = None) -> Tuple[List[Tensor], List[Tensor]]:
        """``(v, H v)`` at ``params``; callable under ``torch.no_grad()``.

        Double backward reads the graph the parameters' ``.grad`` carry; forward-over-reverse
        evaluates ``loss_fn`` (required then).
        """
        group = curvature_process_group(self.process_group)
        vs = rademacher_like(params, self._generator(params[0].device, group))
        if self.needs_graph:
            with torch.enable_grad():
                hvps = hessian_vector_product(params, [p.grad for p in params], vs, who=who)
            if group is not None:  # the gradients are this rank's own (no_sync): average them with H v
                grads = [p.grad.detach().clone() for p in params]
                all_reduce_mean_(grads + hvps, group)
                for p, g in zip(params, grads):
                    p.grad = g
            return vs, hvps
        if loss_fn is None:
            raise ValueError(
                f"{who}(hvp_method='forward-over-reverse') needs the loss as a function of the parameters on "
                "curvature steps: call optimizer.step(loss_fn=...) when optimizer.is_curvature_step() "
                "(gnerf.optim.curvature.functional_loss builds one from a module)")
        hvps = hessian_vector_product_fwd_rev(loss_fn, params, vs)
        all_reduce_mean_(hvps, group)  # the gradients were averaged by DDP's ordinary backward
        return vs, hvps

    def state_dict(self) -> Dict[str, Any]:
        """The own generator's state (``None`` while the global generator or the caller's is used)."""
        own = self._own.get_state() if self._own is not None else self._pending_state
        return {"seed": self.seed, "rng_state": own}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        rng = state.get("rng_state")
        if rng is None:
            return
        if self._own is not None:
            self._own.set_state(rng)
        else:
            self._pending_state = rng
