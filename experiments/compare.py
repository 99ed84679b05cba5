"""Optimizer comparison: a task x activations x optimizers x instances grid, its results and figures.

Every cell of the grid is one ordinary fitting run (:func:`gnerf.tasks.image.fit_image`,
``fit_occupancy`` or ``fit_video``) with the paper's default hyperparameters for its optimizer
and activation (:func:`gnerf.optim.registry.default_lr`), written to its own folder::

    <output_dir>/runs/<instance>/<activation>/<optimizer>/seed<k>/   (the fitting loop's files)
    <output_dir>/runs/.../failed.json     written instead when the run diverged (NaN loss)
    <output_dir>/results.csv              one row per run and epoch (all runs)
    <output_dir>/loss_vs_iteration.png    mean training loss against iterations, one panel per activation
    <output_dir>/loss_vs_time.png         the same against wall time (seconds)

Runs are spread over ``workers`` processes, each limited to ``threads`` torch threads. The grid
is resumable: a finished run is skipped, a run stopped part-way continues from its checkpoint
(the fitting loop's ``--resume``), and raising ``epochs`` extends finished runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks.common import SHARED_DATA

__all__ = ["CompareConfig", "QUICK", "Run", "execute", "grid", "plot_results", "read_results", "resolve",
           "run_comparison", "summarize", "summary_markdown", "write_results"]

TASKS = ("image", "occupancy", "video")
#: Each task's headline metric (higher is better) and the config field naming its input file.
_TASK_METRIC = {"image": "psnr", "occupancy": "iou", "video": "psnr"}
_TASK_INPUT = {"image": "image", "occupancy": "mesh", "video": "video"}
RESULT_FIELDS = ("task", "instance", "activation", "optimizer", "seed", "status", "epoch", "iteration",
                 "wall_time", "loss", "metric")


@dataclass
class CompareConfig:
    """Compare optimizers on a grid of inputs, activations and optimizers (paper default hyperparameters)."""

    inputs: Tuple[Path, ...] = ()
    """Input files (images, meshes or videos); empty: every kodim01-kodim12 under --input-dir."""
    input_dir: Path = SHARED_DATA / "images" / "kodak"
    """Where the default inputs live."""
    task: str = "image"
    """image, occupancy or video."""
    activations: Tuple[str, ...] = ("gaussian", "sine", "wavelet", "relu")
    """Network activations (relu means the paper's ReLU + positional encoding)."""
    optimizers: Tuple[str, ...] = ("adam", "esgd", "esgd-max", "adahessian-e", "adahessian-j", "kfac", "shampoo")
    """Registered optimizer names."""
    seeds: Tuple[int, ...] = (0,)
    """Repeats (network initialisation seeds) of every cell."""
    epochs: int = 20
    """Epochs per run."""
    batch_size: int = 512
    """Minibatch size."""
    size: Tuple[int, int] = (256, 256)
    """Image / video frame (height, width)."""
    num_points: int = 1_000_000
    """Occupancy: training points per shape."""
    num_eval_points: int = 100_000
    """Occupancy: evaluation points per shape."""
    resolution: int = 128
    """Occupancy: marching-cubes grid of the reconstruction written after training."""
    hidden_dim: int = 256
    """Network width."""
    num_layers: int = 5
    """Linear layers, the output layer included."""
    output_dir: Path = Path("outputs/compare")
    """Where runs, results.csv and the figures go."""
    workers: int = 2
    """Parallel runs (processes)."""
    threads: int = 1
    """torch threads per run."""
    quick: bool = False
    """Preset that fits a 2-core CPU in under 15 minutes: 128x128 images, a 3-layer width-64 network,
    10 epochs of 512-pixel minibatches (320 iterations); it overrides those options."""
    plot_only: bool = False
    """Only (re)collect results.csv and the figures from the runs already on disk."""


#: What --quick overrides (see CompareConfig.quick).
QUICK: Dict[str, Any] = dict(size=(128, 128), hidden_dim=64, num_layers=3, epochs=10, batch_size=512)


@dataclass(frozen=True)
class Run:
    """One cell of the grid."""

    task: str
    input: Path
    activation: str
    optimizer: str
    seed: int

    @property
    def instance(self) -> str:
        return self.input.stem

    def folder(self, root: Path) -> Path:
        return root / "runs" / self.instance / self.activation / self.optimizer / f"seed{self.seed}"


def resolve(cfg: CompareConfig) -> CompareConfig:
    """``cfg`` with the quick preset applied and the default inputs filled in; checks names early."""
    from gnerf.fields import ACTIVATIONS
    from gnerf.optim.registry import get_optimizer_spec

    if cfg.quick:
        cfg = replace(cfg, **QUICK)
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; choose one of: {', '.join(TASKS)}")
    for name in cfg.optimizers:
        get_optimizer_spec(name)
    for act in cfg.activations:
        if act.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of: {', '.join(ACTIVATIONS)}")
    inputs = tuple(cfg.inputs)
    if not inputs:
        inputs = tuple(Path(cfg.input_dir) / f"kodim{i:02d}.png" for i in range(1, 13))
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"input file(s) not found: {', '.join(missing)}")
    if cfg.workers < 1 or cfg.threads < 1 or cfg.epochs < 1:
        raise ValueError("--workers, --threads and --epochs must be >= 1")
    return replace(cfg, inputs=inputs)


