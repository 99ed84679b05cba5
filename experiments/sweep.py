"""The contenders' learning-rate sweep on the shared Kodak photos: a resumable grid of jobs, its records and its table.

    python -m experiments.sweep                                   # the whole sweep; writes docs/sweep.md
    python -m experiments.sweep --optimizers muon soap --images kodim01 --workers 1
    python -m experiments.sweep --plot-only                       # the table from the records alone
    python -m experiments.sweep --import-from OLD/outputs/sweep   # record the old layout's finished runs

Each optimizer (the contenders, and Adam and the two ESGDs for the same chance) runs at its
centre lr times each of ``--multiples`` (1, 3, 1/3), with its registered schedule, on kodim01-kodim04
at the sweep protocol: Gaussian network 5 x 256 (sigma 0.05), 128 x 128, batch 512, 100 epochs,
seed 0. The multiple scales the config's ``lr`` only: Muon's hidden matrices (not its Adam part),
esgd-adam-start's ESGD phase (not its Adam phase). An lr is written with 3 significant digits, and
that is the lr the run gets (``muon:lr=6.67e-05``, :mod:`experiments.variants`). An optimizer's centre
is the lr it was registered with when the sweep began (:data:`CENTRES`; an optimizer added since is centred
on its registered lr): the winners registered since then do not move the grid, so its records stay its
runs and its table shows every lr that was tried.

One rule past the edges, the same for every optimizer: where an optimizer's best lr (the winner below,
once all its lrs have finished on every photo) is its smallest multiple, the sweep adds that multiple / 3;
where it is its largest, that multiple x 3; up to ``--extend`` times on each side. So no optimizer's
winner stays on the edge of what was tried unless the limit is reached, and the table says so.

The runs are a grid of :mod:`experiments.compare` (submitit jobs, ``--workers`` at a time, resumable)
recorded in ``docs/data/sweep/`` (:mod:`experiments.records`): a run recorded there is not run again
in any checkout, and the table is rebuilt from the records with ``--plot-only``.

The table (``docs/sweep.md``): per optimizer and lr, each photo's final whole-image PSNR, their mean,
and the optimizer's **winner**, the lr with the highest mean final PSNR over the photos. Only an lr
that finished on every photo without diverging can win; a winner is declared once every lr of the
optimizer has finished or diverged on every photo (before that the best complete lr is marked
"leading", or nothing is when none is complete). Means equal to 0.01 dB (the table's rounding) are a
tie, broken toward the centre (the multiple nearest 1), then the smaller lr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.common import SHARED_DATA, interrupt_on_sigterm, shown, today
from experiments.compare import (
    CompareConfig,
    Run,
    failures,
    grid,
    grid_main,
    protocol,
    record_of,
    resolve,
    run_comparison,
    run_history,
)
from experiments.contest import kodak_grid, plot
from experiments.records import RunRecord, check_protocol, import_run
from experiments.variants import canonical
from gnerf.files import atomic_write_bytes
from gnerf.optim import OPTIMIZERS
from gnerf.optim.schedules import schedule_name

__all__ = [
    "SweepConfig",
    "best_runs",
    "check_optimizers",
    "choose_winner",
    "compare_config",
    "finals_of",
    "grid_finals",
    "import_old_sweep",
    "main",
    "mean_cell",
    "multiples_of",
    "CENTRES",
    "centre_lr",
    "registered_lr",
    "spec",
    "sweep",
    "table",
]

ROOT = Path(__file__).resolve().parents[1]
KODAK = SHARED_DATA / "images" / "kodak"

CENTRES: Dict[str, float] = {
    "muon": 2e-4,
    "adam-cosine": 3e-4,
    "soap": 3e-4,
    "psgd-kron": 3e-4,
    "schedulefree-adamw": 1e-3,
    "adam": 1e-4,
    "esgd": 0.15,
    "esgd-adam-start": 0.1,
    "muon-esgd": 2e-4,
    "muon-esgd-eq": 6.67e-5,
    "psgd-kron-esgd": 3.33e-5,
}
"""The lr each optimizer's sweep is centred on: the lr it was registered with when the sweep began."""


