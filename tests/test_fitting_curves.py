"""The fitting curves of ESGD, ESGD-Max, Adam and esgd-adam-start, pinned.

A tiny image fit (kodim01 at 32 x 32, a 3-layer 32-wide Gaussian field, batch 64, 13 epochs = 208 steps,
seed 0) through ``fit_image``, as the command line runs it. The epoch losses were recorded with the
optimizers as they are; a change to an optimizer's maths, defaults, cadence or probes moves them.

Tolerances come from the curves' sensitivity, measured by scaling the initial weights by 1 + 1e-6 N(0, 1):
the epoch losses of ESGD-Max, Adam and esgd-adam-start moved by at most 3.3e-5 (relative), those of the
published ESGD, whose effective step grows with the step count, by up to 1.5e-2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gnerf.optim import OPTIMIZERS
from gnerf.tasks import ImageFitConfig, fit_image
from gnerf.tasks.config import FieldConfig

from shared_data import KODIM01, require

#: (options, relative tolerance, {epoch: loss}) per optimizer.
CURVES = {
    "esgd": ({}, 5e-2, {1: 0.120169, 3: 0.0364423, 5: 0.0227985, 13: 0.00913193}),
    "esgd-max": ({}, 1e-4, {1: 0.225302, 3: 0.0721307, 5: 0.0424721, 13: 0.0209855}),
    "adam": ({}, 1e-4, {1: 0.249438, 3: 0.209823, 5: 0.177774, 13: 0.0950195}),
    # Adam's first 40 steps (2.5 epochs), curvature from step 30 on, ESGD from step 41
    "esgd-adam-start": (
        dict(adam_steps=40, precondition_warmup_steps=10),
        1e-4,
        {1: 0.249438, 3: 0.154771, 5: 0.0265379, 13: 0.009285},
    ),
}


@pytest.mark.parametrize("name", list(CURVES))
def test_the_fitting_curve_is_the_recorded_one(tmp_path: Path, name: str):
    options, rtol, losses = CURVES[name]
    cfg = ImageFitConfig(
        image=require(KODIM01),
        size=(32, 32),
        epochs=13,
        batch_size=64,
        threads=1,
        progress=False,
        field=FieldConfig(hidden_dim=32, num_layers=3),
        output_dir=tmp_path / "run",
        optim=OPTIMIZERS[name](lr=None, **options),
    )
    history = fit_image(cfg).history
    assert {e: history[e - 1]["loss"] for e in losses} == pytest.approx(losses, rel=rtol)
