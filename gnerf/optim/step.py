"""The training-step protocol of curvature optimizers, written once: :func:`take_step`.

Every training loop in gnerf (the fitting loop, the nerfstudio trainer, the benchmarks) takes its
steps through :func:`take_step`, which

1. decides once, before the forward pass, whether this step's ``backward`` builds the graph
   (some optimizer takes a Hessian-vector product by double backward now, :func:`should_create_graph`)
   and which optimizers need the loss as a function of the weights (:func:`needs_loss_fn`);
2. runs the forward and backward under DDP's ``no_sync()`` when the graph is built, because DDP
   cannot differentiate through its gradient hooks and the optimizer averages gradients and
   Hessian-vector products itself, in one all-reduce (:mod:`gnerf.optim.distributed`);
3. calls ``backward(create_graph=...)``, then ``step()``, or ``step(loss_fn=...)`` for a
   forward-over-reverse curvature step;
4. detaches the gradients that still hold the graph (:func:`~gnerf.optim.curvature.release_graph`),
   those of the optimizers' parameters and of the model's.

The same protocol by hand, for one optimizer::

    with no_sync_if_curvature(ddp_model, optimizer):
        loss = task_loss(ddp_model, batch)
        loss.backward(create_graph=should_create_graph(optimizer))
    optimizer.step()
    optimizer.zero_grad()

First-order optimizers (``torch.optim.Adam``, K-FAC, Shampoo) never build a graph and cost nothing
extra: :func:`~gnerf.optim.base.needs_hessian_vector_products` is the one test of which optimizers
take part.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.curvature import LossFn, release_graph

__all__ = ["StepPlan", "needs_loss_fn", "no_sync_if_curvature", "plan_step", "should_create_graph", "take_step"]

Optimizers = Union[object, Sequence[object]]


def _as_list(optimizers: Optimizers) -> List[object]:
    return list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]


def should_create_graph(optimizer: object) -> bool:
    """Whether the next ``backward`` must build a graph for ``optimizer`` (False for first-order ones)."""
    return needs_hessian_vector_products(optimizer) and bool(optimizer.should_create_graph())


def needs_loss_fn(optimizer: object) -> bool:
    """Whether the next ``step`` of ``optimizer`` needs ``step(loss_fn=...)`` (forward-over-reverse curvature)."""
    return (needs_hessian_vector_products(optimizer) and optimizer.hvp_method == "forward-over-reverse"
            and bool(optimizer.is_curvature_step()))


def no_sync_if_curvature(model: torch.nn.Module, optimizers: Optimizers) -> ContextManager:
    """``model.no_sync()`` when ``model`` is DDP and one of ``optimizers`` builds a graph this step.

    Wrap the forward *and* backward of the step in it: the optimizer then averages gradients and
    Hessian-vector products itself, in one all-reduce, after the products are formed.
    """
    return _no_sync(model, any(should_create_graph(o) for o in _as_list(optimizers)))


def _no_sync(model: Optional[torch.nn.Module], create_graph: bool) -> ContextManager:
    """``model.no_sync()`` when ``model`` is DDP and the step builds a graph, else a null context."""
    if create_graph and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


@dataclass(frozen=True)
class StepPlan:
    """What one step of a list of optimizers needs, decided before its forward pass."""

    create_graph: bool
    """The backward builds the graph (some optimizer takes ``H v`` by double backward this step)."""
    functional: Tuple[bool, ...]
    """Per optimizer: it steps with ``step(loss_fn=...)`` (forward-over-reverse curvature this step)."""

    @property
    def needs_loss_fn(self) -> bool:
        """Some optimizer needs the loss as a function of the weights this step."""
        return any(self.functional)


def plan_step(optimizers: Optimizers) -> StepPlan:
    """The :class:`StepPlan` of the next step of ``optimizers`` (one optimizer or a list)."""
    opts = _as_list(optimizers)
    return StepPlan(any(should_create_graph(o) for o in opts), tuple(needs_loss_fn(o) for o in opts))


def _backward(loss: Tensor, create_graph: bool) -> None:
    loss.backward(create_graph=create_graph)


def _step_each(optimizers: Sequence[object]) -> None:
    for o in optimizers:
        o.step()


def take_step(
    optimizers: Optimizers,
    loss: Callable[[StepPlan], Tensor],
    *,
    model: Optional[torch.nn.Module] = None,
    loss_fn: Optional[Callable[[], LossFn]] = None,
    backward: Callable[[Tensor, bool], None] = _backward,
    step: Callable[[Sequence[object]], None] = _step_each,
) -> Tuple[Tensor, StepPlan]:
    """One training step of ``optimizers`` under the curvature protocol (see the module docstring).

    Args:
        optimizers: the optimizer, or the list of optimizers, that step now (their gradients must
            have been zeroed by the caller, who owns zeroing and gradient accumulation).
        loss: ``loss(plan) -> scalar``, the forward pass; it runs under DDP's ``no_sync`` when the
            plan builds a graph, and may read the plan (e.g. to synchronise a check only then).
        model: the model the loss runs; when it is ``DistributedDataParallel``, curvature steps
            skip its gradient all-reduce.
        loss_fn: builds this step's loss as a function of the weights (see
            :func:`gnerf.optim.curvature.functional_loss`); called only when an optimizer takes a
            forward-over-reverse curvature step, which is then stepped with ``step(loss_fn=...)``.
        backward: ``backward(loss, create_graph)``; replace it to scale the loss (a grad scaler).
        step: ``step(optimizers)`` steps the optimizers that need no ``loss_fn``; replace it to
            step through a grad scaler.

    Returns:
        ``(loss, plan)``: the value ``loss`` returned, and the plan the step followed.
    """
    opts = _as_list(optimizers)
    plan = plan_step(opts)
    with _no_sync(model, plan.create_graph):  # the plan's decision, not asked of the optimizers again
        value = loss(plan)
        with warnings.catch_warnings():
            # the graph lives in .grad until release_graph below breaks the cycle torch warns about
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True",
                                    category=UserWarning)
            backward(value, plan.create_graph)
    step([o for o, f in zip(opts, plan.functional) if not f])
    if plan.needs_loss_fn:
        if loss_fn is None:
            raise ValueError("an optimizer with hvp_method='forward-over-reverse' takes a curvature step now and "
                             "needs the loss as a function of the weights: pass take_step(..., loss_fn=...)")
        fn = loss_fn()
        for o in (o for o, f in zip(opts, plan.functional) if f):
            o.step(loss_fn=fn)
    if plan.create_graph:  # also the gradients of parameters no stepping optimizer holds
        held = [p for o in opts for g in o.param_groups for p in g["params"]]
        release_graph(held + (list(model.parameters()) if model is not None else []))
    return value, plan
