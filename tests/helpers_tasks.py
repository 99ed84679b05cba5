"""Shared helpers for the fitting-task tests (small, CPU-sized runs on ../shared/data) and the optimizer
tests (a tiny Gaussian MLP, a full-batch training loop)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

import pytest
import torch

from gnerf.errors import InputError
from gnerf.fields import CoordinateMLP
from gnerf.optim.step import should_create_graph
from gnerf.tasks.config import FieldConfig


def small(**overrides):
    """Keyword arguments for a small, quiet, single-threaded run (3-layer, 64-wide network)."""
    kwargs = dict(field=FieldConfig(hidden_dim=64, num_layers=3), threads=1, progress=False, batch_size=256)
    kwargs.update(overrides)
    return kwargs


def read_metrics(run: Path) -> List[Dict[str, float]]:
    """metrics.csv rows as floats, after checking that metrics.jsonl holds the same rows."""
    with open(run / "metrics.csv", newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [{k: float(v) for k, v in r.items()} for r in jsonl] == rows
    return rows


def check_run_folder(run: Path, epochs: int, metric: str) -> List[Dict[str, float]]:
    """Assert the loop's outputs exist and read back; returns the metrics rows."""
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == epochs
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert all(metric in r and "loss" in r and "wall_time" in r and "iteration" in r for r in rows)
    assert all(b["wall_time"] > a["wall_time"] for a, b in zip(rows, rows[1:]))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)  # tensors and plain values only
    assert ckpt["epoch"] == epochs and ckpt["iteration"] == int(rows[-1]["iteration"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert f"epoch/{metric}" in scalars and "train/loss" in scalars
    assert len(events.Scalars(f"epoch/{metric}")) == epochs
    return rows


def check_bad_inputs_are_named(
    tmp_path: Path, fit: Callable, make_cfg: Callable, key: str, missing: str, bad_files: Sequence[Tuple[str, str, str]]
) -> None:
    """``fit(make_cfg(run, **{key: file}))`` names a ``missing`` file and each ``(name, text, match)`` of
    ``bad_files``, written with ``text``, in an ``InputError`` matching ``match``; no run folder is left behind."""
    run = tmp_path / "r"
    with pytest.raises(InputError, match=missing):
        fit(make_cfg(run, **{key: tmp_path / missing}))
    for name, text, match in bad_files:
        bad = tmp_path / name
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            fit(make_cfg(run, **{key: bad}))
    assert not run.exists()


def gaussian_mlp(out_dim: int, hidden_dim: int, sigma: float = 0.5, **kwargs) -> CoordinateMLP:
    """A 3-layer Gaussian-activation coordinate MLP from 2-D inputs (the optimizer tests' tiny network)."""
    return CoordinateMLP(
        2,
        out_dim,
        hidden_dim=hidden_dim,
        num_layers=3,
        activation="gaussian",
        activation_kwargs={"sigma": sigma},
        **kwargs,
    )


def esgd_counters(opt: Any) -> Set[Tuple[int, int]]:
    """The ``(step, curvature_updates)`` pairs found in the per-parameter state of an ESGD-family optimizer, or of
    its ``state_dict()``: one pair when every parameter has taken every step."""
    states = opt["state"].values() if isinstance(opt, dict) else opt.state.values()
    return {(int(s["step"]), int(s["curvature_updates"])) for s in states}


def train_steps(net, opt, x, y, steps: int, sched=None) -> List[float]:
    """``steps`` full-batch squared-error steps under the curvature protocol (then ``sched.step()``, if
    given); the losses."""
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward(create_graph=should_create_graph(opt))
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses
