"""The fitting commands on bad run folders, bad checkpoints and misleading input (the reliability contract).

Every case runs the real command in-process (``gnerf.tasks.cli.*_main``) on a tiny generated
input and checks the exit status, the one ``error:`` line, and that nothing was written or lost.
"""

from __future__ import annotations

import json
import os
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

TINY = ["--epochs", "1", "--batch-size", "32", "--field.hidden-dim", "8", "--field.num-layers", "3",
        "--threads", "1", "--no-progress", "--device", "cpu"]


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
            err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY,
                                      *extra], capsys)
            assert err == (f"error: {str(out)!r} is in use by another run (process {holder.pid}); "
                           "wait for it to finish or choose another --output-dir")
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
    code = ("import sys; from gnerf.tasks.cli import image_main; image_main(sys.argv[1:])")
    runs = [subprocess.Popen([sys.executable, "-c", code, "--image", str(image), "--output-dir", str(out),
                              "--size", "8", "8", *TINY, "--epochs", "100", "--seed", str(seed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tree_env()) for seed in (1, 2)]
    results = [(r.wait(timeout=300), r.stderr.read()) for r in runs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    winner = [seed for seed, (rc, _) in zip((1, 2), results) if rc == 0][0]
    loser_err = [err for rc, err in results if rc == 1][0].strip().splitlines()
    # the loser found the folder locked, or (if it started late) already holding the winner's run
    assert len(loser_err) == 1 and ("is in use by another run (process" in loser_err[0]
                                    or "already holds a run" in loser_err[0]), loser_err
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
    err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY,
                              "--resume", "--epochs", "2"], capsys)
    assert err == (f"error: checkpoint.pt in {str(out)!r} holds a pickled Python object (io.open) that could "
                   "run code when loaded; gnerf checkpoints hold only tensors and plain values, so --resume refuses "
                   "it: delete it or restore the original")
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
    (out / "checkpoint.pt").write_bytes(data[:len(data) // 2])  # truncated
    capsys.readouterr()
    _fit(image, out, "--resume", "--epochs", "3")
    captured = capsys.readouterr()
    assert captured.err == (f"warning: checkpoint.pt in {str(out)!r} is unreadable (truncated, or not a torch "
                            "checkpoint); resuming from the one before, checkpoint.prev.pt (epoch 1)\n")
    rows, rows_straight = read_metrics(out), read_metrics(straight)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and _ckpt_epoch(out) == 3
    for a, b in zip(rows, rows_straight):  # epoch 2 trained again from the same state
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["iteration"] == b["iteration"]

    # neither checkpoint readable: a text file and an empty one
    (out / "checkpoint.pt").write_text("not a checkpoint\n")
    (out / "checkpoint.prev.pt").write_bytes(b"")
    before = _snapshot(out)
    err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY,
                              "--resume", "--epochs", "4"], capsys)
    assert err == (f"error: checkpoint.pt in {str(out)!r} is unreadable (truncated, or not a torch checkpoint; "
                   "so is checkpoint.prev.pt): delete it to start over, or restore it")
    (out / "checkpoint.prev.pt").unlink()
    err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY,
                              "--resume", "--epochs", "4"], capsys)
    assert err == (f"error: checkpoint.pt in {str(out)!r} is unreadable (truncated, or not a torch checkpoint): "
                   "delete it to start over, or restore it")
    before.pop("checkpoint.prev.pt")
    assert _snapshot(out) == before


