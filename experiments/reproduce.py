"""Reproduce the paper's image and shape comparisons and write ``docs/reproduction.md``.

    python -m experiments.reproduce --quick     # this CPU: reduced sizes, labelled as such in the report
    python -m experiments.reproduce             # the paper's protocols (hours: meant for a GPU)
    python -m experiments.reproduce --tasks image --images kodim01 kodim02 --activations gaussian

Every run is an ordinary fitting run (``gnerf-fit-image`` / ``gnerf-fit-occupancy``) with the paper's
hyperparameters for its optimizer and activation, run as its own job (submitit: local processes by
default, ``--cluster slurm`` with ``--slurm-partition`` and ``--timeout-min``) by the resumable grid of
:mod:`experiments.compare`. A failed run is listed in the report with its error line; an
interrupted reproduction continues where it stopped; rerunning with ``--plot-only`` rebuilds the
report from the runs on disk. The report holds, per task, the
metric (PSNR or IoU) at a few epochs as mean [min-max] over instances and seeds, figures of the
metric against epochs and against training wall time (mean line, min-max band), and a statement
computed from those numbers of which of the paper's claims hold here.

Protocols (supplementary 4.1-4.2 and the configurations published with the paper):

- images: every Kodak photo in ``../shared/data/images/kodak`` resized to 256 x 256, 5-layer
  256-wide networks, minibatches of 512 pixels, 200 epochs (25,600 steps);
- shapes: the bunny and the dragon, 1M points (a third uniform, two thirds near the surface with
  sigma 0.1 and 0.01), minibatches of 50,000 points, 200 epochs (4,000 steps).

``--quick`` keeps the networks and shrinks the data to fit a 2-core CPU in about half an hour: four
photos at 64 x 64 for 200 epochs (1,600 steps), and shapes of 20,000 points in minibatches of 1,000
(20 steps per epoch, as in the paper) for 50 epochs.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.common import SHARED_DATA, machine, today
from experiments.compare import CompareConfig, failures, failures_markdown, read_results, run_comparison
from gnerf.files import atomic_write_bytes
from gnerf.optim import OPTIMIZERS
from gnerf.tasks.build import ADAM_EPOCHS

ROOT = Path(__file__).resolve().parents[1]

DATA = SHARED_DATA
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the fitting runs train (their device default)
METRIC = {"image": ("psnr", "PSNR (dB)"), "occupancy": ("iou", "IoU")}
ACT_NAMES = {"gaussian": "Gaussian", "sine": "sine", "wavelet": "wavelet", "relu": "ReLU + PE"}
#: What the paper claims per activation: which optimizer ends ahead (supplementary Figs. 1-9, 11).
PAPER_WINNER = {"gaussian": "esgd", "sine": "esgd", "wavelet": "esgd", "relu": "adam"}

PROTOCOLS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "paper": {
        "image": dict(size=(256, 256), epochs=200, batch_size=512),
        "occupancy": dict(num_points=1_000_000, num_eval_points=100_000, batch_size=50_000, epochs=200,
                          resolution=128),
    },
    "quick": {
        "image": dict(size=(64, 64), epochs=200, batch_size=512),
        "occupancy": dict(num_points=20_000, num_eval_points=20_000, batch_size=1_000, epochs=50, resolution=64),
    },
}
QUICK_IMAGES = ("kodim01", "kodim02", "kodim03", "kodim04")


@dataclass
class ReproduceConfig:
    """Run the paper's image and shape comparisons (Adam vs ESGD per activation) and write a report."""

    quick: bool = False
    """Reduced data sizes for a 2-core CPU (see the module docstring); the report says so."""
    data_dir: Path = DATA
    """Holds images/kodak/<stem>.png and shapes/<stem>.obj."""
    tasks: Tuple[str, ...] = ("image", "occupancy")
    """image and/or occupancy."""
    images: Tuple[str, ...] = ()
    """Kodak photos by stem (kodim01 ...); empty: all twelve (quick: kodim01-kodim04)."""
    shapes: Tuple[str, ...] = ("bunny", "dragon")
    """Meshes in ../shared/data/shapes by stem."""
    activations: Tuple[str, ...] = ("gaussian", "sine", "wavelet", "relu")
    """Network activations (relu is the paper's ReLU + positional encoding)."""
    optimizers: Tuple[str, ...] = ("adam", "esgd")
    """Registered optimizer names; the first two are the pair the claims compare."""
    seeds: Tuple[int, ...] = (0,)
    """Seeds of every cell (initialisation, shuffling, probes)."""
    size: Optional[Tuple[int, int]] = None
    """Image size override (height, width); None: the protocol's."""
    epochs: Optional[int] = None
    """Epoch override for every task; None: the protocol's."""
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
    report: Optional[Path] = None
    """The markdown report to write; None: docs/reproduction.md (paper protocol) or
    docs/reproduction_quick.md (--quick). Give one whenever --size or --epochs change the protocol."""
    figure_dir: Path = ROOT / "docs" / "figures"
    """Where the report's figures go."""
    figure_prefix: str = ""
    """Prefix of the figure files; empty: reproduction_<protocol>."""
    plot_only: bool = False
    """Rebuild the report from the runs on disk without training."""


