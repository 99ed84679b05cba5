"""Test PSNR of gaussian-nerf-esgd and gaussian-nerf-adam on lego against steps and training wall time.

Both registered methods are built in this one process at the paper's size (2048 rays x 128 samples
per step, the registered 9 x 256 Gaussian trunk with its skip, direction and colour sizes, ESGD-Max's
curvature cadence, both learning-rate schedules as registered for 200,000 steps) with
``benchmarks.recipes.method_config`` and trained by the real ``CurvatureTrainer.train_iteration``, each
for the same budget of training wall time. The two trainers take turns of up to ``--chunk`` steps
(order swapped every round), each method's clock counting only its own steps (the device is
synchronised at the start and end of every turn), so drifts of the machine hit both alike.

Test PSNR is the mean over ``--views`` fixed views of the test split (evenly spaced; lego's
r_0, r_50, r_100, r_150 by default), rendered at ``--eval-scale`` of the training resolution against the
area-downscaled ground truth, off the training clock. It is measured at log-spaced steps (10, 20, 30,
50, 100, 200, ...; also every ``--every`` steps), at ``--time-marks`` evenly spaced points of the budget, and
when the budget runs out. The report also gives the first evaluated step above 12 dB (leaving the initial
plateau of a constant image) and each method's PSNR within the shortest method's training time.
``--methods ... vanilla-nerf-coarse`` adds nerfstudio's vanilla-nerf (coarse network only, see
``benchmarks/nerf.py``) at the same rays x samples.

Writes ``OUT/NAME.md`` (PSNR against steps and against training time, the machine and the date),
``OUT/NAME.png`` (both curves) and ``OUT/NAME.json`` (every evaluation), NAME being ``--name`` (lego_gpu),
rewriting the markdown and JSON after every evaluation so that a run stopped early still leaves its tables.

    python -m benchmarks.gpu.lego_convergence --budget 140 --deadline 380 --out $OUT  # a GPU (see README.md here)
    python -m benchmarks.gpu.lego_convergence --device cpu --budget 20 --rays 64 --samples 16 \\
        --hidden 32 --layers 3 --image-scale 0.1 --out /tmp/lego                # a quick CPU rehearsal
    python -m benchmarks.gpu.lego_convergence --device cpu --image-scale 0.25 --rays 128 --samples 64 \\
        --methods gaussian-nerf-esgd gaussian-nerf-adam vanilla-nerf-coarse --budget 100000 --max-steps 2000 \\
        --every 100 --views 2 --eval-scale 0.5 --deadline 5700 --out docs/lego_cpu --name lego_cpu  # 2-core CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from benchmarks.common import SHARED_DATA, interrupt_on_sigterm, machine, sync, table, tf32_matmuls
from benchmarks.nerf import TestViews
from gnerf.files import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[2]

METHODS = ("gaussian-nerf-esgd", "gaussian-nerf-adam")  # the registered methods, trained by default
VANILLA = "vanilla-nerf-coarse"  # nerfstudio's vanilla-nerf, coarse network only (benchmarks.nerf), on request
LR_SCALE_HELP = (
    "every learning rate of every method times this (optimizers' lrs and schedules' absolute lrs, so the ratios "
    "stay as registered; 1: the registered lrs): a learning-rate screen"
)


def lr_scale(text: str) -> float:
    """The ``--lr-scale`` argument: a finite number > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number (1: the registered lrs)")
    return value


TF32 = "gaussian-nerf-esgd+tf32"  # the same method with TF32 matmuls (a GPU's tensor cores), on request
PLATEAU_DB = 12.0  # a constant (background-coloured) image scores about 10.8 dB on lego's test views
CARRIED_DATA = ROOT / ".gpu-data" / "lego"  # written by benchmarks/gpu/prepare.sh
SHARED_LEGO = SHARED_DATA / "nerf_synthetic" / "lego"
SCHEDULE_STEPS = 200_000  # the registered max_num_iterations: the lr schedules as registered


