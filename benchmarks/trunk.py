"""Benchmarks (1)-(3) on the GARF trunk, pure torch (runs without nerfstudio).

(1) step overhead: ESGD-Max vs Adam, mean training-step time over windows holding curvature steps.
(2) curvature step cost: one Hessian-vector product (with its gradient) by double backward, against
    one plain forward + backward: time and peak memory.
(3) optimizer update cost: ESGD-Max foreach vs per-tensor loop vs torch.optim.Adam(foreach=True/False).
"""

from __future__ import annotations

import copy
from typing import Dict, List, Tuple

import torch

from benchmarks.common import (
    Timer,
    TrunkSpec,
    interleaved_medians,
    is_cuda,
    make_batch,
    make_trunk,
    mse,
    peak_memory,
    section,
    step_stats,
    table,
)
from gnerf.optim.curvature import hessian_vector_product, rademacher_like
from gnerf.optim.defaults import PAPER
from gnerf.optim.esgd import ESGDMax, esgd
from gnerf.optim.step import take_step

# Dense FP32 peaks (no tensor cores; TF32 is several times more) of the cards gnerf's GPU benchmarks ran on, in FLOP/s:
# NVIDIA's data sheets for the SXM parts (the H100 PCIe: 51 TFLOP/s).
FP32_PEAK = {"H100 PCIe": 51e12, "H100": 67e12, "H200": 67e12}


def matmul_flops(net: torch.nn.Module, points: int) -> float:
    """FLOPs of the linear layers in one forward + backward over ``points`` (2 per multiply-add; backward 2x)."""
    return 6.0 * points * sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear))


def fp32_peak(device: str) -> float:
    """The card's FP32 peak from :data:`FP32_PEAK` (NaN for a CPU or another card)."""
    if not is_cuda(device):
        return float("nan")
    name = torch.cuda.get_device_name()
    return next((v for k, v in FP32_PEAK.items() if k in name), float("nan"))


def train_step(net, opt, x, y) -> bool:
    """One step of the curvature protocol; returns whether it was a curvature step."""
    opt.zero_grad(set_to_none=True)
    return take_step(opt, lambda create_graph: mse(net(x), y))[1]