def task_grids(cfg: ReproduceConfig) -> List[CompareConfig]:
    """One :class:`CompareConfig` per task of ``cfg``."""
    protocol = PROTOCOLS["quick" if cfg.quick else "paper"]
    out_root = cfg.output_dir or Path("outputs") / ("reproduce-quick" if cfg.quick else "reproduce-paper")
    grids = []
    for task in cfg.tasks:
        if task not in METRIC:
            raise ValueError(f"--tasks: unknown task {task!r}; choose image and/or occupancy")
        if task == "image":
            stems = cfg.images or (QUICK_IMAGES if cfg.quick else tuple(f"kodim{i:02d}" for i in range(1, 13)))
            inputs = tuple(Path(cfg.data_dir) / "images" / "kodak" / f"{s}.png" for s in stems)
        else:
            inputs = tuple(Path(cfg.data_dir) / "shapes" / f"{s}.obj" for s in cfg.shapes)
        opts = dict(protocol[task])
        if cfg.size is not None and task == "image":
            opts["size"] = tuple(cfg.size)
        if cfg.epochs is not None:
            opts["epochs"] = cfg.epochs
        grids.append(CompareConfig(inputs=inputs, task=task, activations=cfg.activations, optimizers=cfg.optimizers,
                                   seeds=cfg.seeds, workers=cfg.workers, threads=cfg.threads, cluster=cfg.cluster,
                                   slurm_partition=cfg.slurm_partition, timeout_min=cfg.timeout_min,
                                   gpus_per_node=cfg.gpus_per_node,
                                   output_dir=Path(out_root) / task, plot_only=cfg.plot_only, **opts))
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
    return sum(1 for r in rows if r["activation"] == act and r["optimizer"] == opt and r["status"] == "diverged"
               and math.isnan(float(r["epoch"])))


def final_pairs(rows: Sequence[Dict[str, Any]], act: str, first: str, second: str) -> List[Tuple[float, float]]:
    """``(first, second)`` metric at the last epoch both reached, per instance and seed."""
    a, b = metric_by_run(rows, act, first), metric_by_run(rows, act, second)
    pairs = []
    for k in a:
        if k in b:
            e = min(max(a[k]), max(b[k]))
            pairs.append((a[k][e], b[k][e]))
    return pairs


def _fmt(v: float, metric: str) -> str:
    return f"{v:.3f}" if metric == "iou" else f"{v:.1f}"


