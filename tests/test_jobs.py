"""The grid's job engine: an interrupted grid leaves no fitting command training on."""

import os
import signal
import time

import pytest

from experiments.compare import CompareConfig, grid, resolve, run_args
from experiments.jobs import EngineConfig, JobSpec, run_jobs
from gnerf.files import lock_holder


def _wait(condition, seconds=120.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_an_interrupted_grid_stops_the_fitting_commands_of_its_running_jobs(image, tmp_path):
    """^C (or SIGTERM made KeyboardInterrupt by the front ends) cancels the local jobs and stops their commands, also
    when SIGINT is ignored, as in a grid started in the background with `&`."""
    cfg = resolve(
        CompareConfig(
            inputs=(image,),
            activations=("gaussian",),
            optimizers=("adam",),
            epochs=100_000,  # far longer than the test: it trains until stopped
            size=(16, 16),
            hidden_dim=8,
            num_layers=2,
            batch_size=64,
            output_dir=tmp_path / "cmp",
        )
    )
    (run,) = grid(cfg)
    folder = run.folder(cfg.output_dir)
    long = JobSpec("image", tuple(run_args(cfg, run, resume=False)), folder, "long")
    quick = JobSpec("image", ("--image", str(tmp_path / "missing.png")), tmp_path / "quick", "quick")
    held = []

    def done(spec, result):  # the quick job failed: interrupt the grid once the long one trains
        assert spec is quick and result["status"] == "failed"
        assert _wait(lambda: lock_holder(folder) is not None), "the long run never took its folder"
        held.append(lock_holder(folder))
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the jobs inherit an ignored SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            run_jobs([quick, long], EngineConfig(workers=2, threads=1, poll_s=0.1), tmp_path / "jobs", done)
    finally:
        signal.signal(signal.SIGINT, before)
    assert _wait(lambda: lock_holder(folder) is None, 60.0), "the fitting command trains on after the interrupt"
    pid = held[0]
    assert _wait(lambda: not os.path.exists(f"/proc/{pid}"), 30.0)
