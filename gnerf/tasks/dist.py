"""torchrun glue for the fitting commands: one process per device, DistributedDataParallel.

``torchrun --nproc-per-node N gnerf/... `` (or ``python -m torch.distributed.run``) sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`session` then joins the process group (gloo
for CPU tensors, NCCL for CUDA ones) and leaves it at the end. Every rank trains on its share of
each minibatch; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from gnerf.errors import InputError
from gnerf.optim.distributed import is_distributed

__all__ = ["broadcast_object", "launched_rank", "local_rank", "rank", "session", "world_size"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0) if is_distributed() else 0


def launched_rank() -> Optional[int]:
    """The rank torchrun gave this process (from the environment), or None outside a multi-process job."""
    return _env_int("RANK", 0) if _env_int("WORLD_SIZE", 1) > 1 else None


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (the identity in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_cpu_group())
    return box[0]


_CPU_GROUP: Optional[dist.ProcessGroup] = None


def _cpu_group() -> dist.ProcessGroup:
    return _CPU_GROUP if _CPU_GROUP is not None else dist.group.WORLD


@contextlib.contextmanager
def session(timeout_s: float = 600.0) -> Iterator[None]:
    """Join the process group torchrun describes (a no-op for a single process), and leave it after.

    ``timeout_s`` bounds how long a rank waits in a collective for ranks that stopped answering.
    """
    global _CPU_GROUP
    if _env_int("WORLD_SIZE", 1) <= 1 or dist.is_initialized():
        yield
        return
    if timeout_s <= 0:
        raise InputError(f"--dist-timeout must be > 0 seconds, got {timeout_s}")
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    _CPU_GROUP = dist.new_group(backend="gloo") if torch.cuda.is_available() else None
    try:
        yield
        # every rank reaches here before any tears its group down: a rank that destroys gloo while another is
        # still in its last collective can abort at exit ("terminate called without an active exception")
        dist.barrier(group=_CPU_GROUP)
    finally:
        _CPU_GROUP = None
        dist.destroy_process_group()
