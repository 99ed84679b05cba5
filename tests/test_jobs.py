"""The grid's job engine: an interrupted grid leaves no fitting command training on."""

import os
import signal
import time
from pathlib import Path

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


def _ignores_sigint(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(mask & (1 << (signal.SIGINT - 1)))


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_an_interrupted_grid_stops_the_fitting_commands_of_its_running_jobs(image, tmp_path, capfd, sigint):
    """^C (or SIGTERM made KeyboardInterrupt by the front ends) cancels the local jobs and stops their commands, also
    when SIGINT is ignored, as in a grid started in the background with `&`. The jobs ignore SIGINT themselves, so a
    ^C in a terminal, which reaches every process, stops the grid alone, and no job process prints a traceback."""
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
        assert _ignores_sigint(held[0])
        raise KeyboardInterrupt

    disposition = signal.SIG_IGN if sigint == "ignored" else signal.default_int_handler  # what the jobs inherit
    before = signal.signal(signal.SIGINT, disposition)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_jobs([quick, long], EngineConfig(workers=2, threads=1, poll_s=0.1), tmp_path / "jobs", done)
        assert signal.getsignal(signal.SIGINT) is disposition  # the grid's own ^C is as it was
    finally:
        signal.signal(signal.SIGINT, before)
    assert _wait(lambda: lock_holder(folder) is None, 60.0), "the fitting command trains on after the interrupt"
    pid = held[0]
    assert _wait(lambda: not os.path.exists(f"/proc/{pid}"), 30.0)
    time.sleep(1.0)  # a job controller killed by the cancel would have printed its traceback by now
    assert "Traceback" not in capfd.readouterr().err