def default_data() -> Path:
    return CARRIED_DATA if (CARRIED_DATA / "transforms_train.json").exists() else SHARED_LEGO


def step_marks(limit: int) -> List[int]:
    """Log-spaced steps 10, 20, 30, 50, 100, 200, 300, 500, ... up to ``limit``."""
    marks, scale = [], 10
    while scale <= limit:
        marks += [m * scale for m in (1, 2, 3, 5) if m * scale <= limit]
        scale *= 10
    return marks


@dataclasses.dataclass
class Evaluation:
    step: int
    seconds: float  # this method's training wall time so far
    psnr: float
    why: str  # "step", "time" or "end"
    ssim: Optional[float] = None  # mean SSIM over the same views
    cpu_seconds: Optional[float] = None  # this process's CPU time in this method's training so far (all threads)
    load: Optional[float] = None  # the machine's 1-minute load average when evaluated (None where unknown)


def build(method: str, args, out: Path):
    """The registered method at the sizes asked, set up on the train and test splits (LPIPS never built).

    ``VANILLA``: nerfstudio's coarse vanilla-nerf at the same rays, samples and image scale (its own field,
    positional encoding and RAdam 5e-4), seeded with nerfstudio's default seed 42; ``cfg`` is then None.
    """
    from benchmarks.nerf import NerfSize, offline_lpips, scale_lrs
    from benchmarks.nerf import build as build_nerf
    from benchmarks.recipes import method_config, setup_trainer
    from gnerf.nerf.model import GaussianNeRFModelConfig, skip_connections_for

    method = method.removesuffix("+tf32")  # TF32 is switched on around each of its turns (turn())
    if method == VANILLA:
        sz = NerfSize(args.rays, args.samples, args.image_scale, cadence=(0, 0))
        trainer = build_nerf(
            "vanilla-nerf (coarse)",
            args.data,
            out,
            sz,
            args.schedule_steps,
            args.device,
            test_mode="test",
            lr_scale=args.lr_scale,
        )
        trainer.pipeline.model.config.eval_num_rays_per_chunk = args.eval_chunk
        return trainer, None
    registered = GaussianNeRFModelConfig()
    layers = args.layers or registered.num_layers
    cfg = method_config(
        method,
        args.data,
        out,
        iterations=args.schedule_steps,
        rays=args.rays,
        samples=args.samples,
        hidden_dim=args.hidden or registered.hidden_dim,
        num_layers=layers,
        skip_connections=skip_connections_for(layers),
        image_scale=args.image_scale,
        device=args.device,
        experiment_name=method,
    )
    if args.lr_warmup is not None and hasattr(cfg.optimizers["fields"]["optimizer"], "lr_warmup"):
        group = cfg.optimizers["fields"]
        group["optimizer"] = dataclasses.replace(group["optimizer"], lr_warmup=args.lr_warmup)
    scale_lrs(cfg, args.lr_scale)
    cfg.logging.local_writer.enable = False
    cfg.machine = dataclasses.replace(cfg.machine, seed=args.seed)
    with offline_lpips():  # gnerf's model builds LPIPS lazily, at its first image metric: never here
        trainer = setup_trainer(cfg, test_mode="test")
    trainer.pipeline.train()
    trainer.pipeline.model.config.eval_num_rays_per_chunk = args.eval_chunk
    return trainer, cfg


def warm_up(trainer, device: str) -> None:
    """One forward and backward pass, no optimizer step, so that start-up costs fall on neither clock."""
    _, loss_dict, _ = trainer.pipeline.get_train_loss_dict(step=0)
    sum(loss_dict.values()).backward()
    trainer.optimizers.zero_grad_all()
    sync(device)


@dataclasses.dataclass
class Run:
    method: str
    trainer: object
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time over this method's training steps
    curve: List[Evaluation] = dataclasses.field(default_factory=list)
    stopped: Optional[str] = None  # why training ended early (a NaN loss), else None
    done: bool = False
    rng: Optional[Dict[str, object]] = None  # this run's torch RNG state between its turns (its rays, its noise)
    resumed_from: List[int] = dataclasses.field(default_factory=list)  # steps it was resumed at from a checkpoint


