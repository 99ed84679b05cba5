"""Per-step cost of ESGD-Max against Adam on the Gaussian radiance-field trunk (pure torch, no nerfstudio).

Times the training step (forward, backward with ``create_graph`` on curvature steps, optimizer
step) of the GARF trunk -- ``CoordinateMLP(3 -> 1 + 256)``, nine linear layers, 256 wide, a skip
connection, Gaussian activations -- on a batch of ``points`` random xyz with an MSE loss, which
stands in for the renderer. Both optimizers run in this one process over the same steps; the
timed window starts after the 50-step curvature warm-up, so it holds the paper's cadence (one
curvature step every 100). Also checks that the multi-tensor (``foreach``) ESGD-Max path matches
the per-tensor path on this device. Prints a markdown table.

    python scripts/bench_step_overhead.py                    # CUDA if present, paper batch 2048 x 128
    python scripts/bench_step_overhead.py --points 8192 --width 64 --steps 300   # a CPU-sized look
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Optional

import torch
import tyro

from gnerf.fields import CoordinateMLP
from gnerf.optim import ESGDMax, should_create_graph


@dataclass
class StepBenchConfig:
    points: int = 2048 * 128
    """Points per step (the paper: 2048 rays x 128 samples)."""
    width: int = 256
    layers: int = 9
    steps: int = 1000
    """Timed steps after the 50-step curvature warm-up (the cadence puts one curvature step in 100)."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    output: Optional[str] = None
    """Also append the table to this file."""


def _trunk(cfg: StepBenchConfig) -> torch.nn.Module:
    return CoordinateMLP(3, 1 + cfg.width, hidden_dim=cfg.width, num_layers=cfg.layers, activation="gaussian",
                         activation_kwargs={"sigma": 0.1}, skip_connections=(cfg.layers // 2 + 1,))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _run(net, opt, x, y, steps: int, device: str):
    """Run ``steps`` steps; return (total seconds, seconds of curvature steps, number of curvature steps)."""
    total = curv_time = 0.0
    curv = 0
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        create = should_create_graph(opt)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward(create_graph=create)
        opt.step()
        _sync(device)
        dt = time.perf_counter() - t0
        total += dt
        if create:
            curv_time += dt
            curv += 1
    return total, curv_time, curv


def main(cfg: StepBenchConfig) -> str:
    torch.manual_seed(cfg.seed)
    dev = cfg.device
    x = torch.rand(cfg.points, 3, device=dev) * 3 - 1.5
    y = torch.rand(cfg.points, 1 + cfg.width, device=dev)
    base = _trunk(cfg).to(dev)

    # correctness on this device: foreach and per-tensor ESGD-Max agree
    nets = [copy.deepcopy(base) for _ in range(2)]
    opts = [ESGDMax(n.parameters(), lr=1.0, foreach=f, d_warmup=3, update_d_every=4,
                    generator=torch.Generator(device=dev).manual_seed(1)) for n, f in zip(nets, (False, True))]
    small = slice(0, min(cfg.points, 4096))
    for n, o in zip(nets, opts):
        _run(n, o, x[small], y[small], 6, dev)
    max_diff = max((p - q).abs().max().item() for p, q in zip(nets[0].parameters(), nets[1].parameters()))

    rows = []
    for name in ("adam", "esgd-max"):
        net = copy.deepcopy(base)
        opt = (torch.optim.Adam(net.parameters(), lr=1e-4, foreach=dev.startswith("cuda")) if name == "adam"
               else ESGDMax(net.parameters(), lr=1.0))
        _run(net, opt, x, y, 50, dev)  # warm-up: the 50 curvature warm-up steps / kernel caches
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        total, curv_time, curv = _run(net, opt, x, y, cfg.steps, dev)
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.startswith("cuda") else float("nan")
        plain = (total - curv_time) / max(cfg.steps - curv, 1)
        rows.append((name, total / cfg.steps, plain, curv_time / curv if curv else float("nan"), curv, peak))

    adam_mean = rows[0][1]
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"GARF trunk {cfg.layers} x {cfg.width}, {cfg.points} points per step, {cfg.steps} timed steps, {name}, "
        f"torch {torch.__version__}",
        "",
        "| optimizer | mean step (ms) | plain step (ms) | curvature step (ms) | curvature steps | peak GPU memory (GiB) | "
        "mean step / Adam |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r[0]} | {1e3 * r[1]:.2f} | {1e3 * r[2]:.2f} | {1e3 * r[3]:.2f} | {r[4]} | {r[5]:.2f} | "
                     f"{r[1] / adam_mean:.3f} |")
    lines += ["", f"foreach vs per-tensor ESGD-Max on {dev}: max parameter difference after 6 steps {max_diff:.2e}"]
    text = "\n".join(lines)
    print(text)
    if cfg.output:
        with open(cfg.output, "a") as f:
            f.write(text + "\n\n")
    return text


if __name__ == "__main__":
    main(tyro.cli(StepBenchConfig))
