"""Data-parallel curvature: the same Rademacher probe on every rank, one all-reduce per curvature step.

Under ``torch.nn.parallel.DistributedDataParallel`` (DDP) each rank holds a shard of the batch.
DDP averages the gradients of plain steps itself, but it cannot differentiate through its own
gradient hooks, so a curvature step runs its forward and backward under DDP's ``no_sync()``
(:func:`gnerf.optim.step.take_step` does so). On a curvature step every rank computes ``H v`` on
its own shard with the *same* Rademacher ``v`` (a generator seeded identically on every rank), and
the optimizer averages the local
gradients and products with **one** all-reduce of a single flat buffer. The average of the
shards' ``H v`` is ``H v`` of the average loss, so every rank ends the step with identical
gradients, curvature state and parameters, equal (to float rounding) to one process on the
whole batch when the shards have equal weight.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "ProcessGroupSetting",
    "all_reduce_mean_",
    "broadcast_seed",
    "curvature_process_group",
    "is_distributed",
]

ProcessGroupSetting = Union[str, None, "dist.ProcessGroup"]
"""``"auto"`` (the default process group when one with more than one rank is initialised),
``None`` (never communicate) or an explicit ``torch.distributed.ProcessGroup``."""


def is_distributed() -> bool:
    """Whether a default process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def curvature_process_group(setting: ProcessGroupSetting) -> Optional[dist.ProcessGroup]:
    """The group a curvature optimizer averages over, or ``None`` for a single process."""
    if setting is None:
        return None
    if isinstance(setting, str):
        if setting != "auto":
            raise ValueError(f"invalid process_group={setting!r}: use 'auto', None or a torch.distributed.ProcessGroup")
        return dist.group.WORLD if is_distributed() else None
    return setting if dist.get_world_size(setting) > 1 else None


def broadcast_seed(seed: Optional[int], group: Optional[dist.ProcessGroup], device: torch.device) -> int:
    """``seed``, or one drawn on the group's first rank and shared with all of them."""
    if seed is not None:
        return int(seed)
    value = torch.randint(0, 2**62, (1,), dtype=torch.int64)
    if group is None:
        return int(value)
    value = value.to(device)  # NCCL communicates device tensors only
    dist.broadcast(value, src=dist.get_global_rank(group, 0), group=group)
    return int(value.cpu())


def all_reduce_mean_(tensors: Sequence[Tensor], group: Optional[dist.ProcessGroup]) -> None:
    """Average ``tensors`` in place across ``group`` with one all-reduce of one flat buffer.

    (One buffer per dtype and device; gnerf's fields are float32 on one device, so one in all.)
    """
    if group is None or not tensors:
        return
    world = dist.get_world_size(group)
    buckets: dict = {}
    for t in tensors:
        buckets.setdefault((t.dtype, t.device), []).append(t)
    for ts in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in ts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat.div_(world)
        offset = 0
        for t in ts:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n
