"""The optimizer contest at the paper's image protocol: final PSNR, PSNR against epochs and time, time to quality.

    python -m experiments.contest                                        # every optimizer on kodim01-kodim04
    python -m experiments.contest --more-optimizers adam muon esgd-adam-start   # ... and these on kodim05-12 too
    python -m experiments.contest --plot-only                            # the report from the records alone

The paper's image protocol (supplementary 4.1): each photo resized to 256 x 256, Gaussian network
5 x 256 (sigma 0.05), minibatches of 512 pixels, 200 epochs (25,600 steps), seed 0. The entrants:
the paper's ``adam`` (1e-4, constant), the published ``esgd``, gnerf's ``esgd-adam-start``,
``muon-esgd`` and ``muon-esgd-eq``, and the contenders of :mod:`gnerf.optim.contenders` (``muon``,
``adam-cosine``, ``adam-linear``, ``soap``, ``psgd-kron``, ``schedulefree-adamw``) at their registered settings; any
variant spec (:mod:`experiments.variants`) may be added. Every entrant runs on ``--images`` (kodim01-kodim04); the subset ``--more-optimizers``
runs on ``--more-images`` (kodim05-kodim12) as well, and gets a second section over all its photos.

The runs are a grid of :mod:`experiments.compare` (submitit jobs, resumable) recorded in
``docs/data/contest/`` (:mod:`experiments.records`). The report (``docs/contest.md``) is computed from
the records alone:

- final PSNR per photo and optimizer, and the mean;
- the mean PSNR over the photos against epochs and against training wall time, one line per
  optimizer (``docs/figures/contest_*.png``);
- time to quality: per optimizer and photo, the first epoch (with its iteration and training wall
  time) whose PSNR reaches (a) the paper's Adam's final PSNR on that photo and (b) the best
  contender's final PSNR on that photo, "not reached" otherwise; the best contender is the
  contender (not gnerf's nor the paper's optimizers) with the highest mean final PSNR among those that
  finished every photo. The PSNR is measured after each epoch, so a quality is located to the epoch.
  Per optimizer and target, the mean over photos of (its steps / the best contender's steps), over
  the photos where both reached the target.

The header states the protocol, the machines the runs were recorded on, the torch threads per run
and how many ran at once: wall times of runs that shared a machine with other work are noisy.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.common import SHARED_DATA, interrupt_on_sigterm, shown, today
from experiments.compare import (
    CompareConfig,
    failures,
    failures_markdown,
    grid,
    grid_main,
    record_of,
    resolve,
    run_comparison,
    run_history,
)
from experiments.variants import base_name, canonical
from gnerf.files import atomic_write_bytes
from gnerf.optim import OPTIMIZERS

__all__ = [
    "CONTENDERS",
    "PAPERS",
    "ContestConfig",
    "best_contender",
    "compare_configs",
    "contest",
    "first_reaching",
    "kodak_grid",
    "main",
    "report",
    "time_to_quality",
]

ROOT = Path(__file__).resolve().parents[1]
KODAK = SHARED_DATA / "images" / "kodak"
#: The contenders: the optimizers registered in gnerf.optim.contenders (neither the paper's nor gnerf's own).
CONTENDERS = tuple(n for n, c in OPTIMIZERS.items() if c.__module__ == "gnerf.optim.contenders")
#: The paper's optimizers in the contest, and gnerf's own.
PAPERS = ("adam", "esgd", "esgd-adam-start", "muon-esgd", "muon-esgd-eq", "psgd-kron-esgd")


@dataclass
class ContestConfig:
    """The optimizer contest at the paper's image protocol, its records and its report (docs/contest.md)."""

    optimizers: Tuple[str, ...] = PAPERS + CONTENDERS
    """Entrants (variant specs), run on --images."""
    images: Tuple[str, ...] = ("kodim01", "kodim02", "kodim03", "kodim04")
    """Kodak photos (stems) every entrant runs on."""
    more_optimizers: Tuple[str, ...] = ()
    """Entrants that also run on --more-images (a subset of --optimizers)."""
    more_images: Tuple[str, ...] = tuple(f"kodim{i:02d}" for i in range(5, 13))
    """The further photos of --more-optimizers."""
    baseline: str = "adam"
    """Target (a) of the time to quality: this entrant's final PSNR (the paper's Adam)."""
    kodak: Path = KODAK
    """Folder of the Kodak photos."""
    size: int = 256
    epochs: int = 200
    batch_size: int = 512
    seed: int = 0
    workers: int = 2
    """Runs at once (local jobs; on SLURM the job array's parallelism)."""
    threads: int = 1
    """torch threads per run."""
    cluster: str = "local"
    """Where the runs go as jobs (submitit): local processes, or slurm."""
    slurm_partition: Optional[str] = None
    timeout_min: int = 24 * 60
    """Minutes a run's job may take before it is stopped (the run resumes on the next invocation)."""
    gpus_per_node: Optional[int] = None
    """GPUs per job; None: 1 where this machine has CUDA (local), else 0."""
    output_dir: Path = Path("outputs/contest")
    """Where the run folders go (checkpoints, images: not kept)."""
    record: Path = ROOT / "docs" / "data" / "contest"
    """The run records (committed)."""
    report: Path = ROOT / "docs" / "contest.md"
    """The markdown report to write."""
    figure_dir: Path = ROOT / "docs" / "figures"
    figure_prefix: str = "contest"
    plot_only: bool = False
    """Only rebuild the report from the records (and any run folders on disk); train nothing."""