def step_overhead(
    spec: TrunkSpec,
    rounds: int = 3,
    block: int = PAPER.precondition_frequency,
    foreach: bool = True,
    warmup_steps: int = PAPER.precondition_warmup_steps,
) -> Tuple[str, Dict]:
    """(1): Adam and ESGD-Max (paper cadence: 50 warm-up curvature steps, then one in ``block``=100)
    train copies of one trunk in this process, one step each in turn after the warm-up, over
    ``rounds`` x ``block`` steps each, so ESGD-Max's window holds exactly ``rounds`` curvature steps and
    machine noise hits both alike."""
    dev = spec.device
    torch.manual_seed(spec.seed)
    base = make_trunk(spec).to(dev)
    x, y = make_batch(spec)
    nets = {"Adam": copy.deepcopy(base), "ESGD-Max": copy.deepcopy(base)}
    opts = {
        "Adam": torch.optim.Adam(nets["Adam"].parameters(), lr=1e-4, foreach=foreach),
        "ESGD-Max": ESGDMax(
            nets["ESGD-Max"].parameters(),
            lr=PAPER.nerf_lr,
            precondition_warmup_steps=warmup_steps,
            precondition_frequency=block,
            foreach=foreach,
        ),
    }
    for name in opts:  # warm-up: ESGD-Max's 50 curvature warm-up steps, caches, allocator
        for _ in range(warmup_steps):
            train_step(nets[name], opts[name], x, y)
    times: Dict[str, List[Tuple[float, bool]]] = {k: [] for k in opts}
    peaks = {k: 0.0 for k in opts}
    for i in range(rounds * block):  # step by step in turn (order swapped each step): noise hits both alike
        for name in list(opts) if i % 2 == 0 else list(opts)[::-1]:
            if is_cuda(dev):
                torch.cuda.reset_peak_memory_stats()
            with Timer(dev) as t:
                curv = train_step(nets[name], opts[name], x, y)
            times[name].append((t.seconds, curv))
            if is_cuda(dev):
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 2**30)
    finite = all(torch.isfinite(p).all().item() for n in nets.values() for p in n.parameters())
    stats = {}
    for name, ts in times.items():
        stats[name] = dict(step_stats(ts), peak=peaks[name] if is_cuda(dev) else float("nan"))
    a, e = stats["Adam"], stats["ESGD-Max"]
    ratio = e["mean"] / a["mean"]
    floor = 1 + (e["curv"] - e["plain"]) / (block * a["mean"])
    rows = [
        (
            k,
            1e3 * s["mean"],
            1e3 * s["plain"],
            1e3 * s["curv"],
            f"{s['n_curv']} / {s['n']}",
            s["peak"],
            s["mean"] / a["mean"],
        )
        for k, s in stats.items()
    ]
    body = table(
        [
            "optimizer",
            "mean step (ms)",
            "plain step (ms)",
            "curvature step (ms)",
            "curvature steps / timed",
            "peak memory (GiB)",
            "mean step / Adam",
        ],
        rows,
    )
    notes = [
        f"**ratio ESGD-Max / Adam = {ratio:.3f}** (goal <= 1.05); floor 1 + (curvature - plain) / "
        f"({block} x Adam step) = {floor:.3f}; plain-step ratio {e['plain'] / a['plain']:.3f}",
        f"{rounds * block} timed steps each, the two optimizers stepping in turn, after "
        f"{warmup_steps} warm-up steps; peak memory of the process while that optimizer steps "
        f"(both models resident); "
        f"foreach={foreach} for both; ESGD-Max lr 1, Adam lr 1e-4; loss MSE against random targets (stands in "
        f"for the renderer); parameters finite at the end: {finite}",
    ]
    flops = matmul_flops(base, spec.points)
    peak = fp32_peak(dev)
    notes.append(
        f"trunk matmuls: {flops / 1e9:.1f} GFLOP per plain step (forward + backward); Adam's plain step achieves "
        f"**{flops / a['plain'] / 1e12:.3g} TFLOP/s**"
        + (
            f", {100 * flops / a['plain'] / peak:.0f}% of the card's FP32 peak ({peak / 1e12:.0f} TFLOP/s)"
            if peak == peak
            else ""
        )
    )
    return section("(1) Step overhead: ESGD-Max vs Adam", spec.describe(), body, notes), dict(
        ratio=ratio, floor=floor, **{k: v for k, v in stats.items()}
    )


def curvature_cost(spec: TrunkSpec, reps: int = 10) -> Tuple[str, Dict]:
    """(2): a curvature step's gradient + ``H v`` by double backward, vs a plain forward + backward; interleaved
    medians, and peak memory above the parameters and batch (GPU)."""
    dev = spec.device
    torch.manual_seed(spec.seed)
    net = make_trunk(spec).to(dev)
    x, y = make_batch(spec)
    params = list(net.parameters())
    vs = rademacher_like(params)

    def plain():
        return torch.autograd.grad(mse(net(x), y), params)

    def double_backward():
        grads = torch.autograd.grad(mse(net(x), y), params, create_graph=True)
        return grads, hessian_vector_product(params, grads, vs)

    fns = {"plain forward + backward": plain, "double backward (grad + Hv)": double_backward}
    med = interleaved_medians(fns, dev, reps)
    mem = {k: peak_memory(fn, dev) for k, fn in fns.items()}
    base = med["plain forward + backward"]
    rows = [(k, 1e3 * t, t / base, mem[k]) for k, t in med.items()]
    body = table(["computation", "median time (ms)", "time / plain", "peak memory (GiB)"], rows)
    db = med["double backward (grad + Hv)"]
    notes = [
        f"**double backward / plain = {db / base:.2f}**",
        f"{reps} interleaved repetitions (median) after 2 warm-up rounds; peak memory is measured above the "
        "parameters and batch (GPU only)",
        "the double-backward row computes what a curvature step needs, the gradient and Hv: "
        "backward(create_graph=True) + one more backward",
    ]
    return (
        section("(2) Curvature step cost: one Hessian-vector product", spec.describe(), body, notes),
        dict(plain=base, double_backward=db, mem=mem),
    )


