"""Each optimizer's learning-rate schedule, at its registered lr, on the lr sweep's photos and protocol.

    python -m experiments.schedule_sweep                 # every optimizer; writes docs/schedule_sweep.md
    python -m experiments.schedule_sweep --optimizers muon esgd --workers 1
    python -m experiments.schedule_sweep --plot-only     # the table from the records alone

The lr sweep (:mod:`experiments.sweep`) ran every optimizer with its registered schedule. This grid gives each
optimizer the fitting commands' other schedules too, at the lr its name runs (for the contenders, their sweep's
winner; for ``adam``, ``esgd`` and ``esgd-adam-start``, their registered lrs): constant, cosine to 0, exponential
to ``--exponential-ratio`` (1/100) of the lr, the ratio of gnerf's NeRF Adam schedule, and linear to 0; a registered
warm-up is kept.
Schedule-Free AdamW is left out: its averaging stands in for a schedule; so is ``adam``, whose
lr (1e-4) is ``adam-cosine``'s, so that ``adam-cosine``'s constant row is the paper's Adam. The protocol, the job engine and the
records are the lr sweep's (``docs/data/sweep/``), so the registered schedule's runs are the lr sweep's runs at
that lr and are not run again.

The table (``docs/schedule_sweep.md``): per optimizer and schedule, each photo's final whole-image PSNR and their
mean; the best schedule (the highest mean over the photos among the schedules that finished on every photo without
diverging; ties go to the registered schedule) in bold, **best** once every schedule of the optimizer has finished
or diverged on every photo, *leading* before that, and whether it is the registered one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.common import interrupt_on_sigterm, shown, today
from experiments.compare import grid_main, resolve, run_comparison
from experiments.contest import kodak_grid
from experiments.sweep import ROOT, SweepConfig, _cell, check_optimizers, grid_finals, mean_cell, registered_lr
from experiments.variants import canonical
from gnerf.files import atomic_write_bytes
from gnerf.optim import OPTIMIZERS
from gnerf.optim.schedules import SCHEDULES, schedule_name

__all__ = ["ScheduleSweepConfig", "best_schedule", "schedule_spec", "schedule_sweep", "specs_of", "table"]


@dataclass
class ScheduleSweepConfig(SweepConfig):
    """Every optimizer's schedules (constant, cosine, exponential, linear) at its registered lr, on the lr sweep's protocol."""

    optimizers: Tuple[str, ...] = (
        "muon",
        "adam-cosine",
        "soap",
        "psgd-kron",
        "esgd",
        "esgd-adam-start",
        "muon-esgd",
        "muon-esgd-eq",
        "psgd-kron-esgd",
    )
    """Registered optimizer names (Schedule-Free AdamW has no schedule to change; adam is adam-cosine's rows)."""
    exponential_ratio: float = 0.01
    """The exponential schedule decays to this fraction of the lr."""
    report: Optional[Path] = ROOT / "docs" / "schedule_sweep.md"
    figure: Optional[Path] = None


def schedule_spec(name: str, kind: str, exponential_ratio: float = 0.01) -> str:
    """The canonical variant spec of ``name`` at its registered lr with the schedule ``kind``; the registered
    schedule's spec is the lr sweep's (``muon:lr=6.67e-05``)."""
    lr = f"{registered_lr(name):.3g}"
    registered = OPTIMIZERS[name].schedule
    if kind == schedule_name(registered):
        return canonical(f"{name}:lr={lr}")
    text = f"{name}:lr={lr}:schedule={kind}"
    if kind == "exponential":
        text += f":lr_final={float(lr) * exponential_ratio:.3g}"
    if registered.warmup_steps:
        text += f":warmup_steps={registered.warmup_steps}"
    return canonical(text)


def specs_of(cfg: ScheduleSweepConfig) -> List[Tuple[str, str, str]]:
    """``(name, schedule, spec)`` for every optimizer and schedule, the registered schedule first."""
    check_optimizers(cfg.optimizers)
    if not 0 < cfg.exponential_ratio < 1:
        raise ValueError(f"--exponential-ratio must be between 0 and 1, got {cfg.exponential_ratio}")
    out = []
    for name in cfg.optimizers:
        registered = schedule_name(OPTIMIZERS[name].schedule)
        for kind in [registered] + [k for k in SCHEDULES if k != registered]:
            out.append((name, kind, schedule_spec(name, kind, cfg.exponential_ratio)))
    return out


def _grid(cfg: ScheduleSweepConfig, plot_only: bool):
    return kodak_grid(cfg, cfg.images, dict.fromkeys(s for _, _, s in specs_of(cfg)), plot_only)


def finals_of(cfg: ScheduleSweepConfig) -> Dict[str, Dict[str, Any]]:
    """spec -> photo -> final PSNR, ``"diverged"``, ``"failed"`` or the epochs done."""
    return grid_finals(resolve(_grid(cfg, plot_only=True)), cfg.epochs)


def best_schedule(rows: Sequence[Dict[str, Any]], images: Sequence[str]) -> Tuple[Optional[int], str]:
    """The index of the best row (``{"finals": {photo: value}}``, the registered schedule first) and ``"best"``,
    ``"leading"`` or ``""`` (none finished on every photo)."""
    means = [
        (k, round(sum(r["finals"][i] for i in images) / len(images), 2))
        for k, r in enumerate(rows)
        if images and all(isinstance(r["finals"].get(i), float) for i in images)
    ]
    if not means:
        return None, ""
    top = max(m for _, m in means)
    k = min(j for j, m in means if m == top)  # a tie goes to the registered schedule (row 0), then the order
    complete = all(isinstance(v, float) or v == "diverged" for r in rows for v in (r["finals"].get(i) for i in images))
    return k, "best" if complete else "leading"


def table(cfg: ScheduleSweepConfig, command: str, finals: Dict[str, Dict[str, Any]]) -> str:
    """The page: one row per optimizer and schedule (see the module docstring)."""
    lines = [
        "# Each optimizer's schedule at its registered lr",
        "",
        f"Written by `{command}` on {today()} from the run records in `{shown(cfg.record)}/` (shared with the lr "
        f"sweep, docs/sweep.md); `{command} --plot-only` rebuilds it from the records, and the command without it "
        "runs what is missing.",
        "",
        f"Protocol: the lr sweep's: Gaussian network (5 x 256, sigma 0.05), {cfg.size} x {cfg.size}, batch "
        f"{cfg.batch_size}, {cfg.epochs} epochs, seed {cfg.seed}; each optimizer at the lr its name runs, with each "
        f"schedule: constant, cosine to 0, exponential to {cfg.exponential_ratio:g} x the lr, linear to 0; a registered "
        "warm-up kept. Cells: final whole-image PSNR (dB) after the last epoch; `(k/N ep)` a run under way, `-` not "
        "started, `diverged` a NaN loss, `failed` an error.",
        "",
        "| optimizer | lr | schedule | " + " | ".join(cfg.images) + " | mean | |",
        "|---|---|---|" + "---|" * (len(cfg.images) + 2),
    ]
    by_name: Dict[str, List[Dict[str, Any]]] = {}
    for name, kind, s in specs_of(cfg):
        by_name.setdefault(name, []).append({"kind": kind, "spec": s, "finals": finals.get(s, {})})
    for name, rows in by_name.items():
        k, mark = best_schedule(rows, cfg.images)
        for j, row in enumerate(rows):
            values = [row["finals"].get(i) for i in cfg.images]
            mean = mean_cell(values)
            label = ""
            if j == k:
                label = {"best": "**best**", "leading": "*leading*"}[mark] + (", registered" if j == 0 else "")
                mean = f"**{mean}**" if mark == "best" else mean
            kind = row["kind"] + (" (registered)" if j == 0 else "")
            lines.append(
                f"| {name} | {registered_lr(name):.3g} | {kind} | "
                + " | ".join(_cell(v, cfg.epochs) for v in values)
                + f" | {mean} | {label} |"
            )
    return "\n".join(lines) + "\n"


def schedule_sweep(cfg: ScheduleSweepConfig, log=print, command: str = "python -m experiments.schedule_sweep") -> str:
    """Run (or resume) the grid unless ``plot_only``, then write and return the table."""
    if not cfg.plot_only:
        run_comparison(_grid(cfg, plot_only=False), log=log)
    text = table(cfg, command, finals_of(cfg))
    if cfg.report is not None:
        atomic_write_bytes(Path(cfg.report), text.encode())
    return text


def main(argv: Optional[Sequence[str]] = None) -> None:
    grid_main(ScheduleSweepConfig, schedule_sweep, "experiments.schedule_sweep", argv)


if __name__ == "__main__":
    interrupt_on_sigterm()  # `kill` (SIGTERM) stops the grid as ^C does: its local jobs are cancelled
    main()