def rng_state() -> Dict[str, object]:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: Dict[str, object]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def turn(run: Run, args, marks: Sequence[int], time_marks: Sequence[float], views: TestViews) -> None:
    """Up to ``args.chunk`` steps of one method, ending early at an evaluation mark or the budget."""
    next_mark = next((m for m in marks if m > run.steps), None)
    next_time = next((t for t in time_marks if t > run.seconds), None)
    limit = run.steps + args.chunk if next_mark is None else min(run.steps + args.chunk, next_mark)
    if args.max_steps:
        limit = min(limit, args.max_steps)
    set_rng_state(run.rng)  # each run draws from its own stream, whatever the turns' order
    try:
        with tf32_matmuls(run.method == TF32):  # training and evaluation alike
            _turn(run, args, marks, next_mark, next_time, limit, views)
    finally:
        run.rng = rng_state()


def _turn(
    run: Run,
    args,
    marks: Sequence[int],
    next_mark: Optional[int],
    next_time: Optional[float],
    limit: int,
    views: TestViews,
) -> None:
    from gnerf.nerf.trainer import NonFiniteLossError

    trainer, device = run.trainer, args.device
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    why = None
    try:
        while run.steps < limit:
            trainer.train_iteration(run.steps)
            run.steps += 1
            elapsed = run.seconds + time.perf_counter() - t0  # the trainer synchronises every 10 steps
            if elapsed >= args.budget:
                why = "end"
                break
            if next_time is not None and elapsed >= next_time:
                why = "time"
                break
    except NonFiniteLossError as err:
        run.stopped, why = f"stopped at step {run.steps}: {err}", "end"
    sync(device)
    run.seconds += time.perf_counter() - t0
    run.cpu_seconds += time.process_time() - c0
    if run.steps in marks and why is None:
        why = "step"
    if args.max_steps and run.steps >= args.max_steps:
        why = "end"
    if why == "end":
        run.done = True
    if why is not None and run.curve and run.curve[-1].step == run.steps:  # already evaluated at this step
        if why == "end":
            run.curve[-1].why = "end"
    elif why is not None:
        evaluate(run, views, why, diverged=run.stopped is not None)  # here only a NaN loss sets stopped


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def evaluate(run: Run, views: TestViews, why: str, diverged: bool = False) -> Evaluation:
    """Test PSNR and SSIM of the run where it stands (NaN if its loss diverged), appended to its curve."""
    nan = float("nan")
    m = {"psnr": nan, "ssim": nan} if diverged else views.metrics(run.trainer)
    e = Evaluation(run.steps, run.seconds, m["psnr"], why, m["ssim"], run.cpu_seconds, load_average())
    run.curve.append(e)
    print(
        f"{run.method}: step {run.steps}, {run.seconds:.1f} s, test PSNR {e.psnr:.2f} dB, SSIM {e.ssim:.3f} ({why})",
        flush=True,
    )
    return e


def stop(run: Run, views: TestViews, why: str) -> None:
    """End a run before its budget, evaluating it where it stands."""
    run.done, run.stopped = True, why
    if run.curve and run.curve[-1].step == run.steps:
        run.curve[-1].why = "end"
    else:
        evaluate(run, views, "end")
    print(f"{run.method}: {why}; step {run.steps}, test PSNR {run.curve[-1].psnr:.2f} dB", flush=True)


def lookup(curve: Sequence[Evaluation], step: Optional[int] = None, why: Optional[str] = None) -> List[Evaluation]:
    return [e for e in curve if (step is None or e.step == step) and (why is None or e.why == why)]


def _db(psnr: float) -> str:
    return f"{psnr:.2f}" if math.isfinite(psnr) else "n/a"