def update_cost(spec: TrunkSpec, reps: int = 50) -> Tuple[str, Dict]:
    """(3): the optimizer update alone (gradients given) on the trunk's parameters."""
    dev = spec.device
    torch.manual_seed(spec.seed)
    base = make_trunk(spec).to(dev)
    n_params = sum(p.numel() for p in base.parameters())

    def params_with_grads():
        ps = [p.detach().clone().requires_grad_(True) for p in base.parameters()]
        for p in ps:
            p.grad = torch.randn_like(p) * 1e-3
        return ps

    def esgd_step(foreach):
        ps = params_with_grads()
        opt = ESGDMax(ps, lr=PAPER.nerf_lr, precondition_warmup_steps=0, precondition_frequency=10**9, foreach=foreach)
        for p in ps:  # past the curvature step: plain updates only
            opt.state[p].update(
                step=torch.tensor(1.0),
                curvature_updates=torch.tensor(1.0),
                exp_avg=torch.zeros_like(p),
                curvature=torch.ones_like(p),
            )
        return opt.step

    def esgd_curvature_update(foreach):
        ps = params_with_grads()
        grads = [p.grad for p in ps]
        ms = [torch.zeros_like(p) for p in ps]
        ds = [torch.ones_like(p) for p in ps]
        hv = [torch.randn_like(p) for p in ps]
        steps, updates = ([torch.tensor(1.0) for _ in ps] for _ in range(2))
        return lambda: esgd(
            ps,
            grads,
            ms,
            ds,
            hv,
            steps,
            updates,
            lr=PAPER.nerf_lr,
            beta1=PAPER.betas[0],
            beta2=PAPER.betas[1],
            eps=PAPER.eps,
            weight_decay=0.0,
            lr_warmup=PAPER.lr_warmup,
            use_max=True,
            foreach=foreach,
        )

    def adam_step(foreach):
        opt = torch.optim.Adam(params_with_grads(), lr=1e-4, foreach=foreach)
        opt.step()  # creates the state
        return opt.step

    with torch.no_grad():
        fns = {
            "ESGD-Max step, foreach": esgd_step(True),
            "ESGD-Max step, per-tensor loop": esgd_step(False),
            "Adam(foreach=True) step": adam_step(True),
            "Adam(foreach=False) step": adam_step(False),
            "ESGD-Max curvature update (Hv given), foreach": esgd_curvature_update(True),
            "ESGD-Max curvature update (Hv given), per-tensor loop": esgd_curvature_update(False),
        }
        med = interleaved_medians(fns, dev, reps, warmup=3)
    ref = med["Adam(foreach=True) step"]
    rows = [(k, 1e3 * t, t / ref) for k, t in med.items()]
    body = table(["update", "median time (ms)", "time / Adam(foreach=True)"], rows)
    f, l = med["ESGD-Max step, foreach"], med["ESGD-Max step, per-tensor loop"]
    notes = [
        f"**ESGD-Max foreach / per-tensor loop = {f / l:.2f}; ESGD-Max foreach / Adam(foreach=True) = {f / ref:.2f}**",
        f"{len(list(base.parameters()))} tensors, {n_params:,} parameters; {reps} interleaved repetitions (median); "
        "optimizer.step() with gradients already in .grad (no forward / backward)",
    ]
    return (
        section("(3) Optimizer update cost", f"parameters of the GARF trunk {spec.layers} x {spec.width}", body, notes),
        dict(med),
    )
