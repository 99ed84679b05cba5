"""Hutchinson curvature: Rademacher probes and Hessian-vector products.

Every curvature optimizer in gnerf (ESGD, ESGD-Max, AdaHessian) estimates curvature through a
:class:`HutchinsonProbe`: it draws a Rademacher ``v`` and forms ``H v`` by double backward from
gradients that carry a graph (``backward(create_graph=True)``). The training-step protocol that
provides them lives in :mod:`gnerf.optim.step`. A curvature optimizer detaches the gradients it was
given at the end of a step (:func:`release_graph`), so the parameter -> grad -> graph -> parameter
reference cycle never outlives the step.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple

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


class HutchinsonProbe:
    """The curvature step every Hutchinson optimizer takes: draw Rademacher ``v``, form ``H v``.

    ``H v`` comes from double backward: the parameters' gradients must carry a graph
    (``backward(create_graph=True)``, run under DDP's ``no_sync``). The probe owns what must agree
    across data-parallel ranks (see :mod:`gnerf.optim.distributed`):

    * the random generator: the caller's ``generator`` if given; otherwise, when a ``seed`` is
      given or the run is distributed, its own generator seeded with ``seed`` (or with a seed drawn
      on rank 0 and broadcast once), so every rank draws the same ``v``; otherwise torch's global one;
    * the averaging: in a distributed run the local gradients and products are averaged with one
      all-reduce, and the parameters' ``.grad`` are replaced by the (graph-free) averages.

    Args:
        generator: random generator for the probes (the caller keeps it identical across ranks).
        seed: seed for the probe's own generator.
        process_group: ``"auto"``, ``None`` or a ``torch.distributed.ProcessGroup``
            (see :data:`gnerf.optim.distributed.ProcessGroupSetting`).
    """

    def __init__(
        self,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        process_group: ProcessGroupSetting = "auto",
    ) -> None:
        curvature_process_group(process_group)  # reject a bad setting now
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

    def __call__(self, params: Sequence[Tensor], *, who: str = "optimizer") -> Tuple[List[Tensor], List[Tensor]]:
        """``(v, H v)`` at ``params``, from the graph their ``.grad`` carry; callable under ``torch.no_grad()``."""
        group = curvature_process_group(self.process_group)
        vs = rademacher_like(params, self._generator(params[0].device, group))
        with torch.enable_grad():
            hvps = hessian_vector_product(params, [p.grad for p in params], vs, who=who)
        if group is not None:  # the gradients are this rank's own (no_sync): average them with H v
            grads = [p.grad.detach().clone() for p in params]
            all_reduce_mean_(grads + hvps, group)
            for p, g in zip(params, grads):
                p.grad = g
        return vs, hvps

    def rng_state(self) -> Optional[Tensor]:
        """The own generator's state (``None`` while the global generator or the caller's is used)."""
        return self._own.get_state() if self._own is not None else self._pending_state

    def set_rng_state(self, state: Tensor) -> None:
        """Continue the own generator from ``state`` (a :meth:`rng_state`), now or at the first probe."""
        if self._own is not None:
            self._own.set_state(state)
        else:
            self._pending_state = state