def task_section(grid: CompareConfig, rows: Sequence[Dict[str, Any]], figure: Optional[Path], rel: str) -> str:
    """The markdown section of one task: protocol, tables, figure and claims."""
    metric, label = METRIC[grid.task]
    epochs = grid.epochs
    marks = sorted({1, max(1, epochs // 10), epochs // 4, epochs // 2, epochs} - {0})
    n_inst = len(grid.inputs)
    lines = [f"## {'Images' if grid.task == 'image' else 'Shapes'}", ""]
    if grid.task == "image":
        lines.append(f"Protocol: {n_inst} Kodak photo(s) ({', '.join(p.stem for p in grid.inputs)}) at "
                     f"{grid.size[0]} x {grid.size[1]}, minibatch {grid.batch_size}, {epochs} epochs "
                     f"({epochs * math.ceil(grid.size[0] * grid.size[1] / grid.batch_size):,} steps), "
                     f"{grid.num_layers}-layer {grid.hidden_dim}-wide networks, seeds {list(grid.seeds)}. "
                     "Metric: PSNR of the whole image after each epoch.")
    else:
        lines.append(f"Protocol: {', '.join(p.stem for p in grid.inputs)}, {grid.num_points:,} training points, "
                     f"minibatch {grid.batch_size:,}, {epochs} epochs "
                     f"({epochs * math.ceil(grid.num_points / grid.batch_size):,} steps), "
                     f"{grid.num_layers}-layer {grid.hidden_dim}-wide networks, seeds {list(grid.seeds)}. "
                     f"Metric: IoU on {grid.num_eval_points:,} held-out points drawn the same way.")
    lines += ["", f"{label} at epoch, mean [min-max] over instances and seeds:", ""]
    header = ("| activation | optimizer | " + " | ".join(f"epoch {e}" for e in marks)
              + " | train time (s) | diverged (NaN) |")
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
                    cells.append(f"{_fmt(c['mean'][i], metric)} [{_fmt(c['lo'][i], metric)}-{_fmt(c['hi'][i], metric)}]")
                else:
                    cells.append("-")
            t = f"{c['time'][-1]:.0f}" if c["time"] else "-"
            lines.append(f"| {ACT_NAMES.get(act, act)} | {opt} | " + " | ".join(cells)
                         + f" | {t} | {diverged(rows, act, opt)} |")
    if figure is not None:
        lines += ["", f"![{grid.task}]({rel})", ""]
    lines += claims(grid, rows)
    lines += variant_lines(grid, rows)
    return "\n".join(lines) + "\n"


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
            worst = max((adam[k][e] - runs[k][e], k, e) for k in keys for e in behind[k]) if any(behind.values()) \
                else None
            ends = [runs[k][max(runs[k])] - ref[k][max(ref[k])] for k in keys]
            never = sum(not b for b in behind.values())
            text = (f"- {ACT_NAMES.get(act, act)}, {opt}: never behind Adam (by more than {tol}{unit}) in {never} of "
                    f"{len(keys)} runs")
            if worst is not None:
                text += f" (worst: {worst[0]:.2f}{unit} behind, {worst[1][0]} seed {worst[1][1]}, epoch {worst[2]})"
            text += (f"; final {metric} minus the published ESGD's: mean {sum(ends) / len(ends):+.2f}{unit}, "
                     f"lowest {min(ends):+.2f}{unit}.")
            out.append(text)
    return ["", "gnerf's variants against Adam (every epoch) and the published ESGD (final epoch), per run:", ""] + out \
        if out else []


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
                out.append(f"- {ACT_NAMES.get(act, act)}: {claim} — **not judged**: no pair of finished runs to "
                           f"compare ({lost_e} ESGD and {lost_a} Adam run(s) diverged with a NaN loss).")
            continue
        wins = sum(e > a for e, a in pairs)
        gap = sum(e - a for e, a in pairs) / len(pairs)
        holds = wins == len(pairs) if esgd_should_win else wins == 0
        c_e, c_a = curves(rows, act, "esgd"), curves(rows, act, "adam")
        behind = [e for e, me in zip(c_e["epoch"], c_e["mean"])
                  if e in c_a["epoch"] and me < c_a["mean"][c_a["epoch"].index(e)]]
        lead = (f"; on the mean curve ESGD is behind Adam at {len(behind)} of {len(c_e['epoch'])} epochs"
                f" (last at epoch {behind[-1]})" if behind else "; on the mean curve ESGD is never behind Adam")
        verdict = "**holds**" if holds else ("**partly holds**" if 0 < wins < len(pairs) else "**does not hold**")
        lost = lost_e + lost_a
        lost_text = f" ({lost} more run(s) diverged and are left out)" if lost else ""
        out.append(f"- {ACT_NAMES.get(act, act)}: {claim} — {verdict}: ESGD ahead in {wins} of {len(pairs)} "
                   f"runs{lost_text}, mean ESGD - Adam = {gap:+.3f}{unit}{lead}.")
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
                line, = axes[i][j].plot(xs, c["mean"], linewidth=1.3, label=f"{opt} (n={c['runs']})")
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


def report_path(cfg: ReproduceConfig) -> Path:
    """Where the report goes; a changed protocol must name its own report."""
    if cfg.report is not None:
        return Path(cfg.report)
    if cfg.size is not None or cfg.epochs is not None:
        raise ValueError("--size / --epochs change the protocol: name the report with --report")
    return ROOT / "docs" / ("reproduction_quick.md" if cfg.quick else "reproduction.md")


def variant_note(optimizers: Sequence[str]) -> str:
    """The report header's words on gnerf's own optimizer, when the grid has it."""
    if "esgd-adam-start" not in optimizers:
        return ""
    return (f"; gnerf's `esgd-adam-start` is not the paper's: Adam (1e-4) for {ADAM_EPOCHS:g} epochs, then ESGD at lr "
            f"{OPTIMIZERS['esgd-adam-start']().lr:g} with the same cadence, started 50 steps before the switch")


def write_report(cfg: ReproduceConfig, grids: Sequence[CompareConfig]) -> str:
    """Build the report from the runs on disk, write it and its figures, and return its text."""
    protocol = "quick" if cfg.quick else "paper"
    custom = cfg.size is not None or cfg.epochs is not None
    report = report_path(cfg)
    prefix = cfg.figure_prefix or f"reproduction_{protocol}"
    if custom:
        protocol += " protocol with --size / --epochs changed; see each section for the sizes"
    command = "python -m experiments.reproduce " + " ".join(a for a in sys.argv[1:] if a != "--plot-only")
    text = [f"# Reproducing the paper's image and shape comparisons ({protocol}{'' if custom else ' protocol'})", "",
            f"Written by `{command.strip()}` on {today()} ({machine(DEVICE)}); rerun it to reproduce, "
            "add `--plot-only` to rebuild this page from the runs on disk. Hyperparameters are the paper's "
            "(`gnerf.optim.configs`: Adam 1e-4, 1e-3 for ReLU + PE; ESGD 0.15, curvature on each of the "
            f"first 50 steps, then every 100th){variant_note(cfg.optimizers)}. Wall times are each run's own "
            "training clock, with "
            f"{cfg.workers} run(s) at a time on this machine; runs that one invocation added to a grid later than "
            "others (a new optimizer, more seeds) ran under whatever else the machine was doing then, so compare "
            "times only between runs made together.", ""]
    if cfg.quick:
        text += ["**Quick protocol:** the data are reduced to fit a 2-core CPU (see `experiments/reproduce.py`); "
                 "the paper's claims are stated at its own budget, so read these numbers as a smoke test of "
                 "the comparison, not as a test of the claims.", ""]
    for grid in grids:
        rows = read_results(grid)
        fig = cfg.figure_dir / f"{prefix}_{grid.task}.png"
        if rows:
            plot(grid, rows, fig)
        rel = os.path.relpath(Path(fig).resolve(), Path(report).resolve().parent)
        text.append(task_section(grid, rows, fig if rows else None, rel) + failures_markdown(failures(grid)))
    body = "\n".join(text)
    atomic_write_bytes(report, body.encode())
    return body


def reproduce(cfg: ReproduceConfig) -> str:
    """Run (or resume) every grid of ``cfg``, then write the report; returns its text."""
    report_path(cfg)
    grids = task_grids(cfg)
    for grid in grids:
        run_comparison(grid, log=lambda line: print(line, flush=True))
    return write_report(cfg, grids)


def main() -> None:
    import tyro

    cfg = tyro.cli(ReproduceConfig, description=ReproduceConfig.__doc__)
    try:
        print(reproduce(cfg))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