def report(
    runs: Dict[str, Run], args, views: TestViews, marks: Sequence[int], train_px: int, started: str, final: bool
) -> str:
    lines = [f"# Test PSNR on lego against steps and training time: {' vs '.join(runs)}", ""]
    lines.append(
        f"{started} (UTC), {machine(args.device)}. {'Complete' if final else 'Partial (written while training)'}."
    )
    lines.append("")
    lines.append(
        f"Data `{args.data}`: {train_px}x{train_px} px training images (scale {args.image_scale}), "
        f"{len(runs[next(iter(runs))].trainer.pipeline.datamanager.train_dataset)} training views; test PSNR "
        f"is the mean over {len(views.indices)} test views ({', '.join(views.names)}) rendered at "
        f"{views.width}x{views.height} px against the area-downscaled ground truth, off the training clock. "
        f"{args.rays} rays x {args.samples} samples per step; trunk {args.layers_used} x {args.hidden_used} "
        f"(registered skip / direction / colour sizes when at the registered depth); learning-rate schedules as "
        f"registered for {args.schedule_steps:,} steps (these are a run's first steps); training budget "
        f"{args.budget:.0f} s of wall time per method, the methods taking turns of up to {args.chunk} steps; "
        f"seed {args.seed}"
        + (f"; ESGD-Max lr warm-up base {args.lr_warmup}" if args.lr_warmup is not None else "")
        + (f"; **every learning rate x {args.lr_scale:g}** (--lr-scale)" if args.lr_scale != 1.0 else "")
        + "."
    )
    lines.append("")
    summary = []
    for m, r in runs.items():
        end = r.curve[-1] if r.curve else None
        ms = 1e3 * r.seconds / r.steps if r.steps else float("nan")
        summary.append(
            (
                m,
                r.steps,
                f"{r.seconds:.1f}",
                f"{ms:.1f}",
                _db(end.psnr if end else float("nan")),
                _db(max((e.psnr for e in r.curve), default=float("nan"))),
                r.stopped or "",
            )
        )
    lines.append(
        table(
            [
                "method",
                "steps",
                "training time (s)",
                "mean step (ms)",
                "final test PSNR (dB)",
                "best test PSNR (dB)",
                "note",
            ],
            summary,
        )
    )
    lines += [
        "",
        "## Leaving the plateau and equal wall time",
        "",
        f"First evaluated step with test PSNR above {PLATEAU_DB:.0f} dB (a constant image scores about 10.8 dB), "
        "and each method's last evaluation within the shortest method's training time:",
        "",
    ]
    equal_t = min((r.curve[-1].seconds for r in runs.values() if r.curve), default=0.0)
    rows = []
    for m, r in runs.items():
        left = next((e for e in r.curve if e.psnr > PLATEAU_DB), None)
        at_t = [e for e in r.curve if e.seconds <= equal_t + 1e-9]
        e_t = at_t[-1] if at_t else None
        rows.append(
            (
                m,
                f"step {left.step} ({left.seconds:.0f} s)" if left else f"not by step {r.steps}",
                f"{e_t.seconds:.0f}" if e_t else "",
                e_t.step if e_t else "",
                _db(e_t.psnr) if e_t else "",
            )
        )
    lines.append(
        table(
            [
                "method",
                f"first test PSNR > {PLATEAU_DB:.0f} dB",
                "time (s)",
                "step",
                f"test PSNR (dB) within {equal_t:.0f} s",
            ],
            rows,
        )
    )
    lines += ["", "## Test PSNR against steps", ""]
    marked = set(marks)
    steps = sorted({e.step for r in runs.values() for e in r.curve if e.step in marked})
    rows = []
    for s in steps:
        row: List[object] = [s]
        for r in runs.values():
            e = lookup(r.curve, step=s)
            row += [f"{e[0].seconds:.1f}", _db(e[0].psnr)] if e else ["", ""]
        rows.append(row)
    headers = ["step"]
    for m in runs:
        headers += [f"{m} time (s)", f"{m} PSNR (dB)"]
    lines.append(table(headers, rows) if rows else "(no step mark reached yet)")
    lines += [
        "",
        "## Test PSNR against training wall time",
        "",
        "At evenly spaced points of the budget (each method evaluated at its first step past the point) "
        "and where the budget ran out.",
        "",
    ]
    timed = {m: lookup(r.curve, why="time") + lookup(r.curve, why="end") for m, r in runs.items()}
    rows = []
    for k in range(max((len(v) for v in timed.values()), default=0)):
        row = []
        for m in runs:
            e = timed[m][k] if k < len(timed[m]) else None
            row += [f"{e.seconds:.1f}", e.step, _db(e.psnr)] if e else ["", "", ""]
        rows.append(row)
    headers = []
    for m in runs:
        headers += [f"{m} time (s)", f"{m} step", f"{m} PSNR (dB)"]
    lines.append(table(headers, rows) if rows else "(no time mark reached yet)")
    lines += ["", "Command: `" + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) + "`", ""]
    return "\n".join(lines)