def kodak_grid(
    cfg: Any,
    images: Sequence[str],
    optimizers: Sequence[str],
    plot_only: Optional[bool] = None,
    output_dir: Optional[Path] = None,
) -> CompareConfig:
    """The grid of ``optimizers`` on the Kodak photos ``images`` with the paper's Gaussian image network (5 x 256),
    at the protocol (size, epochs, batch, seed) and with the jobs and records of ``cfg``, a contest's or a sweep's
    config; ``plot_only`` None: ``cfg``'s."""
    return CompareConfig(
        inputs=tuple(Path(cfg.kodak) / f"{s}.png" for s in images),
        task="image",
        activations=("gaussian",),
        optimizers=tuple(optimizers),
        seeds=(cfg.seed,),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        size=(cfg.size, cfg.size),
        hidden_dim=256,
        num_layers=5,
        output_dir=Path(cfg.output_dir if output_dir is None else output_dir),
        record=Path(cfg.record),
        workers=cfg.workers,
        threads=cfg.threads,
        cluster=cfg.cluster,
        slurm_partition=cfg.slurm_partition,
        timeout_min=cfg.timeout_min,
        gpus_per_node=cfg.gpus_per_node,
        plot_only=cfg.plot_only if plot_only is None else plot_only,
    )


def compare_configs(cfg: ContestConfig, plot_only: Optional[bool] = None) -> List[CompareConfig]:
    """The contest's grids: every entrant on --images, then --more-optimizers on --more-images."""
    main = tuple(canonical(o) for o in cfg.optimizers)
    more = tuple(canonical(o) for o in cfg.more_optimizers)
    stray = [o for o in more if o not in main]
    if stray:
        raise ValueError(f"--more-optimizers must be among --optimizers; not there: {', '.join(stray)}")
    if canonical(cfg.baseline) not in main:
        raise ValueError(f"--baseline {cfg.baseline!r} must be one of --optimizers")
    grids = [kodak_grid(cfg, cfg.images, main, plot_only)]
    extra = [s for s in cfg.more_images if s not in cfg.images]
    if more and extra:  # its own folder for results.csv and the loss figures; the record is shared
        grids.append(kodak_grid(cfg, extra, more, plot_only, output_dir=Path(cfg.output_dir) / "more-images"))
    return grids


# ---------------------------------------------------------------------------------------------- computations


def first_reaching(hist: Sequence[Dict[str, Any]], target: float, key: str = "psnr") -> Optional[Dict[str, Any]]:
    """The first metrics row (by epoch) whose ``key`` (PSNR; ``metric`` in a grid's results) is at least ``target``
    (None: never)."""
    for row in sorted(hist, key=lambda r: int(r["epoch"])):
        if float(row[key]) >= target:
            return row
    return None


