"""The training-step protocol of curvature optimizers, written once: :func:`take_step`.

Every training loop in gnerf (the fitting loop, the nerfstudio trainer, the benchmarks) takes its
steps through :func:`take_step`, which

1. decides once, before the forward pass, whether this step's ``backward`` builds the graph
   (some optimizer takes a Hessian-vector product by double backward now, :func:`should_create_graph`);
2. runs the forward and backward under DDP's ``no_sync()`` when the graph is built, because DDP
   cannot differentiate through its gradient hooks and the optimizer averages gradients and
   Hessian-vector products itself, in one all-reduce (:mod:`gnerf.optim.distributed`);
3. calls ``backward(create_graph=...)``, then ``step()``;
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
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.curvature import release_graph

__all__ = ["no_sync_if_curvature", "should_create_graph", "take_step"]

Optimizers = Union[object, Sequence[object]]


def _as_list(optimizers: Optimizers) -> List[object]:
    return list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]


def should_create_graph(optimizer: object) -> bool:
    """Whether the next ``backward`` must build a graph for ``optimizer`` (False for first-order ones)."""
    return needs_hessian_vector_products(optimizer) and bool(optimizer.should_create_graph())


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


def _backward(loss: Tensor, create_graph: bool) -> None:
    loss.backward(create_graph=create_graph)


def _step_each(optimizers: Sequence[object]) -> None:
    for o in optimizers:
        o.step()


def take_step(
    optimizers: Optimizers,
    loss: Callable[[bool], Tensor],
    *,
    model: Optional[torch.nn.Module] = None,
    backward: Callable[[Tensor, bool], None] = _backward,
    step: Callable[[Sequence[object]], None] = _step_each,
) -> Tuple[Tensor, bool]:
    """One training step of ``optimizers`` under the curvature protocol (see the module docstring).

    Args:
        optimizers: the optimizer, or the list of optimizers, that step now (their gradients must
            have been zeroed by the caller, who owns zeroing and gradient accumulation).
        loss: ``loss(create_graph) -> scalar``, the forward pass, told whether this step builds the
            graph (e.g. to synchronise a check only then); it runs under DDP's ``no_sync`` when it does.
        model: the model the loss runs; when it is ``DistributedDataParallel``, curvature steps
            skip its gradient all-reduce.
        backward: ``backward(loss, create_graph)``; replace it to scale the loss (a grad scaler).
        step: ``step(optimizers)`` steps the optimizers; replace it to step through a grad scaler.

    Returns:
        ``(loss, create_graph)``: the value ``loss`` returned, and whether the step built the graph.
    """
    opts = _as_list(optimizers)
    create_graph = any(should_create_graph(o) for o in opts)  # decided once, before the forward pass
    with _no_sync(model, create_graph):
        value = loss(create_graph)
        with warnings.catch_warnings():
            # the graph lives in .grad until release_graph below breaks the cycle torch warns about
            warnings.filterwarnings(
                "ignore", message=r"Using backward\(\) with create_graph=True", category=UserWarning
            )
            backward(value, create_graph)
    step(opts)
    if create_graph:  # also the gradients of parameters no stepping optimizer holds
        held = [p for o in opts for g in o.param_groups for p in g["params"]]
        release_graph(held + (list(model.parameters()) if model is not None else []))
    return value, create_graph