def test_unwritable_output_folders_are_one_line_and_failed_starts_leave_nothing(tmp_path, capsys, monkeypatch):
    image = _image(tmp_path)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    for out in (blocker / "run", blocker):
        err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), *TINY], capsys)
        assert err == (f"error: --output-dir {str(out)!r}: {str(blocker)!r} is a file, not a folder; "
                       "choose another --output-dir")
    assert blocker.read_text() == "a file"

    locked = tmp_path / "readonly"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through any mode bits: deny the access check instead
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked and mode & os.W_OK
                            else real_access(p, mode, **kw))
    else:
        locked.chmod(0o555)
    try:
        err = _fails(image_main, ["--image", str(image), "--output-dir", str(locked), *TINY], capsys)
    finally:
        locked.chmod(0o755)
        monkeypatch.undo()
    assert err == (f"error: cannot write the run folder {str(locked)!r} (Permission denied); "
                   "choose another --output-dir")
    assert list(locked.iterdir()) == []

    # a start that fails on its input removes the folders it created, and leaves a folder that was there as it was
    err = _fails(image_main, ["--image", str(tmp_path / "missing.png"), "--output-dir", str(tmp_path / "a" / "b"),
                              *TINY], capsys)
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
    err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY,
                              "--resume", "--epochs", "2"], capsys)
    assert err == (f"error: cannot write to the run folder {str(out)!r} after epoch 2 (No space left on device); "
                   "free disk space or fix the folder, then --resume from the last complete checkpoint")
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
    err = _fails(image_main, ["--image", str(image), "--output-dir", str(out), "--size", "8", "8", *TINY,
                              "--resume", "--epochs", "1"], capsys)
    assert err == (f"error: --resume --epochs 1: the run in {str(out)!r} has already trained 2 epochs; "
                   "pass a larger --epochs to train it further")
    assert _snapshot(out) == before
    capsys.readouterr()
    _fit(image, out, "--resume", "--epochs", "2")  # exit status 0: the outputs are written again, nothing trains
    captured = capsys.readouterr()
    assert (f"the run in {str(out)!r} has already trained all 2 epochs: nothing to train (pass a larger --epochs "
            "to train further); writing its outputs again\n") in captured.out
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
    err = _fails(video_main, ["--video", str(clip), "--output-dir", str(tmp_path / "v"), "--size", "0", "10", *TINY],
                 capsys)
    assert err == "error: --size must be two positive integers, height and width (or None), got 0 10"
    err = _fails(image_main, ["--image", str(_image(tmp_path)), "--output-dir", str(tmp_path / "i"),
                              "--size", "16", "-1", *TINY], capsys)
    assert err == "error: --size must be two positive integers, height and width (or None), got 16 -1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "photo8x8.png"]


def test_meshes_without_faces_or_volume_are_named(tmp_path, capsys):
    points = tmp_path / "points.obj"
    points.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    args = ["--num-points", "300", "--num-eval-points", "300", "--resolution", "4", *TINY]
    err = _fails(occupancy_main, ["--mesh", str(points), "--output-dir", str(tmp_path / "p"), *args], capsys)
    assert err == (f"error: mesh {str(points)!r} has 3 vertices but no faces (a point cloud?); "
                   "occupancy fitting needs a triangle mesh")
    square = tmp_path / "square.obj"  # an open, flat surface with area
    square.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n")
    err = _fails(occupancy_main, ["--mesh", str(square), "--output-dir", str(tmp_path / "s"), *args], capsys)
    assert err == (f"error: mesh {str(square)!r} encloses no volume: none of the training points lies inside it; "
                   "occupancy needs a closed (or nearly closed) surface, not an open or flat one")
    assert not (tmp_path / "p").exists() and not (tmp_path / "s").exists()


def test_first_use_prints_the_run_folder_and_a_squashed_aspect(tmp_path, capsys):
    wide = _image(tmp_path, 8, 12)
    out = tmp_path / "run"
    capsys.readouterr()
    _fit(wide, out)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run folder: {out}"
    assert lines[1] == (f"note: image {str(wide)!r} (8 x 12, height x width) is squashed to 8 x 8; to keep its "
                        "aspect ratio pass --size 8 12, or --size None to fit it at its own size")
    image_main(["--image", str(wide), "--output-dir", str(tmp_path / "native"), "--size", "None", *TINY])
    assert "note:" not in capsys.readouterr().out
    assert iio.imread(tmp_path / "native" / "target.png").shape == (8, 12, 3)
    assert json.loads((tmp_path / "native" / "config.json").read_text())["size"] is None