def _final(hist: Sequence[Dict[str, Any]], epochs: int) -> Optional[float]:
    at = [r for r in hist if int(r["epoch"]) == epochs]
    return float(at[0]["psnr"]) if at else None


def best_contender(
    finals: Dict[str, Dict[str, Optional[float]]], photos: Sequence[str], contenders: Sequence[str]
) -> Optional[str]:
    """The contender with the highest mean final PSNR over ``photos``, among those that finished every one
    (``finals[optimizer][photo]``: final PSNR, None when not finished or diverged); None when none did."""
    means = {
        o: sum(finals[o][p] for p in photos) / len(photos)
        for o in contenders
        if o in finals and photos and all(finals[o].get(p) is not None for p in photos)
    }
    return max(means, key=lambda o: means[o]) if means else None


def time_to_quality(
    histories: Dict[str, Dict[str, Sequence[Dict[str, Any]]]],
    photos: Sequence[str],
    optimizers: Sequence[str],
    targets: Dict[str, float],
    best: str,
    key: str = "psnr",
) -> Dict[str, Dict[str, Any]]:
    """Per optimizer: ``{"reached": {photo: row or None}, "ratio": mean steps ratio to ``best`` or None,
    "ratio_photos": how many photos it averages}``.

    ``histories[optimizer][photo]``: its finished run's metrics rows; ``targets[photo]``: the PSNR to reach
    (photos without a target are left out); ``key``: the rows' quality field. The ratio is the mean over photos
    where both the optimizer and ``best`` reached the target of (the optimizer's iteration / ``best``'s iteration).
    """
    out: Dict[str, Dict[str, Any]] = {}
    best_rows = {p: first_reaching(histories.get(best, {}).get(p, ()), targets[p], key) for p in photos if p in targets}
    for o in optimizers:
        reached: Dict[str, Optional[Dict[str, Any]]] = {}
        ratios = []
        for p in photos:
            if p not in targets or p not in histories.get(o, {}):
                continue
            row = first_reaching(histories[o][p], targets[p], key)
            reached[p] = row
            ref = best_rows.get(p)
            if row is not None and ref is not None:
                ratios.append(float(row["iteration"]) / float(ref["iteration"]))
        out[o] = {
            "reached": reached,
            "ratio": sum(ratios) / len(ratios) if ratios else None,
            "ratio_photos": len(ratios),
        }
    return out


# -------------------------------------------------------------------------------------------------- report


def _collect(
    grids: Sequence[CompareConfig],
) -> Tuple[Dict[str, Dict[str, Tuple[str, List[Dict[str, Any]]]]], List[Dict[str, Any]], List[Dict[str, Any]]]:
    """``{optimizer: {photo: (status, rows)}}`` over the grids, the provenance and configs of the runs read."""
    runs: Dict[str, Dict[str, Tuple[str, List[Dict[str, Any]]]]] = {}
    infos, configs = [], []
    for g in grids:
        for run in grid(g):
            status, hist, source = run_history(g, run)
            if status == "none":
                continue
            runs.setdefault(run.optimizer, {})[run.instance] = (status, hist)
            rec = record_of(g, run)
            info = rec.run_info() if rec is not None and source == "record" else {}
            infos.append({**info, "source_kind": source})
            if rec is not None and source == "record" and rec.config.is_file():
                configs.append(json.loads(rec.config.read_text()))
            elif (run.folder(g.output_dir) / "config.json").is_file():
                configs.append(json.loads((run.folder(g.output_dir) / "config.json").read_text()))
    return runs, infos, configs


def _photo_cell(status: str, hist: Sequence[Dict[str, Any]], epochs: int) -> str:
    if status == "diverged":
        return "diverged"
    final = _final(hist, epochs)
    return f"{final:.2f}" if final is not None else f"({len(hist)}/{epochs} ep)"


def _final_table(runs, photos: Sequence[str], optimizers: Sequence[str], epochs: int) -> Tuple[List[str], Dict]:
    finals: Dict[str, Dict[str, Optional[float]]] = {}
    lines = ["| optimizer | " + " | ".join(photos) + " | mean |", "|---|" + "---|" * (len(photos) + 1)]
    for o in optimizers:
        cells, values = [], []
        finals[o] = {}
        for p in photos:
            status, hist = runs.get(o, {}).get(p, ("none", []))
            final = _final(hist, epochs) if status == "ok" else None
            finals[o][p] = final
            cells.append("-" if status == "none" else _photo_cell(status, hist, epochs))
            if final is not None:
                values.append(final)
        if len(values) == len(photos) and values:
            mean = f"{sum(values) / len(values):.2f}"
        elif values:
            mean = f"{sum(values) / len(values):.2f} ({len(values)} of {len(photos)})"
        else:
            mean = "-"
        lines.append(f"| {o} | " + " | ".join(cells) + f" | {mean} |")
    return lines, finals


def _reach_cell(row: Optional[Dict[str, Any]]) -> str:
    if row is None:
        return "not reached"
    return f"ep {int(row['epoch'])} / {int(row['iteration']):,} it / {float(row['wall_time']):.0f} s"


