"""The fitting commands on bad run folders, bad checkpoints and misleading input (the reliability contract).

Every case runs the real command in-process (``gnerf.tasks.cli.*_main``) on a tiny generated
input and checks the exit status, the one ``error:`` line, and that nothing was written or lost.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gnerf.errors import InputError
from gnerf.tasks.cli import image_main, occupancy_main, video_main

from helpers_tasks import read_metrics
from shared_data import tree_env

TINY = [
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--field.hidden-dim",
    "8",
    "--field.num-layers",
    "3",
    "--threads",
    "1",
    "--no-progress",
    "--device",
    "cpu",
]


def _image(tmp_path: Path, h: int = 8, w: int = 8) -> Path:
    path = tmp_path / f"photo{h}x{w}.png"
    iio.imwrite(path, np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def _fit(image: Path, out: Path, *args: str) -> None:
    image_main(["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, *args])


def _fails(main, args: List[str], capsys) -> str:
    """Run ``main(args)``, check that it exits with status 1 and one ``error:`` line; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


def _snapshot(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


def _ckpt_epoch(out: Path) -> int:
    return torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]


HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\\n" % os.getpid(), 0)
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_held_run_folder_stops_a_second_run_and_a_dead_holder_does_not_block_resume(tmp_path, capsys):
    image, out = _image(tmp_path), tmp_path / "run"
    _fit(image, out)
    assert (out / ".lock").read_text().strip() == str(os.getpid())  # the lock names the last holder
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(out)
        for extra in (["--resume", "--epochs", "2"], []):
            err = _fails(
                image_main, ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, *extra], capsys
            )
            assert err == (
                f"error: {str(out)!r} is in use by another run (process {holder.pid}); "
                "wait for it to finish or choose another --output-dir"
            )
            assert _snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file (with its PID) stays, and blocks nothing
    assert (out / ".lock").read_text().strip() == str(holder.pid)
    _fit(image, out, "--resume", "--epochs", "2")
    assert _ckpt_epoch(out) == 2 and [r["epoch"] for r in read_metrics(out)] == [1, 2]


