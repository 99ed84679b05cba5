"""Run a test function on several CPU processes joined in a gloo process group."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, rendezvous: str, fn: Callable[..., None], args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        fn(rank, *args)
        dist.barrier()  # no rank tears gloo down while another is still in a collective (it can abort at exit)
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn: Callable[..., None], *args: Any, world: int = 2) -> None:
    """``fn(rank, *args)`` in ``world`` spawned processes (a module-level function); raises if one fails.

    The processes meet through a file in a fresh temporary folder, so no free port is needed.
    """
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_entry, args=(world, str(Path(folder) / "rendezvous"), fn, args), nprocs=world, join=True)
