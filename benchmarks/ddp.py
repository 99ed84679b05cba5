"""(6) Data-parallel step cost: ESGD-Max and Adam under DistributedDataParallel, N processes.

Every process trains its own shard (``points / N``) of the GARF-trunk batch. Adam takes DDP's
ordinary steps; ESGD-Max takes them too, except on curvature steps, whose forward and backward run
under ``no_sync`` and whose gradients and Hessian-vector products the optimizer averages in one
all-reduce. The two optimizers step in turn, as in (1), so machine noise hits both alike.
Processes: gloo on CPU (one thread each), NCCL with one GPU each.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.common import (
    Timer,
    TrunkSpec,
    free_port,
    is_cuda,
    make_batch,
    make_trunk,
    mse,
    section,
    step_stats,
    table,
)
from gnerf.optim.defaults import PAPER
from gnerf.optim.esgd import ESGDMax
from gnerf.optim.step import take_step


def _worker(
    rank: int, world: int, port: int, spec: TrunkSpec, rounds: int, block: int, warmup_steps: int, out: str
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = is_cuda(spec.device)
    if cuda:
        torch.cuda.set_device(rank)
        dev = f"cuda:{rank}"
    else:
        torch.set_num_threads(1)
        dev = "cpu"
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        local = TrunkSpec(points=spec.points, width=spec.width, layers=spec.layers, device=dev, seed=spec.seed)
        torch.manual_seed(spec.seed)
        base = make_trunk(local).to(dev)
        x, y = make_batch(local)
        shard = slice(rank * spec.points // world, (rank + 1) * spec.points // world)
        x, y = x[shard], y[shard]
        nets = {"Adam": copy.deepcopy(base), "ESGD-Max": copy.deepcopy(base)}
        ddps = {
            k: torch.nn.parallel.DistributedDataParallel(n, device_ids=[rank] if cuda else None)
            for k, n in nets.items()
        }
        opts = {
            "Adam": torch.optim.Adam(nets["Adam"].parameters(), lr=1e-4, foreach=True),
            "ESGD-Max": ESGDMax(
                nets["ESGD-Max"].parameters(),
                lr=PAPER.nerf_lr,
                precondition_warmup_steps=warmup_steps,
                precondition_frequency=block,
                foreach=True,
                seed=0,
            ),
        }
        calls: List[int] = []
        real = dist.all_reduce

        def counting(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)

        def counted_step(optimizers) -> None:  # count the all-reduces the optimizer's step issues
            calls.clear()
            dist.all_reduce = counting
            try:
                for o in optimizers:
                    o.step()
            finally:
                dist.all_reduce = real

        def step(name: str) -> Tuple[bool, int]:
            ddp, opt = ddps[name], opts[name]  # noqa: F821 - runs before the del below
            opt.zero_grad(set_to_none=True)
            _, create_graph = take_step(opt, lambda create_graph: mse(ddp(x), y), model=ddp, step=counted_step)
            return create_graph, len(calls)

        for name in opts:
            for _ in range(warmup_steps):
                step(name)
        times: Dict[str, List[Tuple[float, bool, int]]] = {k: [] for k in opts}
        for i in range(rounds * block):
            for name in list(opts) if i % 2 == 0 else list(opts)[::-1]:
                dist.barrier()
                with Timer(dev) as t:
                    curvature, n_reduce = step(name)
                times[name].append((t.seconds, curvature, n_reduce))
        same = torch.cat([p.detach().reshape(-1) for p in nets["ESGD-Max"].parameters()])
        gathered = [torch.empty_like(same) for _ in range(world)]
        dist.all_gather(gathered, same)
        if rank == 0:
            identical = all(torch.equal(g, gathered[0]) for g in gathered)
            torch.save({"times": times, "identical": identical}, Path(out) / "ddp.pt")
        dist.barrier()  # no rank tears gloo down while another is still in a collective (it can abort at exit)
        del ddps  # DDP's reducers go before their process group does
        gc.collect()
    finally:
        dist.destroy_process_group()


def ddp_overhead(
    spec: TrunkSpec,
    world: int,
    rounds: int = 2,
    block: int = PAPER.precondition_frequency,
    warmup_steps: int = PAPER.precondition_warmup_steps,
) -> Tuple[str, Dict]:
    """(6): mean step time of ESGD-Max and Adam under DDP with ``world`` processes (rank 0's clock)."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(world, free_port(), spec, rounds, block, warmup_steps, out), nprocs=world, join=True)
        result = torch.load(Path(out) / "ddp.pt", weights_only=False)
    stats = {}
    for name, ts in result["times"].items():
        stats[name] = dict(step_stats([(t, c) for t, c, _ in ts]), reduces=sorted({n for _, c, n in ts if c}))
    a, e = stats["Adam"], stats["ESGD-Max"]
    ratio = e["mean"] / a["mean"]
    rows = [
        (k, 1e3 * s["mean"], 1e3 * s["plain"], 1e3 * s["curv"], f"{s['n_curv']} / {s['n']}", s["mean"] / a["mean"])
        for k, s in stats.items()
    ]
    body = table(
        [
            "optimizer",
            "mean step (ms)",
            "plain step (ms)",
            "curvature step (ms)",
            "curvature steps / timed",
            "mean step / Adam",
        ],
        rows,
    )
    backend = "NCCL, one GPU each" if is_cuda(spec.device) else "gloo, one CPU thread each"
    notes = [
        f"**ratio ESGD-Max / Adam under DDP = {ratio:.3f}**; plain-step ratio {e['plain'] / a['plain']:.3f}",
        f"all-reduces issued by ESGD-Max's step on a curvature step: {e['reduces']} (gradients and Hv in one "
        f"flat buffer); on plain steps DDP's own bucketed all-reduce runs in backward, as for Adam",
        f"{world} processes ({backend}), {spec.points // world:,} points each; {rounds * block} timed steps "
        f"per optimizer after {warmup_steps} warm-up steps, stepping in turn; "
        f"ESGD-Max parameters identical on every rank at the end: {result['identical']}",
    ]
    title = f"(6) Data parallel: ESGD-Max vs Adam under DDP, {world} processes"
    return section(title, spec.describe(), body, notes), dict(ratio=ratio, **stats, identical=result["identical"])
