"""The per-epoch metrics of a fitting run: ``metrics.csv``, ``metrics.jsonl`` and tensorboard scalars."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, List, Optional

from gnerf.files import atomic_write_bytes

__all__ = ["MetricsLog"]


class MetricsLog:
    """metrics.csv + metrics.jsonl (rewritten atomically each epoch) and tensorboard scalars."""

    def __init__(self, out: Path, history: List[Dict[str, float]], purge_step: Optional[int]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.out = out
        self.rows = list(history)
        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)

    def add(self, row: Dict[str, float]) -> None:
        self.rows.append(row)
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.out / "metrics.csv", buf.getvalue().encode())
        atomic_write_bytes(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows).encode())
        for k, v in row.items():
            if k not in ("epoch", "iteration"):
                self.writer.add_scalar(f"epoch/{k}", v, int(row["iteration"]))
        self.writer.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()