@dataclass
class SweepConfig:
    """The contenders' lr sweep (centre lr x multiples, registered schedules) on Kodak photos, and its table."""

    optimizers: Tuple[str, ...] = (
        "muon",
        "adam-cosine",
        "soap",
        "psgd-kron",
        "schedulefree-adamw",
        "adam",
        "esgd",
        "esgd-adam-start",
        "muon-esgd",
        "muon-esgd-eq",
        "psgd-kron-esgd",
    )
    """Registered optimizer names."""
    multiples: Tuple[float, ...] = (1.0, 3.0, 1.0 / 3.0)
    """Multiples of each optimizer's centre lr (:data:`CENTRES`), run in this order."""
    extend: int = 2
    """Factor-3 steps the sweep may add past the smallest (largest) multiple, per side, while an optimizer's winner
    lies there; 0: the multiples only."""
    images: Tuple[str, ...] = ("kodim01", "kodim02", "kodim03", "kodim04")
    """Kodak photos by stem."""
    kodak: Path = KODAK
    """Folder of the Kodak photos."""
    size: int = 128
    """Photos are resized to size x size."""
    epochs: int = 100
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
    output_dir: Path = Path("outputs/sweep")
    """Where the run folders go (checkpoints, images: not kept)."""
    record: Path = ROOT / "docs" / "data" / "sweep"
    """The run records (committed)."""
    report: Optional[Path] = ROOT / "docs" / "sweep.md"
    """Markdown table to write (atomically); None: print it only."""
    figure: Optional[Path] = ROOT / "docs" / "figures" / "sweep_psnr.png"
    """PSNR against epochs and wall time of each optimizer's best lr so far; None: no figure."""
    plot_only: bool = False
    """Only rebuild the table from the records (and any run folders on disk); train nothing."""
    import_from: Optional[Path] = None
    """Record the finished runs of the old sweep layout (DIR/<name>-lr<lr:.3g>/<image>/, one gnerf-fit-image run
    folder each) that belong to this sweep, then write the table; trains nothing."""


def check_optimizers(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the ``--optimizers`` that are not registered."""
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"--optimizers: unknown {', '.join(unknown)}; choose from {', '.join(OPTIMIZERS)}")


def registered_lr(name: str) -> float:
    """The lr an optimizer runs with on a Gaussian image network when none is given."""
    check_optimizers([name])
    return OPTIMIZERS[name]().resolved_lr()


def centre_lr(name: str) -> float:
    """The lr ``name``'s sweep is centred on: :data:`CENTRES`'s, else its :func:`registered_lr`."""
    return CENTRES[name] if name in CENTRES else registered_lr(name)


def spec(name: str, multiple: float) -> str:
    """The variant spec of ``name`` at ``multiple`` times its centre lr (3 significant digits), canonical."""
    return canonical(f"{name}:lr={centre_lr(name) * multiple:.3g}")


def _specs(cfg: SweepConfig, finals: Optional[Dict[str, Dict[str, Any]]] = None) -> List[Tuple[str, float, str]]:
    """``(name, multiple, spec)`` in run order: every optimizer at the first multiple, then at the next ...; then,
    given the runs' ``finals`` (spec -> photo -> value), the extensions past an edge that they call for."""
    base = [(name, m, spec(name, m)) for m in cfg.multiples for name in cfg.optimizers]
    if finals is None:
        return base
    return base + [
        (name, m, spec(name, m))
        for name in cfg.optimizers
        for m in multiples_of(cfg, name, finals)
        if m not in cfg.multiples
    ]


def _candidates(cfg: SweepConfig) -> List[Tuple[str, float, str]]:
    """Every ``(name, multiple, spec)`` the sweep could run: the multiples and all possible extensions."""
    lo, hi = min(cfg.multiples), max(cfg.multiples)
    more = [lo / 3**k for k in range(1, cfg.extend + 1)] + [hi * 3**k for k in range(1, cfg.extend + 1)]
    return [(name, m, spec(name, m)) for m in (*cfg.multiples, *more) for name in cfg.optimizers]


def _swept(
    cfg: SweepConfig, name: str, finals: Dict[str, Dict[str, Any]]
) -> Tuple[List[Dict[str, Any]], Optional[int], str]:
    """``(entries, k, mark)`` of ``name``: one entry per lr the sweep runs, smallest first (``cfg.multiples`` and,
    while the winner over all of them is the smallest (largest), one more factor of 3 on that side, at most
    ``cfg.extend`` per side), and :func:`choose_winner`'s verdict on them."""
    ms = sorted(cfg.multiples)
    low = high = 0
    while True:
        entries = [
            {
                "lr": centre_lr(name) * m,
                "multiple": m,
                "spec": spec(name, m),
                "finals": finals.get(spec(name, m), {}),
            }
            for m in ms
        ]
        k, mark = choose_winner(entries, cfg.images)
        if mark == "winner" and k == 0 and low < cfg.extend and len(ms) > 1:
            ms.insert(0, ms[0] / 3)
            low += 1
        elif mark == "winner" and k == len(ms) - 1 and high < cfg.extend and len(ms) > 1:
            ms.append(ms[-1] * 3)
            high += 1
        else:
            return entries, k, mark


def multiples_of(cfg: SweepConfig, name: str, finals: Dict[str, Dict[str, Any]]) -> List[float]:
    """The multiples of ``name``'s lr the sweep runs, given what has finished (see :func:`_swept`)."""
    return [e["multiple"] for e in _swept(cfg, name, finals)[0]]


def compare_config(
    cfg: SweepConfig, plot_only: Optional[bool] = None, specs: Optional[Sequence[Tuple[str, float, str]]] = None
) -> CompareConfig:
    """The sweep as a grid of :mod:`experiments.compare` (of ``specs``, by default the multiples')."""
    check_optimizers(cfg.optimizers)
    if any(not (m > 0 and math.isfinite(m)) for m in cfg.multiples):
        raise ValueError(f"--multiples must be positive numbers, got {list(cfg.multiples)}")
    if cfg.extend < 0:
        raise ValueError(f"--extend must be 0 or more, got {cfg.extend}")
    specs = _specs(cfg) if specs is None else specs
    return kodak_grid(cfg, cfg.images, dict.fromkeys(s for _, _, s in specs), plot_only)


def _final(status: str, hist: Sequence[Dict[str, Any]], epochs: int) -> Any:
    """A run's final PSNR at ``epochs``, ``"diverged"``, or the epochs it has done (an int) when unfinished."""
    if status == "diverged":
        return "diverged"
    at = [r for r in hist if int(r["epoch"]) == epochs]
    return float(at[0]["psnr"]) if at else len(hist)


def choose_winner(entries: Sequence[Dict[str, Any]], images: Sequence[str]) -> Tuple[Optional[int], str]:
    """The index of the winning entry and ``"winner"``, ``"leading"`` or ``""`` (none).

    ``entries``: one per lr of one optimizer, ``{"lr": float, "multiple": float, "finals": {image: value}}``,
    a value being the final PSNR (float), ``"diverged"``, ``"failed"`` or anything else for a run not finished.
    See the module docstring for the rule.
    """

    def finished(v: Any) -> bool:
        return isinstance(v, float) or v == "diverged"

    complete = all(finished(e["finals"].get(i)) for e in entries for i in images)
    candidates = [
        (k, sum(e["finals"][i] for i in images) / len(images))
        for k, e in enumerate(entries)
        if images and all(isinstance(e["finals"].get(i), float) for i in images)
    ]
    if not candidates:
        return None, ""
    best = max(round(mean, 2) for _, mean in candidates)
    tied = [k for k, mean in candidates if round(mean, 2) == best]
    k = min(tied, key=lambda j: (abs(math.log(entries[j]["multiple"])), entries[j]["lr"]))
    return k, "winner" if complete else "leading"


def mean_cell(values: Sequence[Any]) -> str:
    """The mean column of one row of photos' finals: their mean, with how many of them when not all finished,
    ``diverged on N``, or ``-``."""
    done = [v for v in values if isinstance(v, float)]
    diverged = sum(v == "diverged" for v in values)
    if diverged:
        return f"diverged on {diverged}"
    if not done:
        return "-"
    return f"{sum(done) / len(done):.2f}" + ("" if len(done) == len(values) else f" ({len(done)} of {len(values)})")


def _cell(value: Any, epochs: int) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if value in ("diverged", "failed"):
        return value
    return f"({value}/{epochs} ep)" if value else "-"


def _sources(cfg: CompareConfig) -> Dict[str, int]:
    """How many runs of the grid are recorded finished (``record``), read from a run folder only (``folder``), or
    neither (``none``: not started, or a record of fewer epochs)."""
    counts: Dict[str, int] = {}
    for run in grid(cfg):
        rec = record_of(cfg, run)
        source = run_history(cfg, run)[2]
        key = "record" if rec is not None and rec.finished(cfg.epochs) else "folder" if source == "folder" else "none"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _imported(cfg: CompareConfig) -> int:
    n = 0
    for run in grid(cfg):
        rec = record_of(cfg, run)
        if rec is not None and str(rec.run_info().get("source", "")).startswith("imported"):
            n += 1
    return n


def best_runs(
    cfg: SweepConfig, finals: Optional[Dict[str, Dict[str, Any]]] = None
) -> Tuple[Dict[str, Dict[str, Tuple[str, List[Dict[str, Any]]]]], List[str]]:
    """Each optimizer's winning (or leading) lr's runs, ``{"NAME lr X": {photo: (status, history)}}``, and the photos
    on which every one of them has finished; ``finals`` as :func:`finals_of` gives them (read when not given)."""
    finals = finals_of(cfg) if finals is None else finals
    grid_cfg = resolve(compare_config(cfg, plot_only=True, specs=_candidates(cfg)))
    by_spec = {(run.optimizer, run.instance): run for run in grid(grid_cfg)}
    runs: Dict[str, Dict[str, Tuple[str, List[Dict[str, Any]]]]] = {}
    best_specs = []
    for name in cfg.optimizers:
        entries, k, _ = _swept(cfg, name, finals)
        if k is None:
            continue
        s = entries[k]["spec"]
        best_specs.append(s)
        runs[f"{name} lr {s.split('lr=', 1)[1]}"] = {
            image: run_history(grid_cfg, by_spec[(s, image)])[:2] for image in cfg.images if (s, image) in by_spec
        }
    photos = [
        i for i in cfg.images if best_specs and all(isinstance(finals.get(s, {}).get(i), float) for s in best_specs)
    ]
    return runs, photos


def finals_of(cfg: SweepConfig) -> Dict[str, Dict[str, Any]]:
    """spec -> photo -> final PSNR, ``"diverged"``, ``"failed"`` or the epochs done, for every spec the sweep could
    run (read from the records and run folders)."""
    return grid_finals(resolve(compare_config(cfg, plot_only=True, specs=_candidates(cfg))), cfg.epochs)


def grid_finals(grid_cfg: CompareConfig, epochs: int) -> Dict[str, Dict[str, Any]]:
    """spec -> photo -> final PSNR at ``epochs``, ``"diverged"``, ``"failed"`` or the epochs done, for every run
    of the (resolved) grid ``grid_cfg``."""
    failed = {(r.instance, r.optimizer): error for r, error in failures(grid_cfg)}
    finals: Dict[str, Dict[str, Any]] = {}
    for run in grid(grid_cfg):
        status, hist, _ = run_history(grid_cfg, run)
        value = _final(status, hist, epochs)
        if not isinstance(value, float) and value != "diverged" and (run.instance, run.optimizer) in failed:
            value = "failed"
        finals.setdefault(run.optimizer, {})[run.instance] = value
    return finals


def table(
    cfg: SweepConfig,
    command: str = "python -m experiments.sweep",
    finals: Optional[Dict[str, Dict[str, Any]]] = None,
) -> str:
    """The sweep's markdown page, computed from the records and run folders of its grid (``finals`` as
    :func:`finals_of` gives them; read when not given)."""
    finals = finals_of(cfg) if finals is None else finals
    grid_cfg = resolve(compare_config(cfg, plot_only=True, specs=_specs(cfg, finals)))
    counts = _sources(grid_cfg)
    total = sum(counts.values())
    lines = [
        "# The contenders' lr sweep",
        "",
        f"Written by `{command}` on {today()} from the run records in `{shown(cfg.record)}/` "
        f"({counts.get('record', 0)} of {total} runs recorded finished or diverged"
        + (f", {_imported(grid_cfg)} of them imported from the sweep's earlier layout" if _imported(grid_cfg) else "")
        + (f"; {counts['folder']} read from run folders only" if counts.get("folder") else "")
        + f"); `{command} --plot-only` rebuilds it from the records, and the command without it runs what is "
        "missing.",
        "",
        f"Protocol: Gaussian network (5 x 256, sigma 0.05), {cfg.size} x {cfg.size}, batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs, seed {cfg.seed}; each optimizer at its centre lr (the lr it was registered with "
        "when the sweep began) times "
        f"{', '.join(f'{m:.3g}' for m in cfg.multiples)} (rounded to 3 significant digits) with its registered "
        f"schedule, and up to {cfg.extend} more factors of 3 past an edge where the optimizer's winner lies there "
        "(the same rule for every optimizer). Cells: final whole-image PSNR (dB) after the last epoch; `(k/N ep)` a run under way (or recorded with fewer epochs), "
        "`-` not started, `diverged` a NaN loss, `failed` an error (rerun next time).",
        "",
        "Winner: per optimizer, the lr with the highest mean final PSNR over the photos, among the lrs that "
        "finished on every photo without diverging; **winner** once every lr of the optimizer has finished or "
        "diverged on every photo, *leading* before that. Means equal to 0.01 dB are a tie, broken toward the "
        "centre lr, then the smaller lr. The last column also says whether a winner is the lr its optimizer's name "
        "runs (the registry's, read when this page is written).",
        "",
        "| optimizer | lr | x centre | " + " | ".join(cfg.images) + " | mean | |",
        "|---|---|---|" + "---|" * (len(cfg.images) + 2),
    ]
    edges = []
    for name in cfg.optimizers:
        entries, k, mark = _swept(cfg, name, finals)
        if mark == "winner" and k in (0, len(entries) - 1) and len(entries) > 1:
            edges.append(name)
        for j, e in enumerate(entries):
            values = [e["finals"].get(i) for i in cfg.images]
            mean = mean_cell(values)
            lr_text = e["spec"].split("lr=", 1)[1]
            label = {"winner": "**winner**", "leading": "*leading*"}.get(mark, "") if j == k else ""
            if j == k and mark == "winner":
                registered = f"{registered_lr(name):.3g}"
                label += ", registered" if float(registered) == float(lr_text) else f", registered: {registered}"
                mean = f"**{mean}**"
            lines.append(
                f"| {name} | {lr_text} | {e['multiple']:.3g} | "
                + " | ".join(_cell(v, cfg.epochs) for v in values)
                + f" | {mean} | {label} |"
            )
    if edges:
        lines += [
            "",
            f"Winners still on the edge of the lrs tried (the limit of {cfg.extend} extension(s) per side "
            f"reached): {', '.join(edges)}.",
        ]
    return "\n".join(lines) + "\n"


def import_old_sweep(cfg: SweepConfig, old: Path, log=print) -> Dict[str, int]:
    """Record the finished runs of the old sweep layout (``old/<name>-lr<lr:.3g>/<image>/``) that belong to
    ``cfg``'s sweep, each checked against its config.json (protocol, optimizer, lr within rounding, schedule);
    returns how many ended in each outcome of :func:`experiments.records.import_run`."""
    grid_cfg = resolve(compare_config(cfg, plot_only=True))
    check_protocol(Path(cfg.record), protocol(grid_cfg), write=True)
    outcomes: Dict[str, int] = {}
    for name, m, s in _specs(cfg):
        lr = centre_lr(name) * m
        for image in cfg.images:
            folder = Path(old) / f"{name}-lr{lr:.3g}" / image
            run = Run("image", Path(cfg.kodak) / f"{image}.png", "gaussian", s, cfg.seed)
            rec = RunRecord(Path(cfg.record), run.instance, run.activation, run.variant, run.seed)
            expected = {
                "size": [cfg.size, cfg.size],
                "batch_size": cfg.batch_size,
                "seed": cfg.seed,
                "activation": "gaussian",
                "hidden_dim": 256,
                "num_layers": 5,
                "optimizer": name,
                "lr": lr,
                "schedule": schedule_name(OPTIMIZERS[name].schedule),
            }
            if not folder.is_dir():
                continue
            outcome, why = import_run(folder, rec, cfg.epochs, expected, {"machine": None, "jobs_at_once": None})
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            log(f"{folder}: {outcome} ({why})")
    return outcomes


def sweep(cfg: SweepConfig, log=print, command: str = "python -m experiments.sweep") -> str:
    """Run (or resume) the sweep, or only import / rebuild, then write and return the table."""
    if cfg.import_from is not None:
        outcomes = import_old_sweep(cfg, Path(cfg.import_from), log)
        log(f"import: {', '.join(f'{n} {k}' for k, n in sorted(outcomes.items())) or 'no run folders found'}")
    elif not cfg.plot_only:
        specs = _specs(cfg)
        while True:
            run_comparison(compare_config(cfg, specs=specs), log=log)
            more = _specs(cfg, finals_of(cfg))
            if [s for _, _, s in more] == [s for _, _, s in specs]:
                break
            log(f"past an edge: {', '.join(s for _, _, s in more if s not in {t for _, _, t in specs})}")
            specs = more
    finals = finals_of(cfg)
    text = table(cfg, command, finals)
    if cfg.report is not None:
        atomic_write_bytes(Path(cfg.report), text.encode())
    if cfg.figure is not None:
        runs, photos = best_runs(cfg, finals)
        if photos:
            plot(
                runs,
                photos,
                list(runs),
                Path(cfg.figure),
                f"Each optimizer at its best lr of the sweep: Gaussian 5 x 256, {cfg.size} x {cfg.size}, batch "
                f"{cfg.batch_size}, seed {cfg.seed}; {', '.join(photos)}",
            )
    return text


def main(argv: Optional[Sequence[str]] = None) -> None:
    grid_main(SweepConfig, sweep, "experiments.sweep", argv)


if __name__ == "__main__":
    interrupt_on_sigterm()  # `kill` (SIGTERM) stops the grid as ^C does: its local jobs are cancelled
    main()
