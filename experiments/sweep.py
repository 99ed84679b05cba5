"""The contenders' learning-rate sweep on the shared Kodak photos, resumable, with its table.

Each contender (and Adam and ESGD, for the same chance) runs at its registered lr and at the sweep's
multiples of it, with its registered schedule, on kodim01-kodim04 at the sweep protocol (128 x 128,
batch 512, 100 epochs, Gaussian sigma 0.05, seed 0). A finished run is skipped, an interrupted one
resumed, a failed one reported in the table with its error and the others go on. The table is the
mean final whole-image PSNR over the photos that finished, per optimizer and lr::

    python -m experiments.sweep --optimizers muon adam-cosine --images kodim01 --report docs/sweep.md
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import tyro

from gnerf.optim import OPTIMIZERS

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images" / "kodak"


@dataclass
class SweepConfig:
    optimizers: List[str] = field(default_factory=lambda: ["muon", "adam-cosine", "soap", "psgd-kron",
                                                            "schedulefree-adamw", "adam", "esgd", "esgd-adam-start"])
    """Registered optimizer names."""
    multiples: List[float] = field(default_factory=lambda: [1.0, 3.0, 1.0 / 3.0])
    """Multiples of each optimizer's registered lr, run in this order."""
    images: List[str] = field(default_factory=lambda: ["kodim01", "kodim02", "kodim03", "kodim04"])
    kodak: Path = KODAK
    """Folder of the Kodak photos."""
    size: int = 128
    epochs: int = 100
    seed: int = 0
    threads: int = 1
    output_dir: Path = Path("outputs/sweep")
    report: Optional[Path] = None
    """Markdown table to write (atomically); None: print it only."""
    report_only: bool = False
    """Only rebuild the table from the runs on disk."""


def registered_lr(name: str) -> float:
    return OPTIMIZERS[name]().resolved_lr()


def run_folder(cfg: SweepConfig, name: str, lr: float, image: str) -> Path:
    return cfg.output_dir / f"{name}-lr{lr:.3g}" / image


def final_psnr(folder: Path, epochs: int) -> Optional[float]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[-1]["psnr"] if rows and rows[-1]["epoch"] >= epochs else None


def run_one(cfg: SweepConfig, name: str, lr: float, image: str) -> Tuple[Optional[float], str]:
    folder = run_folder(cfg, name, lr, image)
    done = final_psnr(folder, cfg.epochs)
    if done is not None:
        return done, ""
    cmd = [sys.executable, "-c", "from gnerf.tasks.cli import image_main; image_main()", "--image", str(cfg.kodak / f"{image}.png"),
           "--size", str(cfg.size), str(cfg.size), "--epochs", str(cfg.epochs), "--seed", str(cfg.seed),
           "--threads", str(cfg.threads), "--no-progress", "--output-dir", str(folder)]
    if (folder / "checkpoint.pt").exists():
        cmd.append("--resume")
    cmd += [f"optim:{name}", "--optim.lr", repr(lr)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit {proc.returncode}"
        (cfg.output_dir / "failed").mkdir(parents=True, exist_ok=True)
        (cfg.output_dir / "failed" / f"{name}-lr{lr:.3g}-{image}.txt").write_text(proc.stderr)
        return None, error
    return final_psnr(folder, cfg.epochs), ""


def table(cfg: SweepConfig, errors: Dict[Tuple[str, float, str], str]) -> str:
    lines = [f"Sweep protocol: Gaussian network (5 x 256, sigma 0.05), {cfg.size} x {cfg.size}, batch 512, "
             f"{cfg.epochs} epochs, seed {cfg.seed}, each optimizer's registered schedule; final whole-image PSNR "
             "(dB), mean over the photos that finished (their count in brackets).", "",
             "| optimizer | lr | " + " | ".join(cfg.images) + " | mean |", "|---|---|" + "---|" * (len(cfg.images) + 1)]
    for name in cfg.optimizers:
        for m in cfg.multiples:
            lr = registered_lr(name) * m
            cells, values = [], []
            for image in cfg.images:
                v = final_psnr(run_folder(cfg, name, lr, image), cfg.epochs)
                err = errors.get((name, lr, image))
                cells.append(f"{v:.2f}" if v is not None else ("failed" if err else "-"))
                if v is not None:
                    values.append(v)
            mean = f"{sum(values) / len(values):.2f} ({len(values)})" if values else "-"
            lines.append(f"| {name} | {lr:.3g} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n"


def main(cfg: SweepConfig) -> None:
    unknown = [n for n in cfg.optimizers if n not in OPTIMIZERS]
    if unknown:
        raise SystemExit(f"error: --optimizers: unknown {', '.join(unknown)}; choose from {', '.join(OPTIMIZERS)}")
    errors: Dict[Tuple[str, float, str], str] = {}
    if not cfg.report_only:
        for image in cfg.images:
            for m in cfg.multiples:
                for name in cfg.optimizers:
                    lr = registered_lr(name) * m
                    psnr, error = run_one(cfg, name, lr, image)
                    if error:
                        errors[(name, lr, image)] = error
                    print(f"{image} {name} lr {lr:.3g}: " + (f"{psnr:.2f} dB" if psnr is not None else error),
                          flush=True)
    text = table(cfg, errors)
    print(text)
    if cfg.report is not None:
        from gnerf.files import atomic_write_bytes

        atomic_write_bytes(cfg.report, text.encode())


if __name__ == "__main__":
    main(tyro.cli(SweepConfig))
