"""Benchmark (7): where the time of one nerfstudio ``train_iteration`` goes, per method.

Each trainer's parts are timed from outside, by wrapping them on the instance (device synchronised
before and after every part, so the parts add up to the step):

* ray sampling: ``datamanager.next_train`` (pixel batch, camera rays);
* sampler: the model's point sampler (``sampler`` / ``sampler_uniform``);
* field forward: the radiance field (``field`` / ``field_coarse``);
* rendering: the rest of ``get_outputs`` (weights, RGB, accumulation and depth renderers);
* loss and metrics: ``get_loss_dict`` and ``get_metrics_dict``;
* optimizer, scheduler: the optimizers' and the schedulers' steps;
* backward and the rest: the step's time minus all of the above (mostly ``backward``, with the
  trainer's own bookkeeping).

The synchronisations cost a little on a GPU (nothing on a CPU). The trainers take turns, one step
each, as in (4), but without (4)'s optional contenders, so the step times of the two need not agree.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from benchmarks.common import section, sync, table
from benchmarks.nerf import THROUGHPUT_METHODS, NerfSize, image_width, setup_trainers, size, spec_line

PARTS = (
    "ray sampling",
    "sampler",
    "field forward",
    "rendering",
    "loss and metrics",
    "backward and the rest",
    "optimizer",
    "scheduler",
)


def _timed(fn: Callable, clock: Dict[str, float], part: str, device: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sync(device)
            clock[part] += time.perf_counter() - t0

    return wrapper


def _instrument(trainer, device: str) -> Dict[str, float]:
    """Wrap the trainer's parts on the instance; returns the clock they add their seconds to."""
    clock = {p: 0.0 for p in PARTS + ("get_outputs",)}
    model, dm, opts = trainer.pipeline.model, trainer.pipeline.datamanager, trainer.optimizers
    dm.next_train = _timed(dm.next_train, clock, "ray sampling", device)
    sampler = getattr(model, "sampler", None) or model.sampler_uniform
    field = getattr(model, "field", None) or model.field_coarse
    sampler.forward = _timed(sampler.forward, clock, "sampler", device)
    field.forward = _timed(field.forward, clock, "field forward", device)
    model.get_outputs = _timed(model.get_outputs, clock, "get_outputs", device)
    model.get_loss_dict = _timed(model.get_loss_dict, clock, "loss and metrics", device)
    model.get_metrics_dict = _timed(model.get_metrics_dict, clock, "loss and metrics", device)
    for name in ("optimizer_scaler_step_some", "optimizer_scaler_step_all"):
        setattr(opts, name, _timed(getattr(opts, name), clock, "optimizer", device))
    opts.scheduler_step_all = _timed(opts.scheduler_step_all, clock, "scheduler", device)
    return clock


def breakdown(data: Path, device: str, quick: bool, sz: Optional[NerfSize] = None) -> Tuple[str, Dict]:
    """(7): milliseconds per step in each part of ``train_iteration``, per method."""
    sz = sz or size(quick)
    warm, timed = (sz.cadence[0] + 2, 50) if quick else (sz.cadence[0] + 5, 200)
    methods = THROUGHPUT_METHODS
    with tempfile.TemporaryDirectory() as tmp:
        trainers = setup_trainers(data, Path(tmp), sz, warm + timed, device, methods)
        px = image_width(trainers)
        clocks = {m: _instrument(trainers[m], device) for m in methods}
        totals = {m: 0.0 for m in methods}
        for step in range(warm + timed):
            if step == warm:
                for c in clocks.values():
                    c.update({p: 0.0 for p in c})
            for m in methods if step % 2 == 0 else methods[::-1]:
                sync(device)
                t0 = time.perf_counter()
                trainers[m].train_iteration(step)
                sync(device)
                if step >= warm:
                    totals[m] += time.perf_counter() - t0
    ms: Dict[str, Dict[str, float]] = {}
    for m in methods:
        c = clocks[m]
        part = {p: c[p] for p in PARTS}
        part["rendering"] = c["get_outputs"] - c["sampler"] - c["field forward"]
        part["backward and the rest"] = totals[m] - sum(v for p, v in part.items() if p != "backward and the rest")
        ms[m] = {p: 1e3 * v / timed for p, v in part.items()}
        ms[m]["step"] = 1e3 * totals[m] / timed
    rows = [[p] + [ms[m][p] for m in methods] for p in PARTS + ("step",)]
    body = table(["part (ms per step)"] + list(methods), rows)
    notes = [
        f"{warm} warm-up steps then {timed} timed steps each, the trainers stepping in turn; the device is "
        "synchronised around every part (on a GPU this slows the step a little)",
        "gaussian-nerf-esgd's window holds its curvature steps (the double backward is in 'backward and the rest')",
    ]
    return section("(7) Where a train_iteration's time goes", spec_line(sz, device, data, px), body, notes), ms