def _ttq_lines(runs, photos, optimizers, epochs, targets: Dict[str, float], best: str, what: str) -> List[str]:
    histories = {
        o: {p: h for p, (s, h) in runs.get(o, {}).items() if s == "ok" and _final(h, epochs) is not None}
        for o in optimizers
    }
    ttq = time_to_quality(histories, photos, optimizers, targets, best)
    shown = [p for p in photos if p in targets]
    lines = [
        f"Target: {what} (" + ", ".join(f"{p} {targets[p]:.2f} dB" for p in shown) + ").",
        "",
        "| optimizer | " + " | ".join(shown) + f" | mean steps / {best}'s |",
        "|---|" + "---|" * (len(shown) + 1),
    ]
    for o in optimizers:
        res = ttq[o]
        cells = [_reach_cell(res["reached"][p]) if p in res["reached"] else "-" for p in shown]
        ratio = "-" if res["ratio"] is None else f"{res['ratio']:.2f} ({res['ratio_photos']} of {len(shown)})"
        lines.append(f"| {o} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def _finals_caption(epochs: int) -> str:
    return (
        f"Final PSNR (dB) after epoch {epochs} (`diverged`: a NaN loss; `(k/N ep)`: a run under way; "
        "`-`: not run yet); the mean is over the photos that finished, their count in brackets when not all:"
    )


def _figure(
    runs, photos: Sequence[str], optimizers: Sequence[str], cfg: ContestConfig, name: str, title: str
) -> Optional[str]:
    """Plot the mean curves into ``--figure-dir``/``name``; its path relative to the report, or None when nothing ran."""
    path = Path(cfg.figure_dir) / name
    if plot(runs, photos, optimizers, path, title) is None:
        return None
    return os.path.relpath(path.resolve(), Path(cfg.report).resolve().parent)


def _section(
    runs,
    photos: Sequence[str],
    optimizers: Sequence[str],
    baseline: str,
    epochs: int,
    figure: Optional[str],
) -> List[str]:
    """Final PSNRs, the figure (``figure``: its path relative to the report, None for none) and time to quality."""
    lines, finals = _final_table(runs, photos, optimizers, epochs)
    out = [_finals_caption(epochs), ""] + lines
    if figure is not None:
        out += ["", f"![PSNR against epochs and wall time]({figure})", ""]
    contenders = [o for o in optimizers if base_name(o) in CONTENDERS]
    best = best_contender(finals, photos, contenders)
    out += [
        "",
        "### Time to quality",
        "",
        "Cells: the first epoch whose PSNR reaches the target, with its iteration and the run's training wall "
        "time then (the PSNR is measured after each epoch); the last column is the mean over photos of the "
        "optimizer's steps divided by the best contender's steps to the same target, over the photos where "
        "both reached it.",
        "",
    ]
    if best is None:
        out += [
            "No contender has finished every photo yet, so there is no best contender: the time-to-quality "
            "tables wait for one.",
            "",
        ]
        return out
    mean_best = sum(finals[best][p] for p in photos) / len(photos)
    out += [
        f"Best contender: **{best}** (mean final PSNR {mean_best:.2f} dB over {len(photos)} photos; "
        f"contenders are {', '.join(contenders)}).",
        "",
    ]
    base_targets = {p: v for p, v in finals.get(baseline, {}).items() if v is not None}
    whose = "the paper's Adam" if baseline == "adam" else "the baseline"
    if base_targets:
        out += _ttq_lines(
            runs,
            photos,
            optimizers,
            epochs,
            base_targets,
            best,
            f"(a) {whose}'s (`{baseline}`) final PSNR on the photo",
        ) + [""]
    else:
        out += [f"(a) waits for `{baseline}` to finish a photo.", ""]
    best_targets = {p: finals[best][p] for p in photos}
    out += _ttq_lines(
        runs,
        photos,
        optimizers,
        epochs,
        best_targets,
        best,
        f"(b) the best contender's (`{best}`) final PSNR on the photo",
    ) + [""]
    return out


def _curves(runs, photos: Sequence[str], optimizer: str) -> Dict[str, List[float]]:
    """Mean PSNR, iteration and wall time per epoch over ``photos``, up to the last epoch every photo's run reached
    (None when a photo has no finished-or-running run, or one diverged)."""
    hists = []
    for p in photos:
        status, hist = runs.get(optimizer, {}).get(p, ("none", []))
        if status != "ok" or not hist:
            return {}
        hists.append({int(r["epoch"]): r for r in hist})
    last = min(max(h) for h in hists)
    out: Dict[str, List[float]] = {"epoch": [], "psnr": [], "time": []}
    for e in range(1, last + 1):
        if all(e in h for h in hists):
            out["epoch"].append(e)
            out["psnr"].append(sum(float(h[e]["psnr"]) for h in hists) / len(hists))
            out["time"].append(sum(float(h[e]["wall_time"]) for h in hists) / len(hists))
    return out


def plot(runs, photos: Sequence[str], optimizers: Sequence[str], path: Path, title: str) -> Optional[Path]:
    """Mean PSNR over ``photos`` against epochs (left) and training wall time (right), one line per optimizer."""
    curves = {o: _curves(runs, photos, o) for o in optimizers}
    if not any(c for c in curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for o, c in curves.items():
        if not c:
            continue
        (line,) = axes[0].plot(c["epoch"], c["psnr"], linewidth=1.3, label=o)
        axes[1].plot(c["time"], c["psnr"], linewidth=1.3, color=line.get_color(), label=o)
    axes[0].set_xlabel("epoch", fontsize=8)
    axes[1].set_xlabel("training wall time (s), mean over photos", fontsize=8)
    for ax in axes:
        ax.set_ylabel(f"PSNR (dB), mean over {len(photos)} photos", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.25)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _provenance(infos: Sequence[Dict[str, Any]], configs: Sequence[Dict[str, Any]]) -> str:
    def counted(values) -> str:
        tally: Dict[str, int] = {}
        for v in values:
            tally[v] = tally.get(v, 0) + 1
        return "; ".join(f"{k} ({n} run{'s' if n > 1 else ''})" for k, n in sorted(tally.items()))

    machines = counted(
        i.get("machine")
        or ("not recorded" if i.get("source_kind") == "record" else "read from a run folder, not recorded")
        for i in infos
    )
    threads = counted(str(c.get("threads")) for c in configs)
    jobs = counted(str(i.get("jobs_at_once")) if i.get("jobs_at_once") is not None else "not recorded" for i in infos)
    return (
        f"Machines the runs were recorded on: {machines or 'none yet'}. torch threads per run: "
        f"{threads or 'none yet'}. Runs at once: {jobs or 'none yet'}."
    )


def report(cfg: ContestConfig, command: str = "python -m experiments.contest") -> str:
    """Build docs/contest.md (and its figures) from the records and run folders of ``cfg``; returns its text."""
    grids = [resolve(g) for g in compare_configs(cfg, plot_only=True)]
    runs, infos, configs = _collect(grids)
    main = grids[0]
    steps = cfg.epochs * math.ceil(cfg.size * cfg.size / cfg.batch_size)
    text = [
        f"# The optimizer contest on images ({cfg.size} x {cfg.size}, {cfg.epochs} epochs)",
        "",
        f"Written by `{command}` on {today()} from the run records in `{shown(cfg.record)}/`; add `--plot-only` "
        "to rebuild this page from the records, drop it to run what is missing.",
        "",
        f"Protocol: Kodak photos resized to {cfg.size} x {cfg.size}, Gaussian network 5 x 256 (sigma 0.05), "
        f"minibatches of {cfg.batch_size} pixels, {cfg.epochs} epochs ({steps:,} steps), seed {cfg.seed}; "
        "every optimizer at its registered settings (lr and schedule, `gnerf.optim.configs` and "
        "`gnerf.optim.contenders`) unless its spec says otherwise. PSNR: the whole image after each epoch.",
        "",
        _provenance(infos, configs) + " Wall times are each run's own training clock (evaluation excluded); runs "
        "that shared the machine with other work (other runs of the grid, other programs) ran slower by an "
        "unknown amount, so wall times are noisy: compare steps exactly and seconds loosely.",
        "",
        f"## All optimizers on {', '.join(p.stem for p in main.inputs)}",
        "",
    ]
    photos = [p.stem for p in main.inputs]
    title = f"mean over {len(photos)} photos, {cfg.size} x {cfg.size}"
    fig = _figure(runs, photos, main.optimizers, cfg, f"{cfg.figure_prefix}_psnr.png", title)
    text += _section(runs, photos, main.optimizers, canonical(cfg.baseline), cfg.epochs, fig)
    failed = [f for g in grids for f in failures(g)]
    if len(grids) > 1:
        photos12 = photos + [p.stem for p in grids[1].inputs]
        text += _more_section(runs, photos12, grids[1].optimizers, cfg, canonical(cfg.baseline))
    body = "\n".join(text).rstrip("\n") + "\n" + failures_markdown(failed)
    atomic_write_bytes(Path(cfg.report), body.encode())
    return body


def _more_section(runs, photos12: List[str], optimizers: Sequence[str], cfg: ContestConfig, baseline: str) -> List[str]:
    """The --more-optimizers on every photo. While some photo is not finished by all of them, their final PSNRs on
    every photo come first, then the figure and the time to quality over the photos all of them have finished."""
    lines, finals = _final_table(runs, photos12, optimizers, cfg.epochs)
    done = [p for p in photos12 if all(finals[o][p] is not None for o in optimizers)]
    text = [f"## {', '.join(optimizers)} on {len(photos12)} photos ({photos12[0]}-{photos12[-1]})", ""]
    if len(done) < len(photos12):
        text += [_finals_caption(cfg.epochs), ""] + lines + [""]
        if not done:
            return text + ["No photo is finished by all of them yet.", ""]
        text += [f"### On the {len(done)} photos all of them have finished ({', '.join(done)})", ""]
    fig = _figure(
        runs, done, optimizers, cfg, f"{cfg.figure_prefix}_psnr_{len(photos12)}.png", f"mean over {len(done)} photos"
    )
    text += _section(runs, done, optimizers, baseline, cfg.epochs, fig)
    if baseline not in optimizers:
        text += [f"(`{baseline}` is not among these optimizers, so target (a) has no runs on the further photos.)", ""]
    return text


def contest(cfg: ContestConfig, log=print, command: str = "python -m experiments.contest") -> str:
    """Run (or resume) the contest's grids unless ``plot_only``, then write and return the report."""
    if not cfg.plot_only:
        for g in compare_configs(cfg):
            run_comparison(g, log=log)
    return report(cfg, command)


def main(argv: Optional[Sequence[str]] = None) -> None:
    grid_main(ContestConfig, contest, "experiments.contest", argv)


if __name__ == "__main__":
    interrupt_on_sigterm()  # `kill` (SIGTERM) stops the grid as ^C does: its local jobs are cancelled
    main()
