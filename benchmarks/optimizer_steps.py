"""The training step of every registered optimizer on the image network, in one interleaved run.

The paper's image network (5 x 256, Gaussian sigma 0.05, 2-D in, RGB out) on a minibatch of 512
coordinates: each optimizer's mean step (forward, backward, update; curvature steps included at each
optimizer's own cadence, after the first 60 steps so that the ESGD family's 50 warm-up curvature steps are
behind) over blocks of 100 steps that alternate between the optimizers, so noise from other work on the
machine hits all of them alike. ``muon`` runs once per Newton-Schulz precision asked for::

    python -m benchmarks.optimizer_steps                      # every optimizer, this machine
    python -m benchmarks.optimizer_steps --names adam muon --muon-ns-dtypes float32 bfloat16 --threads 1
    python -m benchmarks.optimizer_steps --threads 1 --output docs/speed_cpu/optimizer_steps.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from benchmarks.common import machine, section, sync, table, today
from gnerf.fields import CoordinateMLP
from gnerf.files import atomic_write_bytes
from gnerf.optim import OPTIMIZERS, has_train_eval_modes, optimizer_config, take_step


def _stepper(name: str, options: Dict[str, object], device: str, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    net = CoordinateMLP(
        2, 3, hidden_dim=256, num_layers=5, activation="gaussian", activation_kwargs={"sigma": 0.05}
    ).to(device)
    cfg = optimizer_config(name, **options)
    opt = cfg.build(net.parameters(), seed=0 if cfg.curvature else None)
    if has_train_eval_modes(opt):
        opt.train()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 2, generator=g) * 2 - 1).to(device)
    y = torch.rand(batch, 3, generator=g).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        take_step(opt, lambda plan: (net(x) - y).square().mean())

    return step


def run(
    names: List[str], device: str, batch: int, block: int, rounds: int, ns_dtypes: List[str], warmup: int = 60
) -> str:
    variants: Dict[str, Callable[[], None]] = {}
    for name in names:
        if name == "muon":
            for dtype in ns_dtypes:
                variants[f"muon (ns_dtype {dtype})"] = _stepper(name, {"ns_dtype": dtype}, device, batch)
        else:
            variants[name] = _stepper(name, {}, device, batch)
    times: Dict[str, List[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up: lazily built state, the ESGD family's warm-up curvature steps
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for key, fn in variants.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            sync(device)
            times[key].append((time.perf_counter() - t0) / block)
    base = statistics.median(times["adam"]) if "adam" in times else None
    rows = []
    for key, ts in times.items():
        med = statistics.median(ts)
        rows.append([key, med * 1e3, med / base if base else float("nan")])
    return section(
        "Optimizer steps on the image network",
        f"{machine(device)}; date {today()}; 5 x 256 Gaussian network, batch {batch}; median over "
        f"{rounds} rounds of the mean step in blocks of {block} steps, optimizers interleaved.",
        table(["optimizer", "step (ms)", "x adam"], rows),
    )


def main(argv: Optional[List[str]] = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--names",
        nargs="+",
        default=list(OPTIMIZERS),
        choices=list(OPTIMIZERS),
        metavar="NAME",
        help="registered optimizers (default: all)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--block", type=int, default=100, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--muon-ns-dtypes",
        nargs="+",
        default=["auto"],
        choices=["auto", "float32", "bfloat16"],
        help="muon's Newton-Schulz precisions to time (bfloat16 is torch.optim.Muon's)",
    )
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--output", type=Path, help="also write the table, with this command, to this markdown file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    text = run(args.names, args.device, args.batch, args.block, args.rounds, args.muon_ns_dtypes)
    print(text)
    if args.output:
        command = "python -m benchmarks.optimizer_steps " + " ".join(sys.argv[1:] if argv is None else argv)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.output, f"Command: `{command}`\n\n{text}".encode())
    return text


if __name__ == "__main__":
    main()
