"""Run records: the finished runs of a grid, kept in the repository so that a grid resumes in a new checkout.

Run folders (``outputs/``) hold checkpoints and images and do not survive a working session; a grid
with a record folder (``CompareConfig.record``, e.g. ``docs/data/sweep``) copies every finished run's
small text files there, and a recorded run is not run again::

    <record>/grid.json                                    the protocol every run of the record shares
    <record>/<instance>/<activation>/<variant>/seed<k>.jsonl      the run's metrics.jsonl (one row per epoch)
    <record>/<instance>/<activation>/<variant>/seed<k>.json       the run's config.json
    <record>/<instance>/<activation>/<variant>/seed<k>.run.json   how it was made: command, machine, torch
                                                                  threads, jobs at a time, date, source
    <record>/<instance>/<activation>/<variant>/seed<k>.failed.json  a diverged run (NaN loss): its error line

``<variant>`` is the optimizer variant's folder name (:attr:`experiments.variants.Variant.slug`, the
registered name for a plain optimizer). A run is recorded when its metrics hold every epoch of the
grid (a record with fewer epochs, after ``--epochs`` was raised, is run again from the start: checkpoints
are not recorded), and when it diverged: ``seed<k>.failed.json`` with the metrics it had, never run
again. Runs that failed for any other reason are not recorded, so the next invocation retries them.
Every file is written atomically (:func:`gnerf.files.atomic_write_bytes`), the metrics last, so a
record is either whole or absent.

``grid.json`` holds the protocol (task, sizes, batch, network); a grid whose protocol differs is
refused rather than mixed in. Its epochs are not part of it: they may be raised.

:func:`import_run` records a finished run folder of another layout (an older sweep, say) after
checking its config against the grid's run, and says why when it does not.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from experiments.jobs import machine_line
from experiments.variants import recorded_equal
from gnerf.files import atomic_write_bytes

__all__ = [
    "RunRecord",
    "check_protocol",
    "config_mismatches",
    "import_run",
    "machine_line",
    "read_history",
    "record_folder_run",
]


def _rows(text: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_history(path: Path) -> List[Dict[str, Any]]:
    """The rows of a metrics.jsonl (empty when it is absent)."""
    return _rows(path.read_text()) if path.is_file() else []


class RunRecord:
    """The record files of one run: ``<record>/<instance>/<activation>/<variant>/seed<k>.*``."""

    def __init__(self, record: Path, instance: str, activation: str, variant: str, seed: int) -> None:
        self.folder = Path(record) / instance / activation / variant
        self.stem = f"seed{seed}"

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"

    @property
    def metrics(self) -> Path:
        return self.path(".jsonl")

    @property
    def config(self) -> Path:
        return self.path(".json")

    @property
    def provenance(self) -> Path:
        return self.path(".run.json")

    @property
    def failed(self) -> Path:
        return self.path(".failed.json")

    def history(self) -> List[Dict[str, Any]]:
        return read_history(self.metrics)

    def diverged(self) -> bool:
        return self.failed.is_file()

    def epochs(self) -> int:
        return len(self.history())

    def finished(self, epochs: int) -> bool:
        """Nothing left to run: the run diverged, or its recorded metrics hold ``epochs`` epochs."""
        return self.diverged() or self.epochs() >= epochs

    def run_info(self) -> Dict[str, Any]:
        """The provenance (``seed<k>.run.json``); empty when there is none."""
        return json.loads(self.provenance.read_text()) if self.provenance.is_file() else {}

    def write(
        self,
        metrics: bytes,
        config: Optional[bytes],
        info: Mapping[str, Any],
        failed: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Write the record: config, provenance, metrics, then (a diverged run) failed.json, each atomically."""
        if config is not None:
            atomic_write_bytes(self.config, config)
        atomic_write_bytes(self.provenance, (json.dumps(dict(info), indent=1, sort_keys=True) + "\n").encode())
        if metrics or failed is None:
            atomic_write_bytes(self.metrics, metrics)
        elif self.metrics.is_file():  # diverged before its first epoch: no metrics of an older run stay beside it
            self.metrics.unlink()
        if failed is not None:
            atomic_write_bytes(self.failed, (json.dumps(dict(failed), indent=1, sort_keys=True) + "\n").encode())
        elif self.failed.is_file():  # a finished run replaces an older divergence (only by hand: those are not rerun)
            self.failed.unlink()


