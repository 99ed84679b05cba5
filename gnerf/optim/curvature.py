"""Hutchinson curvature: Rademacher probes, Hessian-vector products, and the training protocol.

Every curvature optimizer in gnerf (ESGD, ESGD-Max, and later AdaHessian) follows one
contract with the training loop::

    loss = task_loss(batch)
    loss.backward(create_graph=should_create_graph(optimizer))
    optimizer.step()            # draws v, computes H v from the graph when due, updates
    optimizer.zero_grad()       # set_to_none=True (the default) frees the graph

First-order optimizers (``torch.optim.Adam`` ...) lack ``should_create_graph`` and cost nothing
extra. A curvature optimizer detaches the gradients it was given at the end of a step, so the
parameter -> grad -> graph -> parameter reference cycle never outlives the step.
"""

from __future__ import annotations

import warnings
from typing import Iterable, List, Optional, Sequence

import torch
from torch import Tensor

# gnerf's optimizers detach the gradients after every step (see release_graph), which is exactly
# what torch's reference-cycle warning asks for, so the warning is noise for gnerf users.
warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True", category=UserWarning)


class MissingGraphError(RuntimeError):
    """A curvature step found gradients that were computed without ``create_graph=True``."""


def should_create_graph(optimizer: object) -> bool:
    """Whether the next ``backward`` must build a graph for ``optimizer`` (False for first-order ones)."""
    fn = getattr(optimizer, "should_create_graph", None)
    return bool(fn()) if callable(fn) else False


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
            "(gnerf.optim.curvature.should_create_graph(optimizer) works for any optimizer)."
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
