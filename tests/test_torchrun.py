"""The fitting commands under torchrun: 2 CPU processes (gloo) train what one process trains."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from gnerf.optim.configs import ESGDMaxConfig
from gnerf.tasks.config import FieldConfig
from gnerf.tasks.image import ImageFitConfig, fit_image

from helpers_tasks import esgd_counters, read_metrics
from shared_data import KODIM01, ROOT, require, tree_env

ARGS = [
    "--size",
    "16",
    "16",
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--no-progress",
    "--field.hidden-dim",
    "16",
    "--field.num-layers",
    "3",
    "--dist-timeout",
    "60",
    "optim:esgd-max",
    "--optim.precondition-warmup-steps",
    "2",
    "--optim.precondition-frequency",
    "3",
]


def _torchrun(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=tree_env())


def test_two_processes_train_what_one_process_trains(tmp_path):
    """The same weights, curvature counters, metrics and EMA of the weights (evaluated and written out)."""
    image = require(KODIM01)
    run = _torchrun(
        "scripts/fit_image.py",
        "--image",
        str(image),
        "--output-dir",
        str(tmp_path / "ddp"),
        *ARGS,
        "--optim.ema-decay",
        "0.5",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    single = fit_image(
        ImageFitConfig(
            image=image,
            size=(16, 16),
            epochs=2,
            batch_size=64,
            device="cpu",
            threads=1,
            progress=False,
            field=FieldConfig(hidden_dim=16, num_layers=3),
            optim=ESGDMaxConfig(precondition_warmup_steps=2, precondition_frequency=3, ema_decay=0.5),
            output_dir=tmp_path / "single",
        )
    )
    assert run.stdout.count("run folder: ") == 1  # rank 0 alone says where it writes
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    # 8 steps: curvature on 0, 1, 2 and 5 with one all-reduce each, DDP's all-reduce on the others
    assert ddp["iteration"] == one["iteration"] == 8
    for key, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for key, value in one["average"].items():
        torch.testing.assert_close(ddp["average"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert int(ddp["average"]["n_averaged"]) == 8
    assert esgd_counters(ddp["optimizer"]) == esgd_counters(one["optimizer"]) == {(8, 4)}
    rows, rows_one = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "single")
    for a, b in zip(rows, rows_one):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["psnr"] - b["psnr"]) < 1e-3
    assert (tmp_path / "ddp" / "reconstruction.png").is_file()
    assert single.history[-1]["psnr"] == rows_one[-1]["psnr"]


def test_a_nan_loss_stops_every_rank_with_the_message(tmp_path):
    image = require(KODIM01)
    run = _torchrun(
        "scripts/fit_image.py",
        "--image",
        str(image),
        "--output-dir",
        str(tmp_path / "nan"),
        "--log-every",
        "2",
        *ARGS,
        "--optim.lr",
        "1e6",
    )
    assert run.returncode != 0
    # every rank raises at the same step (the loss is averaged first); torchrun stops the others as
    # soon as the first has exited, so one or both messages get printed
    assert re.search(
        r"error: rank [01]: the training loss became (nan|inf) in epoch [12] between iterations \d+ and \d+ ",
        run.stderr,
    )
    # the loss is finite in epoch 1 (saved) and not in epoch 2: every rank that speaks names that checkpoint
    assert "no epoch was saved" not in run.stderr and "the checkpoint of epoch 1 is kept" in run.stderr
    assert torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_a_failing_rank_stops_the_run_instead_of_hanging(tmp_path):
    image = require(KODIM01)
    start = time.monotonic()
    run = _torchrun(
        str(Path(__file__).with_name("torchrun_failing_rank.py")),
        "--image",
        str(image),
        "--output-dir",
        str(tmp_path / "fail"),
        *ARGS,
        timeout=180,
    )
    elapsed = time.monotonic() - start
    assert run.returncode != 0
    assert "injected failure on rank 1" in run.stderr
    assert elapsed < 120, f"the surviving rank took {elapsed:.0f} s to stop"


def test_a_held_run_folder_stops_every_rank(tmp_path):
    image, out = require(KODIM01), tmp_path / "held"
    out.mkdir()
    with open(out / ".lock", "w") as lock:  # another run holds the folder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        run = _torchrun("scripts/fit_image.py", "--image", str(image), "--output-dir", str(out), *ARGS, timeout=180)
    assert run.returncode != 0
    assert re.search(
        rf"error: rank [01]: {re.escape(repr(str(out)))} is in use by another run "
        rf"\(process {os.getpid()}\)",
        run.stderr,
    ), run.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == [".lock"]