def record_folder_run(
    rec: RunRecord, folder: Path, epochs: int, info: Mapping[str, Any], diverged: Optional[Mapping[str, Any]] = None
) -> bool:
    """Copy run ``folder``'s metrics.jsonl and config.json into ``rec`` if the run finished (``epochs`` rows) or
    ``diverged`` (then with its error, whatever it had done); returns whether it was recorded."""
    metrics = folder / "metrics.jsonl"
    config = folder / "config.json"
    data = metrics.read_bytes() if metrics.is_file() else b""
    if diverged is None and len(_rows(data.decode())) < epochs:
        return False
    info = {"recorded": datetime.date.today().isoformat(), **info, "epochs": len(_rows(data.decode()))}
    rec.write(data, config.read_bytes() if config.is_file() else None, info, diverged)
    return True


def check_protocol(record: Path, protocol: Mapping[str, Any], write: bool) -> None:
    """Refuse a grid whose ``protocol`` differs from the one ``record/grid.json`` holds; write it there when
    absent and ``write``.

    Raises:
        ValueError: naming the record and the settings that differ.
    """
    path = Path(record) / "grid.json"
    want = json.loads(json.dumps(dict(protocol), default=str))
    if path.is_file():
        have = json.loads(path.read_text())
        diff = [
            f"{k} {have.get(k)!r} there, {want.get(k)!r} here"
            for k in sorted(set(have) | set(want))
            if have.get(k) != want.get(k)
        ]
        if diff:
            raise ValueError(
                f"the record {str(record)!r} holds runs of another protocol ({'; '.join(diff)}); "
                "give this grid another record folder"
            )
    elif write:
        atomic_write_bytes(path, (json.dumps(want, indent=1, sort_keys=True) + "\n").encode())


def config_mismatches(config: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
    """What differs between a run's config.json and the ``expected`` settings (keys: ``size``, ``batch_size``,
    ``seed``, ``activation``, ``hidden_dim``, ``num_layers``, ``optimizer``, ``lr``, ``schedule``, and any other
    top-level key of config.json); an ``lr`` equal as :func:`experiments.variants.recorded_equal` has it is the same."""
    field = config.get("field", {})
    optim = config.get("optim", {})
    have = {
        "activation": field.get("activation"),
        "hidden_dim": field.get("hidden_dim"),
        "num_layers": field.get("num_layers"),
        "optimizer": optim.get("name"),
        "lr": optim.get("lr"),
        "schedule": config.get("schedule", {}).get("name"),
    }
    out = []
    for key, want in expected.items():
        got = have[key] if key in have else config.get(key)
        if key == "lr":
            if not recorded_equal(got, want):
                out.append(f"lr {got} (expected {want})")
        elif key == "size":
            if list(got or []) != list(want):
                out.append(f"size {got} (expected {list(want)})")
        elif got != want:
            out.append(f"{key} {got!r} (expected {want!r})")
    return out


def import_run(
    folder: Path, rec: RunRecord, epochs: int, expected: Mapping[str, Any], info: Mapping[str, Any]
) -> Tuple[str, str]:
    """Record the finished run ``folder`` (a fitting command's run folder of any layout) as ``rec``.

    Returns ``(outcome, why)``: ``recorded``; ``present`` (the record exists already: left as it is);
    ``unfinished`` (fewer than ``epochs`` epochs); ``mismatch`` (its config.json differs from ``expected``,
    see :func:`config_mismatches`); ``missing`` (no metrics.jsonl or config.json).
    """
    folder = Path(folder)
    if rec.finished(epochs):
        return "present", f"{rec.metrics} exists"
    if not (folder / "metrics.jsonl").is_file() or not (folder / "config.json").is_file():
        return "missing", "no metrics.jsonl or config.json"
    done = len(read_history(folder / "metrics.jsonl"))
    if done < epochs:
        return "unfinished", f"{done} of {epochs} epochs"
    config = json.loads((folder / "config.json").read_text())
    wrong = config_mismatches(config, expected)
    if wrong:
        return "mismatch", "; ".join(wrong)
    log = folder / "log.txt"
    commands = [line[2:] for line in log.read_text().splitlines() if line.startswith("$ ")] if log.is_file() else []
    record_folder_run(
        rec,
        folder,
        epochs,
        {
            "command": commands[-1] if commands else None,
            "torch_threads": config.get("threads"),
            **info,
            "source": f"imported from {folder}",
            "recorded_on": machine_line(),
        },
    )
    return "recorded", f"{done} epochs"