def grid(cfg: CompareConfig) -> List[Run]:
    """Every run of the (resolved) grid, inputs outermost so partial grids cover all cells early."""
    return [Run(cfg.task, Path(p), a, o, s) for s in cfg.seeds for p in cfg.inputs for a in cfg.activations
            for o in cfg.optimizers]


def _task_config(cfg: CompareConfig, run: Run, out: Path, resume: bool) -> Tuple[Any, Any]:
    from gnerf.tasks.config import FieldConfig, OptimConfig

    common = dict(output_dir=out, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=run.seed, resume=resume, progress=False, threads=cfg.threads,
                  field=FieldConfig(activation=run.activation, hidden_dim=cfg.hidden_dim, num_layers=cfg.num_layers),
                  optim=OptimConfig(name=run.optimizer))
    if run.task == "image":
        from gnerf.tasks.image import ImageFitConfig, fit_image
        return ImageFitConfig(image=run.input, size=tuple(cfg.size), **common), fit_image
    if run.task == "video":
        from gnerf.tasks.video import VideoFitConfig, fit_video
        return VideoFitConfig(video=run.input, size=tuple(cfg.size), **common), fit_video
    from gnerf.tasks.occupancy import OccupancyFitConfig, fit_occupancy
    return OccupancyFitConfig(mesh=run.input, num_points=cfg.num_points, num_eval_points=cfg.num_eval_points,
                              resolution=cfg.resolution, **common), fit_occupancy


