"""Optimizer comparison: a task x activations x optimizers x instances grid, its results and figures.

Every cell of the grid is one ordinary fitting command (``gnerf-fit-image``, ``gnerf-fit-occupancy`` or
``gnerf-fit-video``) with the paper's default hyperparameters for its optimizer and activation
(:func:`gnerf.tasks.config.task_lr`), run as an independent job (:mod:`experiments.jobs`:
submitit, local processes by default, SLURM with ``cluster="slurm"``) and written to its own folder.
The optimizer axis holds variant specs (:mod:`experiments.variants`): a registered name (``muon``) runs
its registered settings, ``muon:lr=6e-4`` or ``adam:lr=3e-4:schedule=cosine`` change some; a variant's
folder (``<optimizer>`` below) is its slug, the registered name for a plain optimizer::

    <output_dir>/runs/<instance>/<activation>/<optimizer>/seed<k>/   (the fitting command's files, log.txt)
    <output_dir>/runs/.../failed.json     written instead when the run diverged (NaN loss): not run again
    <output_dir>/runs/.../error.json      the error line of a run that failed: it is run again next time
    <output_dir>/results.csv              one row per run and epoch (all runs)
    <output_dir>/summary.md               the mean final metric per cell, and the failed runs with their errors
    <output_dir>/loss_vs_iteration.png    mean training loss against iterations, one panel per activation
    <output_dir>/loss_vs_time.png         the same against wall time (seconds)
    <output_dir>/jobs/                    submitit's logs of each job

``workers`` jobs run at once, each limited to ``threads`` torch threads. The grid is resumable: a
finished run (its metrics.jsonl holds every epoch) is skipped, a run stopped part-way continues from
its checkpoint (the fitting command's ``--resume``), and raising ``epochs`` extends finished runs. A
failed run is reported with its error line and does not stop the others.

With a ``record`` folder (:mod:`experiments.records`; e.g. ``docs/data/sweep``, committed to the
repository) every finished or diverged run is copied there as it ends, and finished run folders of
earlier invocations are copied at the start; a recorded run is not run again, even when its run
folder is gone (a new checkout). :func:`read_results` reads each run from its record or its run
folder, whichever holds more epochs (the record on a tie: it is the copy that stays), so reports and
figures rebuild from the records alone (``plot_only``). A record is tied to one protocol (sizes,
batch, network; not epochs): a grid of another protocol is refused with that record.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from benchmarks.common import SHARED_DATA, stopped_in_one_line
from experiments.jobs import EngineConfig, JobSpec, run_jobs
from experiments.records import RunRecord, check_protocol, machine_line, read_history, record_folder_run
from experiments.variants import canonical, parse_variant
from gnerf.optim import OPTIMIZERS

__all__ = [
    "CompareConfig",
    "QUICK",
    "Run",
    "command_line",
    "engine",
    "failures",
    "failures_markdown",
    "grid",
    "optimizer_args",
    "plot_results",
    "protocol",
    "read_results",
    "record_of",
    "resolve",
    "run_args",
    "run_comparison",
    "run_history",
    "summarize",
    "summary_markdown",
    "sync_records",
    "write_results",
]

TASKS = ("image", "occupancy", "video")
#: Each task's headline metric (higher is better) and the config field naming its input file.
_TASK_METRIC = {"image": "psnr", "occupancy": "iou", "video": "psnr"}
_TASK_INPUT = {"image": "image", "occupancy": "mesh", "video": "video"}
RESULT_FIELDS = (
    "task",
    "instance",
    "activation",
    "optimizer",
    "seed",
    "status",
    "epoch",
    "iteration",
    "wall_time",
    "loss",
    "metric",
    "source",
)


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
    optimizers: Tuple[str, ...] = field(default_factory=lambda: tuple(OPTIMIZERS))
    """Optimizer variant specs: registered names (default: every one) or NAME:KEY=VALUE... (experiments.variants)."""
    seeds: Tuple[int, ...] = (0,)
    """Repeats (network initialisation seeds) of every cell."""
    epochs: int = 20
    """Epochs per run."""
    batch_size: int = 512
    """Minibatch size."""
    size: Tuple[int, int] = (256, 256)
    """Image / video frame (height, width)."""
    max_frames: Optional[int] = None
    """Video: fit the first max_frames frames (None: all)."""
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
    record: Optional[Path] = None
    """Folder of the run records (committed to the repository, e.g. docs/data/NAME); None: no records."""
    workers: int = 2
    """Jobs running at once."""
    threads: int = 1
    """torch threads per run."""
    cluster: str = "local"
    """Where the jobs run: local (processes on this machine) or slurm."""
    slurm_partition: Optional[str] = None
    """SLURM partition (None: the cluster's default)."""
    timeout_min: int = 24 * 60
    """Minutes a job may run before it is stopped (its run resumes on the next invocation)."""
    gpus_per_node: Optional[int] = None
    """GPUs per job; None: 1 where this machine has CUDA (local), else 0."""
    quick: bool = False
    """Preset that fits a 2-core CPU in under 15 minutes: 128x128 images, a 3-layer width-64 network,
    10 epochs of 512-pixel minibatches (320 iterations); it overrides those options."""
    plot_only: bool = False
    """Only (re)collect results.csv and the figures from the records and the runs already on disk."""


#: What --quick overrides (see CompareConfig.quick).
QUICK: Dict[str, Any] = dict(size=(128, 128), hidden_dim=64, num_layers=3, epochs=10, batch_size=512)


@dataclass(frozen=True)
class Run:
    """One cell of the grid."""

    task: str
    input: Path
    activation: str
    optimizer: str
    """The optimizer variant's canonical spec (experiments.variants); a registered name for a plain one."""
    seed: int

    @property
    def instance(self) -> str:
        return self.input.stem

    @property
    def variant(self) -> str:
        """The optimizer variant's folder name (its slug)."""
        return parse_variant(self.optimizer).slug

    def folder(self, root: Path) -> Path:
        return root / "runs" / self.instance / self.activation / self.variant / f"seed{self.seed}"


def resolve(cfg: CompareConfig) -> CompareConfig:
    """``cfg`` with the quick preset applied and the default inputs filled in; checks names early."""
    from gnerf.fields import ACTIVATIONS

    if cfg.quick:
        cfg = replace(cfg, **QUICK)
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; choose one of: {', '.join(TASKS)}")
    specs = tuple(canonical(spec) for spec in cfg.optimizers)  # ValueError naming a bad spec
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise ValueError(f"optimizer variant(s) given twice (perhaps written two ways): {', '.join(twice)}")
    if cfg.cluster not in ("local", "slurm"):
        raise ValueError(f"--cluster {cfg.cluster!r}: choose local or slurm")
    for act in cfg.activations:
        if act.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of: {', '.join(ACTIVATIONS)}")
    inputs = tuple(cfg.inputs)
    if not inputs:
        inputs = tuple(Path(cfg.input_dir) / f"kodim{i:02d}.png" for i in range(1, 13))
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing and not cfg.plot_only:  # a report rebuilds from the records without the inputs
        raise FileNotFoundError(f"input file(s) not found: {', '.join(missing)}")
    if cfg.workers < 1 or cfg.threads < 1 or cfg.epochs < 1:
        raise ValueError("--workers, --threads and --epochs must be >= 1")
    if cfg.record is not None:
        check_protocol(Path(cfg.record), protocol(cfg), write=False)
    return replace(cfg, inputs=inputs, optimizers=specs)


def protocol(cfg: CompareConfig) -> Dict[str, Any]:
    """What every run of ``cfg``'s grid shares, besides epochs: the settings a record is tied to."""
    out: Dict[str, Any] = {
        "task": cfg.task,
        "batch_size": cfg.batch_size,
        "hidden_dim": cfg.hidden_dim,
        "num_layers": cfg.num_layers,
    }
    if cfg.task == "occupancy":
        out.update(num_points=cfg.num_points, num_eval_points=cfg.num_eval_points)
    else:
        out["size"] = list(cfg.size)
    if cfg.task == "video":
        out["max_frames"] = cfg.max_frames
    return out


def grid(cfg: CompareConfig) -> List[Run]:
    """Every run of the (resolved) grid, inputs outermost so partial grids cover all cells early."""
    return [
        Run(cfg.task, Path(p), a, canonical(o), s)
        for s in cfg.seeds
        for p in cfg.inputs
        for a in cfg.activations
        for o in cfg.optimizers
    ]


def optimizer_args(name: str, overrides: Optional[Mapping[str, Any]] = None) -> List[str]:
    """The fitting command's options that choose optimizer ``name`` and set the hyperparameters in ``overrides``
    (``{"lr": 3e-4}`` -> ``optim:adam --optim.lr 0.0003``); without them the command uses the registered defaults.
    They come last on the command line (a tyro subcommand and its options)."""
    args = [f"optim:{name}"]
    for key, value in (overrides or {}).items():
        args += [f"--optim.{key.replace('_', '-')}", str(value)]
    return args


def run_args(cfg: CompareConfig, run: Run, resume: bool) -> List[str]:
    """The arguments of ``run``'s fitting command (``gnerf-fit-<task>``); ``resume`` continues its checkpoint."""
    args = [
        "--output-dir",
        str(run.folder(cfg.output_dir)),
        "--epochs",
        str(cfg.epochs),
        "--batch-size",
        str(cfg.batch_size),
        "--seed",
        str(run.seed),
        "--threads",
        str(cfg.threads),
        "--no-progress",
        "--field.activation",
        run.activation,
        "--field.hidden-dim",
        str(cfg.hidden_dim),
        "--field.num-layers",
        str(cfg.num_layers),
    ]
    if run.task == "occupancy":
        args += [
            "--mesh",
            str(run.input),
            "--num-points",
            str(cfg.num_points),
            "--num-eval-points",
            str(cfg.num_eval_points),
            "--resolution",
            str(cfg.resolution),
        ]
    else:
        args += [f"--{_TASK_INPUT[run.task]}", str(run.input), "--size", *map(str, cfg.size)]
    if run.task == "video" and cfg.max_frames is not None:
        args += ["--max-frames", str(cfg.max_frames)]
    return args + (["--resume"] if resume else []) + parse_variant(run.optimizer).args()


def _epochs_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def record_of(cfg: CompareConfig, run: Run) -> Optional[RunRecord]:
    """``run``'s record files (None: the grid keeps no records); ``ValueError`` when its config.json states settings
    that ``run``'s optimizer spec no longer runs (a registered default changed since it was recorded,
    :meth:`experiments.variants.Variant.mismatches`), so that no report counts it as that spec's run."""
    if cfg.record is None:
        return None
    rec = RunRecord(Path(cfg.record), run.instance, run.activation, run.variant, run.seed)
    if rec.config.is_file():
        wrong = parse_variant(run.optimizer).mismatches(json.loads(rec.config.read_text()), run.activation)
        if wrong:
            raise ValueError(
                f"{rec.config}: recorded with {'; '.join(wrong)} (`{run.optimizer}`'s registered settings changed "
                "since); move its seed files to the folder of a spec that names those settings, or delete them to "
                "run it again"
            )
    return rec


def _finished(cfg: CompareConfig, run: Run) -> bool:
    """Whether ``run`` has nothing left to do: it diverged, or its metrics hold every epoch (record or run folder)."""
    out = run.folder(cfg.output_dir)
    rec = record_of(cfg, run)
    if rec is not None and rec.finished(cfg.epochs):
        return True
    return (out / "failed.json").is_file() or _epochs_done(out) >= cfg.epochs


def _job(cfg: CompareConfig, run: Run) -> JobSpec:
    out = run.folder(cfg.output_dir)
    resume = (out / "checkpoint.pt").is_file() or (out / "checkpoint.prev.pt").is_file()
    return JobSpec(
        task=run.task,
        args=tuple(run_args(cfg, run, resume)),
        folder=out,
        label=f"{run.instance} {run.activation} {run.optimizer} seed{run.seed}",
    )


def _record(out: Path, result: Dict[str, Any], command: str) -> None:
    """Leave a diverged run's failed.json (never rerun) or a failed run's error.json (rerun next time)."""
    if result["status"] in ("diverged", "failed"):
        out.mkdir(parents=True, exist_ok=True)
        name = "failed.json" if result["status"] == "diverged" else "error.json"
        (out / name).write_text(json.dumps({"status": result["status"], "error": result["error"], "command": command}))


def _record_run(cfg: CompareConfig, run: Run, info: Dict[str, Any]) -> bool:
    """Copy ``run``'s folder into its record if it finished or diverged (and is not recorded yet)."""
    rec = record_of(cfg, run)
    out = run.folder(cfg.output_dir)
    if rec is None or rec.finished(cfg.epochs):
        return False
    diverged = json.loads((out / "failed.json").read_text()) if (out / "failed.json").is_file() else None
    if diverged is None and _epochs_done(out) < cfg.epochs:
        return False
    check_protocol(Path(cfg.record), protocol(cfg), write=True)
    info = {"torch_threads": cfg.threads, "jobs_at_once": cfg.workers, "cluster": cfg.cluster, **info}
    return record_folder_run(rec, out, cfg.epochs, info, diverged)


def sync_records(cfg: CompareConfig) -> int:
    """Record the finished (or diverged) run folders of ``cfg``'s grid that are not recorded yet; returns how many.

    These finished before this invocation (an earlier grid without a record, or one stopped between a run's
    end and its record), so the machine they ran on is not known: their provenance says so.
    """
    if cfg.record is None:
        return 0
    n = 0
    for run in grid(cfg):
        out = run.folder(cfg.output_dir)
        if out.is_dir():
            command = (
                [line[2:] for line in (out / "log.txt").read_text().splitlines() if line.startswith("$ ")]
                if (out / "log.txt").is_file()
                else []
            )
            n += _record_run(
                cfg,
                run,
                {
                    "command": command[-1] if command else None,
                    "machine": None,
                    "source": f"run folder {out}, found finished",
                    "recorded_on": machine_line(),
                },
            )
    return n


def failures(cfg: CompareConfig) -> List[Tuple[Run, str]]:
    """The runs of ``cfg``'s grid whose last attempt failed (not diverged), with their error lines."""
    out = []
    for run in grid(cfg):
        path = run.folder(cfg.output_dir) / "error.json"
        if path.is_file():
            out.append((run, json.loads(path.read_text())["error"]))
    return out


def run_history(cfg: CompareConfig, run: Run) -> Tuple[str, List[Dict[str, Any]], str]:
    """``(status, metrics rows, source)`` of ``run``: status ``ok``, ``diverged`` or ``none`` (nothing yet);
    source ``record`` or ``folder``: the record when it diverged or holds at least as many epochs as the run
    folder, else the run folder (a run extending a recorded one)."""
    out = run.folder(cfg.output_dir)
    folder_rows = read_history(out / "metrics.jsonl")
    folder_div = (out / "failed.json").is_file()
    rec = record_of(cfg, run)
    if rec is not None:
        rec_rows, rec_div = rec.history(), rec.diverged()
        if rec_div or (rec_rows and len(rec_rows) >= len(folder_rows) and not folder_div):
            return ("diverged" if rec_div else "ok"), rec_rows, "record"
    if folder_div or folder_rows:
        return ("diverged" if folder_div else "ok"), folder_rows, "folder"
    return "none", [], ""


def read_results(cfg: CompareConfig) -> List[Dict[str, Any]]:
    """One row per run and epoch (and one per diverged run), from the records and run folders of ``cfg``'s grid
    (see :func:`run_history` for which one a run is read from; ``source`` says)."""
    metric = _TASK_METRIC[cfg.task]
    rows: List[Dict[str, Any]] = []
    for run in grid(cfg):
        status, hist, source = run_history(cfg, run)
        base = dict(
            task=run.task,
            instance=run.instance,
            activation=run.activation,
            optimizer=run.optimizer,
            seed=run.seed,
            source=source,
        )
        for r in hist:
            rows.append(
                dict(
                    base,
                    status=status,
                    epoch=r["epoch"],
                    iteration=r["iteration"],
                    wall_time=r["wall_time"],
                    loss=r["loss"],
                    metric=r.get(metric, math.nan),
                )
            )
        if status == "diverged":
            rows.append(
                dict(
                    base,
                    status="diverged",
                    epoch=math.nan,
                    iteration=math.nan,
                    wall_time=math.nan,
                    loss=math.nan,
                    metric=math.nan,
                )
            )
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


def summarize(
    rows: Sequence[Dict[str, Any]], activations: Sequence[str], optimizers: Sequence[str], epochs: Optional[int] = None
) -> Dict[str, Dict[str, Dict[str, float]]]:
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


def plot_results(
    rows: Sequence[Dict[str, Any]],
    activations: Sequence[str],
    optimizers: Sequence[str],
    out_dir: Path,
    title: str = "",
    epochs: Optional[int] = None,
) -> List[Path]:
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
    for xkey, xlabel, fname in (
        ("iteration", "iterations", "loss_vs_iteration.png"),
        ("wall_time", "wall time (s)", "loss_vs_time.png"),
    ):
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


def engine(cfg: CompareConfig) -> EngineConfig:
    """Where and how ``cfg``'s jobs run."""
    return EngineConfig(
        cluster=cfg.cluster,
        workers=cfg.workers,
        threads=cfg.threads,
        timeout_min=cfg.timeout_min,
        slurm_partition=cfg.slurm_partition,
        gpus_per_node=cfg.gpus_per_node,
    )


def failures_markdown(failed: Sequence[Tuple[Run, str]]) -> str:
    """The failed runs as a markdown list, each with its error line (empty when none failed)."""
    if not failed:
        return ""
    lines = [f"- {r.instance} {r.activation} {r.optimizer} seed{r.seed}: `{error}`" for r, error in failed]
    return f"\n{len(failed)} run(s) failed (run again on the next invocation):\n\n" + "\n".join(lines) + "\n"


#: What a grid command keeps when it is stopped from outside.
GRID_KEPT = (
    "finished runs are recorded and each stopped run resumes from its last checkpoint: run the same command to continue"
)


def grid_main(config_cls: Any, run: Any, module: str, argv: Optional[Sequence[str]] = None) -> None:
    """The tyro front end of a grid command, ``python -m MODULE``: ``config_cls`` from the command line, then
    ``print(run(cfg, log=..., command=...))``; a missing file or a bad value is one ``error:`` line, and so is a stop
    from outside (^C, SIGTERM)."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = tyro.cli(config_cls, args=argv, description=config_cls.__doc__)
    try:
        with stopped_in_one_line(module, GRID_KEPT):
            print(run(cfg, log=lambda line: print(line, flush=True), command=command_line(module, argv)))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def command_line(
    module: str,
    argv: Sequence[str],
    drop: Sequence[str] = ("--plot-only",),
    drop_with_value: Sequence[str] = ("--import-from",),
) -> str:
    """``python -m MODULE ARGS`` as a report states it: without the options that only rebuild or import."""
    out: List[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in drop_with_value:
            skip = True
        elif a not in drop and not any(a.startswith(f"{d}=") for d in drop_with_value):
            out.append(a)
    return " ".join(["python -m", module, *out])


def run_comparison(cfg: CompareConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the grid of ``cfg`` as jobs (resuming what is on disk), then write results.csv, the figures and summary.md.

    Long: the grid's one sequence, from the plan through the jobs to every output file.
    """
    cfg = resolve(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_config.json").write_text(
        json.dumps(
            {
                k: (list(map(str, v)) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                for k, v in vars(cfg).items()
            },
            indent=1,
        )
    )
    runs = grid(cfg)
    statuses: Dict[str, int] = {}
    t0 = time.perf_counter()
    if not cfg.plot_only:
        synced = sync_records(cfg)
        if synced:
            log(f"recorded {synced} run(s) that had finished in {out / 'runs'} in {cfg.record}")
        todo = [r for r in runs if not _finished(cfg, r)]
        log(
            f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished, {len(todo)} to run "
            f"as {cfg.cluster} jobs, {cfg.workers} at a time x {cfg.threads} thread(s)"
        )
        specs = []
        for r in todo:
            (r.folder(out) / "error.json").unlink(missing_ok=True)
            specs.append(_job(cfg, r))
        by_folder = {r.folder(out): r for r in todo}

        def done(spec: JobSpec, result: Dict[str, Any]) -> None:
            _record(spec.folder, result, spec.command)
            if result["status"] in ("done", "diverged"):
                _record_run(
                    cfg,
                    by_folder[spec.folder],
                    {"command": spec.command, "machine": result.get("machine") or machine_line()},
                )
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1
            extra = f" ({result['error']})" if "error" in result else ""
            log(
                f"[{sum(statuses.values())}/{len(specs)} {time.perf_counter() - t0:.0f}s] {spec.label}: "
                f"{result['status']}{extra}"
            )

        if specs:
            run_jobs(specs, engine(cfg), out / "jobs", done)
    rows = read_results(cfg)
    write_results(rows, out / "results.csv")
    figures = plot_results(
        rows,
        cfg.activations,
        cfg.optimizers,
        out,
        title=f"{cfg.task}: {len(cfg.inputs)} instance(s) x {len(cfg.seeds)} seed(s), "
        f"{cfg.epochs} epochs, {cfg.size[0]}x{cfg.size[1]}, width {cfg.hidden_dim}",
        epochs=cfg.epochs,
    )
    summary = summarize(rows, cfg.activations, cfg.optimizers, cfg.epochs)
    failed = failures(cfg)
    table = summary_markdown(summary, _TASK_METRIC[cfg.task]) + failures_markdown(failed)
    (out / "summary.md").write_text(table)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(table)
    return {
        "statuses": statuses,
        "summary": summary,
        "figures": figures,
        "results": out / "results.csv",
        "failures": failed,
        "seconds": time.perf_counter() - t0,
    }