def test_two_concurrent_runs_on_one_folder_leave_exactly_one_runs_files(tmp_path):
    """Two real fits started together on one folder: one trains, the other stops at once, writing nothing."""
    image, out = _image(tmp_path), tmp_path / "run"
    code = "import sys; from gnerf.tasks.cli import image_main; image_main(sys.argv[1:])"
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "--image",
                str(image),
                "--output-dir",
                str(out),
                "--size",
                "8",
                "8",
                *TINY,
                "--epochs",
                "100",
                "--seed",
                str(seed),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tree_env(),
        )
        for seed in (1, 2)
    ]
    results = [(r.wait(timeout=300), r.stderr.read()) for r in runs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    winner = [seed for seed, (rc, _) in zip((1, 2), results) if rc == 0][0]
    loser_err = [err for rc, err in results if rc == 1][0].strip().splitlines()
    # the loser found the folder locked (naming the holder's process, or "another process" if the holder had locked
    # it but not yet written its id), or (if it started late) already holding the winner's run
    assert len(loser_err) == 1 and (
        re.search(r"is in use by another run \((process \d+|another process)\)", loser_err[0])
        or "already holds a run" in loser_err[0]
    ), loser_err
    assert json.loads((out / "config.json").read_text())["seed"] == winner
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["seed"] == winner
    assert [r["epoch"] for r in read_metrics(out)] == list(range(1, 101))


class _RunsCode:
    """Pickles as a call of ``open(marker, "w")``: loading it with plain pickle creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_refuses_a_checkpoint_holding_a_pickled_object_without_running_it(tmp_path, capsys):
    image, out, marker = _image(tmp_path), tmp_path / "run", tmp_path / "marker"
    _fit(image, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["history"] = [_RunsCode(marker)]
    torch.save(ckpt, out / "checkpoint.pt")
    before = _snapshot(out)
    err = _fails(
        image_main,
        ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, "--resume", "--epochs", "2"],
        capsys,
    )
    assert err == (
        f"error: checkpoint.pt in {str(out)!r} holds a pickled Python object (io.open) that could "
        "run code when loaded; gnerf checkpoints hold only tensors and plain values, so --resume refuses "
        "it: delete it or restore the original"
    )
    assert not marker.exists() and _snapshot(out) == before
    torch.load(out / "checkpoint.pt", weights_only=False)  # the payload is live: unpickled, it runs
    assert marker.exists()


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_or_names_the_way_out(tmp_path, capsys):
    image = _image(tmp_path)
    straight, out = tmp_path / "straight", tmp_path / "run"
    _fit(image, straight, "--epochs", "3")
    _fit(image, out, "--epochs", "2")
    assert _ckpt_epoch(out) == 2
    assert torch.load(out / "checkpoint.prev.pt", weights_only=True)["epoch"] == 1
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # truncated
    capsys.readouterr()
    _fit(image, out, "--resume", "--epochs", "3")
    captured = capsys.readouterr()
    assert captured.err == (
        f"warning: checkpoint.pt in {str(out)!r} is unreadable (truncated, or not a torch "
        "checkpoint); resuming from the one before, checkpoint.prev.pt (epoch 1)\n"
    )
    rows, rows_straight = read_metrics(out), read_metrics(straight)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and _ckpt_epoch(out) == 3
    for a, b in zip(rows, rows_straight):  # epoch 2 trained again from the same state
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["iteration"] == b["iteration"]

    # neither checkpoint readable: a text file and an empty one
    (out / "checkpoint.pt").write_text("not a checkpoint\n")
    (out / "checkpoint.prev.pt").write_bytes(b"")
    before = _snapshot(out)
    err = _fails(
        image_main,
        ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, "--resume", "--epochs", "4"],
        capsys,
    )
    assert err == (
        f"error: checkpoint.pt in {str(out)!r} is unreadable (truncated, or not a torch checkpoint; "
        "so is checkpoint.prev.pt): delete it to start over, or restore it"
    )
    (out / "checkpoint.prev.pt").unlink()
    err = _fails(
        image_main,
        ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, "--resume", "--epochs", "4"],
        capsys,
    )
    assert err == (
        f"error: checkpoint.pt in {str(out)!r} is unreadable (truncated, or not a torch checkpoint): "
        "delete it to start over, or restore it"
    )
    before.pop("checkpoint.prev.pt")
    assert _snapshot(out) == before


def test_unwritable_output_folders_are_one_line_and_failed_starts_leave_nothing(tmp_path, capsys, monkeypatch):
    image = _image(tmp_path)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    for out in (blocker / "run", blocker):
        err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), *TINY], capsys)
        assert err == (
            f"error: --output-dir {str(out)!r}: {str(blocker)!r} is a file, not a folder; choose another --output-dir"
        )
    assert blocker.read_text() == "a file"

    locked = tmp_path / "readonly"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through any mode bits: deny the access check instead
        real_access = os.access
        monkeypatch.setattr(
            os,
            "access",
            lambda p, mode, **kw: False if Path(p) == locked and mode & os.W_OK else real_access(p, mode, **kw),
        )
    else:
        locked.chmod(0o555)
    try:
        err = _fails(image_main, ["--image", str(image), "--output-dir", str(locked), *TINY], capsys)
    finally:
        locked.chmod(0o755)
        monkeypatch.undo()
    assert err == (
        f"error: cannot write the run folder {str(locked)!r} (Permission denied); choose another --output-dir"
    )
    assert list(locked.iterdir()) == []

    # a start that fails on its input removes the folders it created, and leaves a folder that was there as it was
    err = _fails(
        image_main, ["--image", str(tmp_path / "missing.png"), "--output-dir", str(tmp_path / "a" / "b"), *TINY], capsys
    )
    assert "missing.png" in err and not (tmp_path / "a").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(image_main, ["--image", str(tmp_path / "missing.png"), "--output-dir", str(empty), *TINY], capsys)
    assert list(empty.iterdir()) == []


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    from gnerf.tasks import checkpoint

    image, out = _image(tmp_path), tmp_path / "run"
    _fit(image, out)
    kept = (out / "checkpoint.pt").read_bytes()
    real = checkpoint.atomic_save_torch

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "atomic_save_torch", full)
    err = _fails(
        image_main,
        ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, "--resume", "--epochs", "2"],
        capsys,
    )
    assert err == (
        f"error: cannot write to the run folder {str(out)!r} after epoch 2 (No space left on device); "
        "free disk space or fix the folder, then --resume from the last complete checkpoint"
    )
    assert (out / "checkpoint.prev.pt").read_bytes() == kept  # epoch 1 is still there to resume from
    monkeypatch.setattr(checkpoint, "atomic_save_torch", real)
    _fit(image, out, "--resume", "--epochs", "2")
    assert _ckpt_epoch(out) == 2


def test_epochs_below_one_and_resume_without_new_epochs_are_said(tmp_path, capsys):
    image, out = _image(tmp_path), tmp_path / "run"
    err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), *TINY, "--epochs", "0"], capsys)
    assert err == "error: --epochs must be >= 1, got 0" and not out.exists()
    _fit(image, out, "--epochs", "2")
    before = _snapshot(out)
    err = _fails(
        image_main,
        ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, "--resume", "--epochs", "1"],
        capsys,
    )
    assert err == (
        f"error: --resume --epochs 1: the run in {str(out)!r} has already trained 2 epochs; "
        "pass a larger --epochs to train it further"
    )
    assert _snapshot(out) == before
    capsys.readouterr()
    _fit(image, out, "--resume", "--epochs", "2")  # exit status 0: the outputs are written again, nothing trains
    captured = capsys.readouterr()
    assert (
        f"the run in {str(out)!r} has already trained all 2 epochs: nothing to train (pass a larger --epochs "
        "to train further); writing its outputs again\n"
    ) in captured.out
    assert captured.err == "" and _ckpt_epoch(out) == 2 and len(read_metrics(out)) == 2


def test_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    """Only InputError becomes one line: a ValueError raised inside the loop (a bug) reaches the caller as itself,
    so the interpreter prints its traceback."""
    from gnerf.tasks import loop

    def broken(*args, **kwargs):
        raise ValueError("a bug inside the training step")

    image, out = _image(tmp_path), tmp_path / "run"
    monkeypatch.setattr(loop, "_step", broken)
    capsys.readouterr()
    with pytest.raises(ValueError, match="a bug inside the training step") as raised:
        _fit(image, out)
    assert not isinstance(raised.value, InputError)
    assert "error:" not in capsys.readouterr().err


def test_size_errors_blame_size_not_the_input(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    err = _fails(
        video_main, ["--video", str(clip), "--output-dir", str(tmp_path / "v"), "--size", "0", "10", *TINY], capsys
    )
    assert err == "error: --size must be two positive integers, height and width (or None), got 0 10"
    err = _fails(
        image_main,
        ["--image", str(_image(tmp_path)), "--output-dir", str(tmp_path / "i"), "--size", "16", "-1", *TINY],
        capsys,
    )
    assert err == "error: --size must be two positive integers, height and width (or None), got 16 -1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "photo8x8.png"]


def test_meshes_without_faces_or_volume_are_named(tmp_path, capsys):
    points = tmp_path / "points.obj"
    points.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    args = ["--num-points", "300", "--num-eval-points", "300", "--resolution", "4", *TINY]
    err = _fails(occupancy_main, ["--mesh", str(points), "--output-dir", str(tmp_path / "p"), *args], capsys)
    assert err == (
        f"error: mesh {str(points)!r} has 3 vertices but no faces (a point cloud?); "
        "occupancy fitting needs a triangle mesh"
    )
    square = tmp_path / "square.obj"  # an open, flat surface with area
    square.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n")
    err = _fails(occupancy_main, ["--mesh", str(square), "--output-dir", str(tmp_path / "s"), *args], capsys)
    assert err == (
        f"error: mesh {str(square)!r} encloses no volume: none of the training points lies inside it; "
        "occupancy needs a closed (or nearly closed) surface, not an open or flat one"
    )
    assert not (tmp_path / "p").exists() and not (tmp_path / "s").exists()


def test_first_use_prints_the_run_folder_and_a_squashed_aspect(tmp_path, capsys):
    wide = _image(tmp_path, 8, 12)
    out = tmp_path / "run"
    capsys.readouterr()
    _fit(wide, out)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run folder: {out}"
    assert lines[1] == (
        f"note: image {str(wide)!r} (8 x 12, height x width) is squashed to 8 x 8; to keep its "
        "aspect ratio pass --size 8 12, or --size None to fit it at its own size"
    )
    image_main(["--image", str(wide), "--output-dir", str(tmp_path / "native"), "--size", "None", *TINY])
    assert "note:" not in capsys.readouterr().out
    assert iio.imread(tmp_path / "native" / "target.png").shape == (8, 12, 3)
    assert json.loads((tmp_path / "native" / "config.json").read_text())["size"] is None


# -- inputs and run folders: nothing of the user's is written over or mixed ----------------------------------------


def _args(image: Path, out: Path, *extra: str) -> List[str]:
    return ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY, *extra]


def test_an_input_inside_the_run_folder_is_never_written_over(tmp_path, capsys):
    photos = tmp_path / "out" / "photos"
    photos.mkdir(parents=True)
    photo = photos / "target.png"
    iio.imwrite(photo, np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    before = _snapshot(tmp_path)
    err = _fails(image_main, _args(photo, photos), capsys)
    assert err == (
        f"error: --image {str(photo)!r} lies inside --output-dir {str(photos)!r}, whose files a run "
        "replaces; move the file out of that folder, or choose another --output-dir"
    )
    assert _snapshot(tmp_path) == before


def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    image, mine = _image(tmp_path), tmp_path / "mine"
    mine.mkdir()
    (mine / "target.png").write_bytes(b"my own picture")
    (mine / "metrics.csv").write_text("my,own\n1,2\n")
    before = _snapshot(mine)
    err = _fails(image_main, _args(image, mine), capsys)
    assert err == (
        f"error: --output-dir {str(mine)!r} holds files that are not a gnerf run (metrics.csv, "
        "target.png); a run starts in a new or empty folder and never writes over other files: choose "
        "another --output-dir"
    )
    err = _fails(image_main, _args(image, mine, "--resume"), capsys)
    assert err == (
        f"error: --resume: {str(mine)!r} holds no gnerf run (it holds metrics.csv, target.png, but no "
        "config.json of a run); point --output-dir at the folder of an earlier run"
    )
    assert _snapshot(mine) == before  # not even a lock file was left

    # the records a job runner keeps beside a run (the reproduction grid's log.txt, error.json) are no obstacle
    logged = tmp_path / "logged"
    logged.mkdir()
    (logged / "log.txt").write_text("$ gnerf-fit-image ...\n")
    (logged / "error.json").write_text('{"status": "failed"}')  # the grid's record of a failed attempt
    _fit(image, logged)
    assert (logged / "log.txt").read_text() == "$ gnerf-fit-image ...\n" and (logged / "checkpoint.pt").is_file()

    # a gnerf run folder is recognised by its config.json, and a start that was killed before its first
    # checkpoint is replaced, its files with it
    out = tmp_path / "run"
    _fit(image, out)
    config = json.loads((out / "config.json").read_text())
    assert config["gnerf_run"]["task"] == "image" and "--image" in config["gnerf_run"]["inputs"]
    for name in ("checkpoint.pt", "metrics.csv", "metrics.jsonl"):
        (out / name).unlink()
    _fit(image, out)
    assert [r["epoch"] for r in read_metrics(out)] == [1]


def test_a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_kept(tmp_path, capsys):
    image, out, precious = _image(tmp_path), tmp_path / "run", tmp_path / "precious.txt"
    precious.write_text("do not truncate me\n")
    out.mkdir()
    (out / ".lock").symlink_to(precious)
    err = _fails(image_main, _args(image, out), capsys)
    assert err == (
        f"error: {str(out / '.lock')!r} is a symbolic link: gnerf locks a run folder with a plain file "
        "there and never writes through a link; remove the link, or choose another --output-dir"
    )
    assert precious.read_text() == "do not truncate me\n" and (out / ".lock").is_symlink()


def test_resume_refuses_an_input_whose_content_changed(tmp_path, capsys):
    image, out = _image(tmp_path), tmp_path / "run"
    _fit(image, out)
    iio.imwrite(image, np.random.default_rng(7).integers(0, 256, (8, 8, 3), dtype=np.uint8))  # same path, new image
    before = _snapshot(out)
    err = _fails(image_main, _args(image, out, "--resume", "--epochs", "2"), capsys)
    assert err == (
        f"error: --resume: --image {str(image)!r} is not the file the run in {str(out)!r} was trained on "
        "(its content changed since); restore that file, or start a new run in another --output-dir"
    )
    assert _snapshot(out) == before


def test_temporary_files_of_killed_writes_are_removed_at_the_next_start(tmp_path):
    image, out = _image(tmp_path), tmp_path / "run"
    _fit(image, out)
    orphans = [".checkpoint.ab12cd34.tmp.pt", ".metrics.x_9y8z7w.tmp.csv", ".reconstruction.q1w2e3r4.tmp.png"]
    for name in orphans:
        (out / name).write_bytes(b"half a file")
    (out / "notes.tmp.txt").write_text("not gnerf's")
    _fit(image, out, "--resume", "--epochs", "2")
    assert not any((out / name).exists() for name in orphans) and (out / "notes.tmp.txt").exists()


def test_two_unnamed_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    from gnerf.tasks import run as run_module

    monkeypatch.chdir(tmp_path)
    frozen = Path("outputs") / "image" / "photo-gaussian-esgd-20260101-120000"
    monkeypatch.setattr(run_module, "default_output_dir", lambda task, stem, cfg: frozen)
    image = _image(tmp_path)
    for _ in range(2):
        image_main(["--image", str(image), "--size", "8", "8", *TINY])
    assert sorted(p.name for p in frozen.parent.iterdir()) == [frozen.name, f"{frozen.name}-2"]
    assert all((p / "checkpoint.pt").is_file() for p in frozen.parent.iterdir())


def test_a_checkpoint_that_does_not_fit_the_model_falls_back_to_the_previous_one(tmp_path, capsys):
    image, out = _image(tmp_path), tmp_path / "run"
    _fit(image, out, "--epochs", "2")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    name = next(iter(ckpt["model"]))
    ckpt["model"][name] = torch.zeros(3, 3, 3)  # same configuration, tensors of another shape
    torch.save(ckpt, out / "checkpoint.pt")
    capsys.readouterr()
    _fit(image, out, "--resume", "--epochs", "3")
    err = capsys.readouterr().err
    assert err.startswith(
        f"warning: checkpoint.pt in {str(out)!r} is unreadable (it does not fit the model: "
        f"size mismatch for {name}: copying a param with shape torch.Size([3, 3, 3]) from checkpoint"
    )
    assert err.endswith("resuming from the one before, checkpoint.prev.pt (epoch 1)\n") and err.count("\n") == 1
    assert _ckpt_epoch(out) == 3 and [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


# -- option values: refused before any work, naming the option ------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--field.positional-encoding", "-1"],
            "--field.positional-encoding must be >= 0 frequencies (0: none), got -1",
        ),
        (["--field.sigma", "nan"], "--field.sigma must be a finite number > 0, got nan"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**63 - 1, got -1"),
        (["optim:esgd", "--optim.lr", "1e300"], "--optim.lr 1e+300: must be a finite number from 0 to 1e+06"),
        (["optim:adam", "--optim.lr", "inf"], "--optim.lr inf: must be a finite number from 0 to 1e+06"),
        (["optim:muon", "--optim.adam-lr", "inf"], "--optim.adam-lr inf: must be a finite number from 0 to 1e+06"),
        (
            ["--allow-changed-optim"],
            "--allow-changed-optim applies to --resume only: a new run takes any --optim.lr and schedule",
        ),
    ],
)
def test_bad_option_values_are_refused_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    err = _fails(image_main, [*_args(_image(tmp_path), out), *extra], capsys)
    assert err == f"error: {message}" and not out.exists()


def test_sizes_above_the_limit_are_refused_naming_size(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--image", str(_image(tmp_path)), "--output-dir", str(out), *TINY]
    err = _fails(image_main, [*args, "--size", "40000", "40000"], capsys)
    assert (
        err
        == (
            "error: --size 40000 40000 asks for 1,600,000,000 pixels; at most 67,108,864 (8192 x 8192) can "
            "be fitted: choose a smaller --size"
        )
        and not out.exists()
    )


def test_a_file_that_is_not_an_image_is_named_as_such(tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    err = _fails(image_main, _args(text, tmp_path / "run"), capsys)
    assert err == (
        f"error: cannot read image {str(text)!r}: it is not an image file that Pillow or imageio can "
        "decode (PNG, JPEG, TIFF, ...); check the file"
    )


def test_a_run_folder_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    out = tmp_path / ("x" * 300)
    err = _fails(image_main, _args(_image(tmp_path), out), capsys)
    assert err.startswith("error: the run folder ") and err.endswith(
        "has a name too long for the file system (a folder name may have at most 255 characters); "
        "choose another --output-dir"
    )
    deep = tmp_path.joinpath(*["y" * 200] * 25)  # each name fits, the whole path does not
    err = _fails(image_main, _args(_image(tmp_path), deep), capsys)
    assert err.startswith("error: the run folder ") and err.endswith(
        f"has a path too long for the file system (a path may have at most {os.pathconf(tmp_path, 'PC_PATH_MAX') - 1} "
        f"characters; this one has {len(str(deep))}); choose another --output-dir"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo8x8.png"]


# -- stops: Ctrl-C, a full disk, a NaN loss -------------------------------------------------------------------------


def _command_in(err: str) -> List[str]:
    """The arguments of the command an error line quotes in backticks, without the program name."""
    import shlex

    return shlex.split(err.split("`")[1])[1:]


def test_ctrl_c_ends_with_one_line_keeps_the_checkpoint_and_gives_the_command_to_continue(
    tmp_path, capsys, monkeypatch
):
    from gnerf.tasks import loop

    image, out = _image(tmp_path), tmp_path / "run"
    real, calls = loop._step, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # 2 steps an epoch (64 pixels, batch 32)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_step", interrupted_in_epoch_2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        image_main(_args(image, out, "--epochs", "3"))
    assert exit_info.value.code == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: interrupted (Ctrl-C) in epoch 2; the run folder {str(out)!r} keeps the checkpoint of epoch 1: "
        "to continue, run `gnerf-fit-image "
    ), lines
    assert _ckpt_epoch(out) == 1
    monkeypatch.setattr(loop, "_step", real)
    image_main(_command_in(lines[0]))
    assert _ckpt_epoch(out) == 3 and [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]

    # interrupted between two epochs, just after a checkpoint: the message names the epoch it followed
    finish = loop._Training._finish_epoch

    def interrupted_after(self, epoch, loss):
        finish(self, epoch, loss)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Training, "_finish_epoch", interrupted_after)
    between = tmp_path / "between"
    with pytest.raises(SystemExit):
        image_main(_args(image, between, "--epochs", "3"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: interrupted (Ctrl-C) after epoch 1; the run folder {str(between)!r} keeps the checkpoint of epoch 1: "
        "to continue, run `gnerf-fit-image "
    ), lines
    monkeypatch.setattr(loop._Training, "_finish_epoch", finish)

    # interrupted in its first epoch, a run keeps nothing and leaves nothing behind
    calls.clear()
    monkeypatch.setattr(loop, "_step", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit):
        image_main(_args(image, fresh))
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert lines == [
        f"error: interrupted (Ctrl-C) in epoch 1, before the first checkpoint: nothing was kept: to "
        f"start over, run `gnerf-fit-image {' '.join(_args(image, fresh))}`"
    ]
    assert not fresh.exists()


def test_ctrl_c_while_a_checkpoint_is_saved_names_the_checkpoint_on_disk(tmp_path, capsys, monkeypatch):
    from gnerf.files import atomic_save_torch
    from gnerf.tasks import checkpoint

    image, out, saves = _image(tmp_path), tmp_path / "run", []

    def interrupted_in_the_second_save(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # epoch 2's checkpoint: checkpoint.pt must still hold epoch 1, and say so
            assert _ckpt_epoch(out) == 1 and (out / "checkpoint.prev.pt").is_file()
            raise KeyboardInterrupt
        return atomic_save_torch(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "atomic_save_torch", interrupted_in_the_second_save)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        image_main(_args(image, out, "--epochs", "3"))
    assert exit_info.value.code == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and "keeps the checkpoint of epoch 1: to continue" in lines[0], lines
    assert _ckpt_epoch(out) == 1
    monkeypatch.setattr(checkpoint, "atomic_save_torch", atomic_save_torch)
    image_main(_command_in(lines[0]))
    assert _ckpt_epoch(out) == 3 and [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


def test_a_full_disk_while_writing_the_reconstruction_is_one_line_and_resume_writes_it(tmp_path, capsys, monkeypatch):
    import errno

    from gnerf.tasks import image as image_task

    image, out = _image(tmp_path), tmp_path / "run"
    real = image_task.atomic_write_image

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(image_task, "atomic_write_image", full)
    err = _fails(image_main, _args(image, out), capsys)
    assert err == (
        f"error: cannot write target.png to the run folder {str(out)!r} (No space left on device); the "
        f"checkpoint of the last epoch is kept: free disk space, then run the same command with --resume "
        f"--output-dir {out} (the same --epochs trains nothing and writes the outputs again)"
    )
    monkeypatch.setattr(image_task, "atomic_write_image", real)
    _fit(image, out, "--resume")
    assert (out / "reconstruction.png").is_file() and _ckpt_epoch(out) == 1


def test_after_a_nan_stop_the_message_gives_a_command_that_continues_with_a_lower_lr(tmp_path, capsys, monkeypatch):
    from gnerf.tasks import loop

    image, out = _image(tmp_path), tmp_path / "run"
    real, calls = loop._step, []

    def nan_in_epoch_2(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) > 2 else loss

    monkeypatch.setattr(loop, "_step", nan_in_epoch_2)
    err = _fails(image_main, _args(image, out, "--epochs", "3", "--log-every", "1", "optim:esgd"), capsys)
    assert err.startswith(
        "error: the training loss became nan in epoch 2 between iterations 3 and 3 (optim:esgd, "
        "lr 0.15); the checkpoint of epoch 1 is kept: with a 10x lower lr, run `gnerf-fit-image "
    )
    command = _command_in(err)
    assert command == [
        "--image",
        str(image),
        "--size",
        "8",
        "8",
        *TINY,
        "--epochs",
        "3",
        "--log-every",
        "1",
        "--output-dir",
        str(out),
        "--resume",
        "--allow-changed-optim",
        "optim:esgd",
        "--optim.lr",
        "0.015",
    ]
    monkeypatch.setattr(loop, "_step", real)

    # without --allow-changed-optim a changed lr is refused, and the refusal names the option
    plain = [c for c in command if c != "--allow-changed-optim"]
    err = _fails(image_main, plain, capsys)
    assert err.endswith("pass --allow-changed-optim to continue with another lr or schedule")
    image_main(command)
    assert _ckpt_epoch(out) == 3 and [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["optim"]["lr"] == 0.015
    assert all(g["lr"] == pytest.approx(0.015) for g in ckpt["optimizer"]["param_groups"])


# -- images as they look ---------------------------------------------------------------------------------------------


def _fitted_target(tmp_path: Path, image: Path, name: str) -> np.ndarray:
    out = tmp_path / name
    image_main(["--image", str(image), "--output-dir", str(out), "--size", "None", *TINY])
    return iio.imread(out / "target.png")


def _halves() -> np.ndarray:
    rgb = np.zeros((6, 10, 3), dtype=np.uint8)
    rgb[:, :5] = (200, 30, 40)  # left half red, right half blue
    rgb[:, 5:] = (20, 40, 220)
    return rgb


def test_a_cmyk_jpeg_is_fitted_in_its_colours(tmp_path):
    from PIL import Image

    rgb = _halves()
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=100)
    got = _fitted_target(tmp_path, cmyk, "cmyk").astype(int)  # not its four channels taken for three
    assert got.shape == (6, 10, 3) and np.abs(got - rgb).max() < 40


def test_an_image_is_fitted_upright_as_its_exif_orientation_says(tmp_path):
    from PIL import Image

    rgb = _halves()
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to view
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(rotated, exif=exif, quality=100)
    got = _fitted_target(tmp_path, rotated, "rotated").astype(int)
    away_from_the_edge = np.r_[0:3, 7:10]  # JPEG's chroma subsampling blurs the red-blue edge
    assert got.shape == (6, 10, 3) and np.abs(got - rgb)[:, away_from_the_edge].max() < 40


def test_grey_with_alpha_and_one_bit_images_are_valid_inputs(tmp_path):
    from PIL import Image

    rgb = _halves()
    la = tmp_path / "la.png"
    Image.fromarray(np.stack([rgb[..., 0], np.full((6, 10), 128, np.uint8)], -1), mode="LA").save(la)
    assert (_fitted_target(tmp_path, la, "la") == rgb[..., :1]).all()
    bits = tmp_path / "bits.png"
    Image.fromarray(rgb[..., 0] > 100).convert("1").save(bits)
    assert set(np.unique(_fitted_target(tmp_path, bits, "bits"))) == {0, 255}


# -- occupancy options ----------------------------------------------------------------------------------------------


def _slab(tmp_path: Path) -> Path:
    """A closed, thin box: most points of a small sample fall outside it."""
    import trimesh

    path = tmp_path / "slab.obj"
    trimesh.creation.box(extents=(1, 1, 0.04)).export(path)
    return path


def test_occupancy_options_that_cannot_work_are_named(tmp_path, capsys):
    cube = _slab(tmp_path)
    base = ["--mesh", str(cube), "--output-dir", str(tmp_path / "o"), "--resolution", "4", *TINY, "--seed", "1"]
    err = _fails(
        occupancy_main, [*base, "--num-points", "300", "--num-eval-points", "300", "--near-sigmas", "nan"], capsys
    )
    assert err == "error: --near-sigmas must be one or more finite numbers > 0 (in unit-cube units), got nan"
    err = _fails(occupancy_main, [*base, "--num-points", "2", "--num-eval-points", "3000"], capsys)
    assert err == (
        f"error: none of the 2 training points lies inside mesh {str(cube)!r}, which does enclose a volume: "
        "--num-points 2 is too few to find it; raise --num-points (the paper draws 1,000,000 training "
        "points)"
    )
    assert not (tmp_path / "o").exists()


# -- metrics ---------------------------------------------------------------------------------------------------------


def test_image_fits_report_ssim_each_epoch_and_lpips_only_with_weights_on_disk(tmp_path, capsys, monkeypatch):
    from gnerf import metrics

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no AlexNet weights there
    monkeypatch.setattr(
        torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("LPIPS must never download its weights")
    )
    assert metrics.lpips_metric() is None
    image, out = _image(tmp_path), tmp_path / "run"
    capsys.readouterr()
    _fit(image, out, "--epochs", "2")
    rows = read_metrics(out)
    assert all(-1 <= r["ssim"] <= 1 for r in rows) and not any("lpips" in r for r in rows)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"final (epoch 2): psnr {rows[-1]['psnr']:.4g}  ssim {rows[-1]['ssim']:.4g}"
    target = torch.rand(16, 16, 3)
    assert metrics.ssim(target, target).item() == pytest.approx(1.0)
    assert metrics.ssim((target + 0.1).clamp(0, 1), target).item() < 1.0


def test_video_fits_report_the_mean_frame_ssim(tmp_path):
    from gnerf.files import atomic_write_video

    clip, out = tmp_path / "clip.mp4", tmp_path / "run"
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    atomic_write_video(clip, iter(frames), fps=10)
    video_main(["--video", str(clip), "--output-dir", str(out), *TINY])
    rows = read_metrics(out)
    assert set(rows[0]) >= {"psnr", "psnr_min", "ssim"} and -1 <= rows[0]["ssim"] <= 1