def plot(runs: Dict[str, Run], path: Path, title: str) -> None:
    """Test PSNR against steps (log) and against training wall time, one line per method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=(11, 4))
    for m, r in runs.items():
        pts = sorted((e.step, e.seconds, e.psnr) for e in r.curve if math.isfinite(e.psnr))
        if not pts:
            continue
        ax_s.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", ms=3, label=m)
        ax_t.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", ms=3, label=m)
    ax_s.set_xscale("log")
    ax_s.set_xlabel("training step")
    ax_t.set_xlabel("training wall time (s)")
    for ax in (ax_s, ax_t):
        ax.set_ylabel("test PSNR (dB)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(title, fontsize=9)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", type=Path, default=default_data(), help="Blender-format lego (train and test splits)")
    p.add_argument("--out", type=Path, default=Path("outputs/lego_gpu"), help="folder for NAME.md/.png/.json")
    p.add_argument("--name", default="lego_gpu", help="file name (stem) of the report, figure and JSON")
    p.add_argument("--budget", type=float, default=140.0, help="seconds of training wall time per method")
    p.add_argument(
        "--deadline",
        type=float,
        default=0.0,
        help="stop both methods once the script has run this many seconds, set-up included (0: none)",
    )
    p.add_argument("--max-steps", type=int, default=0, help="also stop each method after this many steps (0: none)")
    from benchmarks.recipes import METHODS as REGISTERED  # every registered Gaussian-NeRF method

    p.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=REGISTERED + (VANILLA, TF32),
        help=f"{VANILLA}: also nerfstudio's vanilla-nerf, coarse network only, at the same rays x samples; "
        f"{TF32}: gaussian-nerf-esgd with TF32 matmuls (GPU tensor cores), its curvature steps too",
    )
    p.add_argument("--every", type=int, default=0, help="also evaluate every this many steps (0: log-spaced only)")
    p.add_argument("--rays", type=int, default=2048)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--hidden", type=int, default=0, help="trunk width (0: registered, 256)")
    p.add_argument("--layers", type=int, default=0, help="trunk linear layers (0: registered, 9)")
    p.add_argument("--image-scale", type=float, default=1.0, help="training resolution / the images' own")
    p.add_argument("--views", type=int, default=4, help="test views, evenly spaced over the test split")
    p.add_argument("--eval-scale", type=float, default=0.5, help="evaluation resolution / training resolution")
    p.add_argument("--eval-chunk", type=int, default=16384, help="rays rendered at once when evaluating")
    p.add_argument("--time-marks", type=int, default=8, help="evaluations at evenly spaced points of the budget")
    p.add_argument("--chunk", type=int, default=100, help="most steps of one method before the other's turn")
    p.add_argument(
        "--schedule-steps",
        type=int,
        default=SCHEDULE_STEPS,
        help="length of the lr schedules (registered: 200,000; fewer compresses the decay)",
    )
    p.add_argument("--seed", type=int, default=42, help="nerfstudio's machine seed (registered: 42)")
    p.add_argument(
        "--lr-warmup",
        type=float,
        default=None,
        help="ESGD-Max's lr warm-up base (step x 1 - base^k; registered 0.99; 0 turns it off)",
    )
    p.add_argument("--lr-scale", type=lr_scale, default=1.0, help=LR_SCALE_HELP)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.budget <= 0 or args.views < 1 or not 0 < args.eval_scale <= 1 or args.chunk < 1:
        p.error("--budget, --views, --chunk must be positive and --eval-scale in (0, 1]")
    if not (args.data / "transforms_train.json").exists() or not (args.data / "transforms_test.json").exists():
        p.error(
            f"{args.data} is not a Blender-format scene with train and test splits; run "
            "`bash benchmarks/gpu/prepare.sh` or pass --data"
        )
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Run]:
    args = parse(argv)
    # nerfstudio 1.1.5 under torch >= 2.6 warns on every import and camera call: keep the output readable
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"nerfstudio\.")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    last = args.max_steps or 10**6
    marks = sorted(set(step_marks(last)) | set(range(args.every, last + 1, args.every) if args.every > 0 else ()))
    time_marks = [args.budget * (k + 1) / args.time_marks for k in range(args.time_marks - 1)]
    runs: Dict[str, Run] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for i, m in enumerate(args.methods):
            trainer, configs[m] = build(m, args, Path(tmp) / str(i))
            runs[m] = Run(m, trainer)
        gaussian = next((c for c in configs.values() if c is not None), None)
        model_cfg = gaussian.pipeline.model if gaussian is not None else None
        args.layers_used = model_cfg.num_layers if model_cfg else args.layers
        args.hidden_used = model_cfg.hidden_dim if model_cfg else args.hidden
        first = runs[args.methods[0]].trainer
        views = TestViews(first, args.views, args.eval_scale)
        train_px = int(first.pipeline.datamanager.train_dataset.cameras.width[0].item())
        for r in runs.values():
            warm_up(r.trainer, args.device)
            torch.manual_seed(args.seed)  # every run starts training from the same RNG state
            r.rng = rng_state()
        print(
            f"set up in {time.perf_counter() - t_start:.1f} s on {machine(args.device)}; training "
            f"{' and '.join(runs)} for {args.budget:.0f} s each at {train_px}x{train_px} px, {args.rays} rays x "
            f"{args.samples} samples",
            flush=True,
        )
        md, rounds = args.out / f"{args.name}.md", 0
        try:
            while not all(r.done for r in runs.values()):
                if args.deadline and time.perf_counter() - t_start > args.deadline:
                    for r in runs.values():
                        if not r.done:
                            stop(r, views, f"stopped by --deadline {args.deadline:.0f} after {r.seconds:.0f} s")
                    break
                order = list(runs.values()) if rounds % 2 == 0 else list(runs.values())[::-1]
                for r in order:
                    if not r.done:
                        n = len(r.curve)
                        turn(r, args, marks, time_marks, views)
                        if len(r.curve) > n:
                            atomic_write_bytes(
                                md, report(runs, args, views, marks, train_px, started, final=False).encode()
                            )
                rounds += 1
        finally:
            data = {
                m: {
                    "steps": r.steps,
                    "seconds": r.seconds,
                    "stopped": r.stopped,
                    "curve": [dataclasses.asdict(e) for e in r.curve],
                }
                for m, r in runs.items()
            }
            data["machine"], data["started_utc"], data["argv"] = machine(args.device), started, sys.argv[1:]
            atomic_write_bytes(args.out / f"{args.name}.json", json.dumps(data, indent=1).encode())
            complete = all(r.done for r in runs.values())
            atomic_write_bytes(md, report(runs, args, views, marks, train_px, started, final=complete).encode())
            plot(
                runs,
                args.out / f"{args.name}.png",
                f"lego {train_px}px, {args.rays} rays x {args.samples} samples, {machine(args.device)}",
            )
    print(
        f"wrote {md}, {md.with_suffix('.png')}, {md.with_suffix('.json')} "
        f"({time.perf_counter() - t_start:.0f} s in all)",
        flush=True,
    )
    return runs


if __name__ == "__main__":
    interrupt_on_sigterm()  # stopped from outside (run_until, timeout): write what was measured
    main()