def _epochs_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def execute(cfg: CompareConfig, run: Run) -> Dict[str, Any]:
    """Run (or resume, or skip) one cell; returns ``{"run": ..., "status": done|skipped|diverged|failed}``."""
    out = run.folder(cfg.output_dir)
    if (out / "failed.json").is_file():
        return {"run": run, "status": "skipped"}
    done = _epochs_done(out)
    if done >= cfg.epochs:
        return {"run": run, "status": "skipped"}
    resume = (out / "checkpoint.pt").is_file()
    task_cfg, fn = _task_config(cfg, run, out, resume)
    t0 = time.perf_counter()
    try:
        fn(task_cfg)
    except FloatingPointError as err:
        out.mkdir(parents=True, exist_ok=True)
        (out / "failed.json").write_text(json.dumps({"status": "diverged", "error": str(err)}))
        return {"run": run, "status": "diverged", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - one broken cell must not stop the grid
        return {"run": run, "status": "failed", "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()}
    return {"run": run, "status": "done", "seconds": time.perf_counter() - t0}


def _worker(cfg: CompareConfig, run: Run) -> Dict[str, Any]:
    """One run in a worker process; the fitting loop's per-epoch lines go to the run's ``log.txt``."""
    import contextlib

    import torch
    torch.set_num_threads(cfg.threads)
    out = run.folder(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        return execute(cfg, run)


def read_results(cfg: CompareConfig) -> List[Dict[str, Any]]:
    """One row per run and epoch (and one per diverged run), from the run folders of ``cfg``'s grid."""
    metric = _TASK_METRIC[cfg.task]
    rows: List[Dict[str, Any]] = []
    for run in grid(cfg):
        out = run.folder(cfg.output_dir)
        base = dict(task=run.task, instance=run.instance, activation=run.activation, optimizer=run.optimizer,
                    seed=run.seed)
        if (out / "failed.json").is_file():
            hist = []
            if (out / "metrics.jsonl").is_file():
                hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
            for r in hist:
                rows.append(dict(base, status="diverged", epoch=r["epoch"], iteration=r["iteration"],
                                 wall_time=r["wall_time"], loss=r["loss"], metric=r.get(metric, math.nan)))
            rows.append(dict(base, status="diverged", epoch=math.nan, iteration=math.nan, wall_time=math.nan,
                             loss=math.nan, metric=math.nan))
            continue
        path = out / "metrics.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append(dict(base, status="ok", epoch=r["epoch"], iteration=r["iteration"],
                                 wall_time=r["wall_time"], loss=r["loss"], metric=r.get(metric, math.nan)))
    return rows


def write_results(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _final_rows(rows: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str, str, int], Dict[str, Any]]:
    last: Dict[Tuple[str, str, str, int], Dict[str, Any]] = {}
    for r in rows:
        key = (r["instance"], r["activation"], r["optimizer"], r["seed"])
        if r["status"] == "diverged" and math.isnan(float(r["epoch"])):
            last[key] = r
        elif key not in last or (last[key]["status"] == "ok" and r["epoch"] > last[key]["epoch"]):
            last[key] = r
    return last


def summarize(rows: Sequence[Dict[str, Any]], activations: Sequence[str], optimizers: Sequence[str],
              epochs: Optional[int] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{activation: {optimizer: {"metric": mean final metric, "loss": mean final loss, "runs": n,
    "diverged": n, "wall_time": mean seconds}}}`` over instances and seeds.

    With ``epochs``, runs that stopped before it (an interrupted grid) are left out altogether.
    """
    last = _final_rows(rows)
    if epochs is not None:
        last = {k: r for k, r in last.items() if r["status"] != "ok" or int(r["epoch"]) >= epochs}
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for act in activations:
        out[act] = {}
        for opt in optimizers:
            cells = [r for (i, a, o, s), r in last.items() if a == act and o == opt]
            ok = [r for r in cells if r["status"] == "ok"]
            out[act][opt] = {
                "metric": sum(float(r["metric"]) for r in ok) / len(ok) if ok else math.nan,
                "loss": sum(float(r["loss"]) for r in ok) / len(ok) if ok else math.nan,
                "wall_time": sum(float(r["wall_time"]) for r in ok) / len(ok) if ok else math.nan,
                "runs": len(cells),
                "diverged": len(cells) - len(ok),
            }
    return out


def summary_markdown(summary: Dict[str, Dict[str, Dict[str, float]]], metric: str = "psnr") -> str:
    """A markdown table: one row per optimizer, one column per activation (mean final metric)."""
    acts = list(summary)
    opts = list(next(iter(summary.values()))) if summary else []
    lines = ["| optimizer | " + " | ".join(acts) + " |", "|---|" + "---|" * len(acts)]
    for o in opts:
        cells = []
        for a in acts:
            s = summary[a][o]
            txt = "n/a" if math.isnan(s["metric"]) else f"{s['metric']:.2f}"
            if s["diverged"]:
                txt += f" ({int(s['diverged'])}/{int(s['runs'])} diverged)"
            cells.append(txt)
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n(mean final {metric} over instances and seeds; diverged runs excluded)\n"


def _curves(rows: Sequence[Dict[str, Any]], act: str, opt: str) -> Tuple[List[float], List[float], List[float]]:
    """Mean loss, iteration and wall time per epoch over the runs of one (activation, optimizer) that did not diverge."""
    by_epoch: Dict[int, List[Dict[str, Any]]] = {}
    for r in rows:
        if r["activation"] == act and r["optimizer"] == opt and r["status"] == "ok":
            by_epoch.setdefault(int(r["epoch"]), []).append(r)
    n_runs = max((len(v) for v in by_epoch.values()), default=0)
    its, times, losses = [], [], []
    for e in sorted(by_epoch):
        rs = by_epoch[e]
        if len(rs) < n_runs:  # an unfinished run would bias the mean
            break
        its.append(sum(float(r["iteration"]) for r in rs) / len(rs))
        times.append(sum(float(r["wall_time"]) for r in rs) / len(rs))
        losses.append(sum(float(r["loss"]) for r in rs) / len(rs))
    return its, times, losses


def plot_results(rows: Sequence[Dict[str, Any]], activations: Sequence[str], optimizers: Sequence[str],
                 out_dir: Path, title: str = "", epochs: Optional[int] = None) -> List[Path]:
    """The paper's figures: mean loss (log scale) against iterations and against wall time, one panel per activation.

    With ``epochs``, only runs that reached it are averaged (an interrupted grid).
    """
    if epochs is not None:
        complete = {k for k, r in _final_rows(rows).items() if r["status"] == "ok" and int(r["epoch"]) >= epochs}
        rows = [r for r in rows if (r["instance"], r["activation"], r["optimizer"], r["seed"]) in complete]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"relu": "ReLU + PE", "gaussian": "Gaussian", "sine": "sine", "wavelet": "wavelet"}
    paths = []
    for xkey, xlabel, fname in (("iteration", "iterations", "loss_vs_iteration.png"),
                                ("wall_time", "wall time (s)", "loss_vs_time.png")):
        fig, axes = plt.subplots(1, len(activations), figsize=(3.2 * len(activations), 3.0), squeeze=False)
        for ax, act in zip(axes[0], activations):
            for opt in optimizers:
                its, times, losses = _curves(rows, act, opt)
                if losses:
                    xs = its if xkey == "iteration" else times
                    ax.plot(xs, losses, marker="o", markersize=2.5, linewidth=1.2, label=opt)
            ax.set_yscale("log")
            finals = sorted(c[2][-1] for c in (_curves(rows, act, o) for o in optimizers) if c[2])
            if finals:  # keep the panel readable when one optimizer blows up: clip at 100x the median final loss
                top = max(min(ax.get_ylim()[1], 100 * finals[len(finals) // 2]), 2 * finals[len(finals) // 2])
                ax.set_ylim(top=top)
            ax.set_title(names.get(act, act), fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="both", alpha=0.25)
        axes[0][0].set_ylabel("mean training loss (MSE)", fontsize=8)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(optimizers), fontsize=7, frameon=False)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout(rect=(0, 0.08, 1, 0.95 if title else 1))
        path = Path(out_dir) / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def run_comparison(cfg: CompareConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the grid of ``cfg`` (resuming what is on disk), then write results.csv, the figures and summary.md."""
    cfg = resolve(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_config.json").write_text(json.dumps(
        {k: (list(map(str, v)) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
         for k, v in vars(cfg).items()}, indent=1))
    runs = grid(cfg)
    statuses: Dict[str, int] = {}
    t0 = time.perf_counter()
    if not cfg.plot_only:
        todo = [r for r in runs if not (r.folder(out) / "failed.json").is_file()
                and _epochs_done(r.folder(out)) < cfg.epochs]
        log(f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished, {len(todo)} to run "
            f"on {cfg.workers} worker(s) x {cfg.threads} thread(s)")
        if cfg.workers == 1:
            results = (_worker(cfg, r) for r in todo)
            for i, res in enumerate(results, 1):
                statuses[res["status"]] = statuses.get(res["status"], 0) + 1
                _log_result(log, i, len(todo), res, t0)
        else:
            with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_worker, cfg, r) for r in todo]
                for i, fut in enumerate(as_completed(futures), 1):
                    res = fut.result()
                    statuses[res["status"]] = statuses.get(res["status"], 0) + 1
                    _log_result(log, i, len(todo), res, t0)
    rows = read_results(cfg)
    write_results(rows, out / "results.csv")
    figures = plot_results(rows, cfg.activations, cfg.optimizers, out,
                           title=f"{cfg.task}: {len(cfg.inputs)} instance(s) x {len(cfg.seeds)} seed(s), "
                                 f"{cfg.epochs} epochs, {cfg.size[0]}x{cfg.size[1]}, width {cfg.hidden_dim}",
                           epochs=cfg.epochs)
    summary = summarize(rows, cfg.activations, cfg.optimizers, cfg.epochs)
    table = summary_markdown(summary, _TASK_METRIC[cfg.task])
    (out / "summary.md").write_text(table)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(table)
    return {"statuses": statuses, "summary": summary, "figures": figures, "results": out / "results.csv",
            "seconds": time.perf_counter() - t0}


def _log_result(log: Callable[[str], None], i: int, n: int, res: Dict[str, Any], t0: float) -> None:
    r: Run = res["run"]
    extra = f" ({res['error']})" if "error" in res else ""
    log(f"[{i}/{n} {time.perf_counter() - t0:.0f}s] {r.instance} {r.activation} {r.optimizer} seed{r.seed}: "
        f"{res['status']}{extra}")
    if res["status"] == "failed":
        log(res.get("traceback", ""))
