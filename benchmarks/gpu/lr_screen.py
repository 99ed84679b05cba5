"""The lego learning-rate screen in one table: each method's test PSNR at one step, at every lr multiple screened.

Reads the records that ``benchmarks/gpu/lego_contest.py`` writes in each screen folder (``--screens``, default
every ``x*`` folder of docs/lego_cpu_lr_screen: records made with ``--lr-scale X``, the multiple read from each
record's protocol; ``x1`` holds the CPU contest's records at the lrs registered when the screen ran, which the table
names from the records), and writes one markdown table: per method, its lrs at x1, its test PSNR at ``--step`` (an
evaluation at exactly that step; ``-`` where a record has not reached it) for each multiple, the best multiple in
bold, and whether that best lies on an edge of what was screened (then the screen goes on past it: the multiple x 3
or / 3, the rule of the image sweep). The records must share one protocol but the multiple. ::

    python -m benchmarks.gpu.lr_screen                                   # docs/lego_cpu_lr_screen/lr_screen.md
    python -m benchmarks.gpu.lr_screen --step 500 --out /tmp/screen.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks.common import shown, table
from benchmarks.gpu.lego_contest import REFERENCE
from benchmarks.gpu.lego_convergence import VANILLA
from gnerf.files import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[2]
SCREEN = ROOT / "docs" / "lego_cpu_lr_screen"


def read(folders: Sequence[Path]) -> Dict[str, Dict[float, dict]]:
    """``{method: {multiple: record}}`` from the method records (``<method>.json`` with a ``protocol``) in
    ``folders``; records of another protocol (the multiple aside) than the first one read stop the script."""
    out: Dict[str, Dict[float, dict]] = {}
    base: Optional[dict] = None
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")):
            rec = json.loads(path.read_text())
            if not isinstance(rec, dict) or "protocol" not in rec or "method" not in rec:
                continue  # a report's JSON, not a method's record
            protocol = dict(rec["protocol"])
            multiple = float(protocol.pop("lr_scale", 1.0))
            if base is None:
                base = protocol
            elif protocol != base:
                raise SystemExit(f"{path}: recorded under another protocol ({protocol}; the others: {base})")
            out.setdefault(rec["method"], {})[multiple] = rec
    return out


def psnr_at(rec: dict, step: int) -> Optional[float]:
    """The test PSNR evaluated at exactly ``step``, or None where the record has none there."""
    return next((e["psnr"] for e in rec.get("curve", []) if e["step"] == step), None)


def last_before(rec: dict, step: int) -> str:
    """``(PSNR at step k)``, the record's last evaluation before ``step``, for a record that stops short of it."""
    curve = [e for e in rec.get("curve", []) if e["step"] < step]
    return f"- ({curve[-1]['psnr']:.2f} at {curve[-1]['step']})" if curve else "-"


def report(records: Dict[str, Dict[float, dict]], step: int, sources: Sequence[Path]) -> str:
    multiples = sorted({m for by in records.values() for m in by})
    rows: List[List[str]] = []
    for method, by in sorted(records.items(), key=lambda kv: (kv[0] == VANILLA, kv[0] != REFERENCE, kv[0])):
        values = {m: psnr_at(by[m], step) for m in by}
        reached = {m: v for m, v in values.items() if v is not None and math.isfinite(v)}
        best = max(reached, key=reached.get) if reached else None
        edge = ""
        if best is not None and len(reached) > 1:
            tried = sorted(by)  # a multiple that has not reached the step yet was still tried
            if best == tried[-1]:
                edge = f"highest multiple tried: next x{best * 3:g}"
            elif best == tried[0]:
                edge = f"lowest multiple tried: next x{best / 3:.3g}"
        cells = []
        for m in multiples:
            v = values.get(m)
            text = "" if m not in by else (last_before(by[m], step) if v is None else f"{v:.2f}")
            cells.append(f"**{text}**" if m == best else text)
        base = by[1.0].get("schedule", "").split(",")[0] if 1.0 in by else ""
        rows.append([method, base, *cells, f"x{best:g}" if best is not None else "", edge])
    lines = [
        f"# The lego learning-rate screen: test PSNR (dB) at step {step:,}",
        "",
        "Written by `python -m benchmarks.gpu.lr_screen` from the method records in "
        + ", ".join(f"`{shown(p)}`" for p in sources)
        + ". Protocol: the CPU lego contest's (benchmarks/gpu/README.md; each method's registered schedule "
        "compressed to N steps), with every learning rate of a method times the multiple (`--lr-scale`) of its lrs "
        "at x1, those registered when the screen ran (column `x1 lrs`). A cell is the mean test PSNR over the "
        f"contest's test views at step {step:,}; `-`: not reached yet (in brackets, its last evaluation before); empty: not screened. Bold: the method's best multiple so far. "
        "This is an early step of each schedule: the screen shows which lrs leave lego's initial plateau (about "
        "11 dB) and how fast, not which end best.",
        "",
        table(["method", "x1 lrs", *[f"x{m:g}" for m in multiples], "best", "past an edge"], rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--screens", type=Path, nargs="*", help="screen folders (default: every x* below the screen's)")
    p.add_argument("--step", type=int, default=500, help="the step compared")
    p.add_argument("--out", type=Path, default=SCREEN / "lr_screen.md")
    args = p.parse_args(argv)
    screens = args.screens if args.screens is not None else sorted(SCREEN.glob("x*"))
    sources = list(screens)
    text = report(read(sources), args.step, sources)
    atomic_write_bytes(args.out, text.encode())
    print(text)
    return text


if __name__ == "__main__":
    main()
