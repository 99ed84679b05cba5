"""benchmarks/gpu: lego_convergence.py and lego_contest.py end to end at a tiny size on a procedural Blender scene,
and the device call contest.sh rehearsed on the CPU at tiny sizes (every phase; about 1.5 minutes on a quiet 2-core
machine, most of it Python start-ups)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.gpu import lego_contest, lego_convergence
from gnerf.scenes import make_blender_scene

ROOT = Path(__file__).resolve().parents[1]


def test_step_marks():
    assert lego_convergence.step_marks(600) == [10, 20, 30, 50, 100, 200, 300, 500]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_blender_scene(
        tmp_path_factory.mktemp("scene") / "scene", image_size=16, num_train=4, num_val=1, num_test=4, supersample=1
    )


def test_lego_convergence_tiny(scene, tmp_path):
    runs = lego_convergence.main(
        [
            "--data",
            str(scene),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--budget",
            "600",
            "--max-steps",
            "12",
            "--rays",
            "32",
            "--samples",
            "8",
            "--hidden",
            "16",
            "--layers",
            "3",
            "--views",
            "2",
            "--lr-warmup",
            "0.5",
        ]
    )
    assert set(runs) == set(lego_convergence.METHODS)
    esgd = runs["gaussian-nerf-esgd"].trainer.optimizers.optimizers["fields"]
    assert esgd.param_groups[0]["lr_warmup"] == 0.5  # ESGD-Max only; Adam has no warm-up to change
    for r in runs.values():
        assert r.steps == 12 and r.stopped is None
        assert [(e.step, e.why) for e in r.curve] == [(10, "step"), (12, "end")]
        assert all(e.psnr > 0 and -1 <= e.ssim <= 1 and e.cpu_seconds > 0 for e in r.curve)
    md = (tmp_path / "out" / "lego_gpu.md").read_text()
    assert "Complete." in md and "| 10 |" in md and "gaussian-nerf-adam PSNR (dB)" in md
    assert (tmp_path / "out" / "lego_gpu.png").stat().st_size > 0
    data = json.loads((tmp_path / "out" / "lego_gpu.json").read_text())
    assert data["gaussian-nerf-esgd"]["steps"] == 12


def test_contest_methods_are_every_registered_method_and_vanilla_nerf():
    from gnerf.nerf.methods import CONFIGS

    methods = lego_contest.default_methods()
    assert methods[0] == "gaussian-nerf-adam" and methods[-1] == lego_convergence.VANILLA
    assert sorted(methods[:-1]) == sorted(CONFIGS)


def _contest(scene, out, *extra):
    return lego_contest.main(
        [
            "--preset",
            "tiny",
            "--data",
            str(scene),
            "--image-scale",
            "1",
            "--out",
            str(out),
            "--checkpoints",
            str(out / "ckpt"),
            "--methods",
            "gaussian-nerf-adam",
            "gaussian-nerf-esgd",
            *extra,
        ]
    )


def _curves(records):
    return {m: [(e["step"], e["psnr"], e["ssim"]) for e in r["curve"]] for m, r in records.items()}


@pytest.mark.parametrize("order", ["sequential", "interleaved"])
def test_lego_contest_resumes_from_checkpoints_and_skips_recorded_methods(scene, tmp_path, monkeypatch, order):
    # one straight interleaved run ...
    straight = _contest(scene, tmp_path / "straight")
    assert all(r["complete"] and r["steps"] == 12 for r in straight.values())
    assert [e["step"] for e in straight["gaussian-nerf-esgd"]["curve"]] == [5, 10, 12]
    assert "adam lr 0.0001, exponential to 1e-06 over 12 steps" in straight["gaussian-nerf-adam"]["schedule"]
    # ... equals one run (in either order) paused at step 5 and resumed from its checkpoints
    out = tmp_path / "split"
    paused = _contest(scene, out, "--order", order, "--stop-at-step", "5")
    assert all(not r["complete"] and r["steps"] == 5 for r in paused.values())
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["gaussian-nerf-adam.pt", "gaussian-nerf-esgd.pt"]
    assert "Partial: 0 of 2 methods complete" in (out / "lego_tiny_contest.md").read_text()
    resumed = _contest(scene, out, "--order", order)
    assert all(r["complete"] and r["resumed_from"] == [5] for r in resumed.values())
    assert _curves(resumed) == _curves(straight)
    md = (out / "lego_tiny_contest.md").read_text()
    assert "Complete." in md and "## Time to quality" in md and "resumed at step 5" in md
    assert "compressed to the run's N = 12 steps" in md
    data = json.loads((out / "lego_tiny_contest.json").read_text())
    assert data["targets"]["a"]["method"] == "gaussian-nerf-adam" and set(data["methods"]) == set(resumed)
    assert (out / "lego_tiny_contest.png").stat().st_size > 0

    # another session: the records travel (the repository), the checkpoints do not; nothing is trained again
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for m in resumed:
        shutil.copy(out / f"{m}.json", fresh)
    monkeypatch.setattr(lego_convergence, "build", lambda *a, **k: pytest.fail("a recorded method was trained again"))
    again = _contest(scene, fresh)
    assert _curves(again) == _curves(straight)
    assert "Complete." in (fresh / "lego_tiny_contest.md").read_text()
    with pytest.raises(SystemExit, match="another protocol"):
        _contest(scene, fresh, "--rays", "16")


def test_lego_contest_restarts_a_partial_run_without_its_checkpoint(scene, tmp_path, capsys):
    out = tmp_path / "out"
    lego_contest.main(
        [
            "--preset",
            "tiny",
            "--data",
            str(scene),
            "--image-scale",
            "1",
            "--out",
            str(out),
            "--checkpoints",
            str(tmp_path / "gone"),
            "--methods",
            "gaussian-nerf-adam",
            "--stop-at-step",
            "5",
        ]
    )
    shutil.rmtree(tmp_path / "gone")
    records = lego_contest.main(
        [
            "--preset",
            "tiny",
            "--data",
            str(scene),
            "--image-scale",
            "1",
            "--out",
            str(out),
            "--checkpoints",
            str(tmp_path / "gone"),
            "--methods",
            "gaussian-nerf-adam",
        ]
    )
    assert "starting again from step 0" in capsys.readouterr().out
    assert records["gaussian-nerf-adam"]["complete"] and records["gaussian-nerf-adam"]["resumed_from"] == []


def _bash(script: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_run_until_stops_the_whole_process_group(tmp_path):
    child = (
        "import signal, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; "
        f"time.sleep(60)']); signal.signal(signal.SIGTERM, lambda *a: (open({str(tmp_path / 'term')!r}, 'w'), "
        "sys.exit(3))); time.sleep(60)"
    )
    t0 = time.perf_counter()
    done = _bash(
        f'GNERF_DEVICE_ENV=1 source benchmarks/gpu/env.sh; run_until 2 {sys.executable} -c "{child}"; echo "rc=$?"',
        {},
        timeout=60,
    )
    assert "rc=124" in done.stdout and time.perf_counter() - t0 < 20
    assert (tmp_path / "term").exists()  # SIGTERM reached the Python (its handler ran)


def test_contest_skips_a_phase_that_does_not_fit(tmp_path):
    done = _bash(
        "bash benchmarks/gpu/contest.sh",
        {
            "TINY": "1",
            "PYTHON": sys.executable,
            "OUT": str(tmp_path / "out"),
            "WORK": str(tmp_path / "work"),
            "LIMIT": "60",
            "PHASES": "images",
        },
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== images skipped" in done.stdout


def test_contest_rehearsal_every_phase_tiny(scene, tmp_path):
    """The device call's whole path (lego, speed, images) on this CPU at tiny sizes, as contest.sh runs it there."""
    import imageio.v3 as iio

    kodak = tmp_path / "data" / "images" / "kodak"
    kodak.mkdir(parents=True)
    iio.imwrite(kodak / "kodim01.png", (np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8))
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        "TINY": "1",
        "PYTHON": sys.executable,
        "OUT": str(out),
        "WORK": str(work),
        "LEGO_DATA": str(scene),
        "TINY_SCALE": "1",
        "IMAGE_DATA": str(tmp_path / "data"),
        "IMAGES": "kodim01",
        "IMAGE_OPTIMIZERS": "soap schedulefree-adamw",
        "SPEED_ONLY": "7",
        "LIMIT": "400",
    }
    done = _bash("bash benchmarks/gpu/contest.sh", env, timeout=480)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "skipped" not in log and "stopped after" not in log, log[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())  # what the device tool brings back
    assert {
        "contest.log",
        "lego_tiny_contest.md",
        "lego_tiny_contest.png",
        "lego_tiny_contest.json",
        "speed.md",
        "lego_tf32.md",
        "image_runs.tgz",
        "contest.tgz",
    } == set(files)
    data = json.loads((out / "lego_tiny_contest.json").read_text())
    from gnerf.nerf.methods import CONFIGS

    assert len(data["methods"]) == len(CONFIGS) + 1  # every registered method and coarse vanilla-nerf
    assert all(r["complete"] for r in data["methods"].values())
    assert "(7) Where a train_iteration's time goes" in (out / "speed.md").read_text()
    with tarfile.open(out / "image_runs.tgz") as tgz:
        names = tgz.getnames()
    for opt in ("soap", "schedulefree-adamw"):  # the carried wheels: heavyball, schedulefree
        run = f"./image/runs/kodim01/gaussian/{opt}/seed0/"
        assert run + "metrics.jsonl" in names and run + "config.json" in names, names
    assert not [n for n in names if n.endswith((".pt", ".png"))]
    with tarfile.open(out / "contest.tgz") as tgz:
        names = tgz.getnames()
    assert "./lego_records/gaussian-nerf-esgd.json" in names and "./speed/speed.log" in names


def test_the_schedule_is_stated_as_each_method_runs_it():
    from types import SimpleNamespace

    from gnerf.nerf.methods import CONFIGS

    def words(method):
        return lego_contest.schedule_of(SimpleNamespace(config=CONFIGS[method]))

    assert words("gaussian-nerf-esgd") == (
        "esgd-max lr 1, exponential to 0.1 over 200,000 steps; curvature on each of the first 50 steps, then every "
        "100th; lr warm-up base 0.99"
    )
    assert words("gaussian-nerf-muon-esgd") == (
        "muon-esgd lr 0.0006 (ESGD part 3), linear warm-up over 100 steps, then cosine to 0 over 200,000 steps; curvature on each "
        "of the first 50 steps, then every 100th"
    )
    assert words("gaussian-nerf-muon") == "muon lr 0.0006 (Adam part 0.0003), cosine to 0 over 200,000 steps"


def test_lego_contest_refuses_a_checkpoint_its_optimizer_refuses_in_one_line(scene, tmp_path):
    out = tmp_path / "out"
    _contest(scene, out, "--stop-at-step", "5")
    path = out / "ckpt" / "gaussian-nerf-esgd.pt"
    state = torch.load(path, weights_only=True)
    group = state["optimizers"]["fields"]["param_groups"][0]
    group.pop("lr_warmup")  # as saved by a version of ESGD-Max without that option
    torch.save(state, path)
    with pytest.raises(SystemExit, match=r"gaussian-nerf-esgd\.pt: .*refuses this checkpoint .*delete the file"):
        _contest(scene, out)


def test_lego_contest_restarts_a_checkpoint_saved_with_other_settings(scene, tmp_path, capsys):
    straight = _contest(scene, tmp_path / "straight")
    out = tmp_path / "out"
    _contest(scene, out, "--stop-at-step", "5")
    path = out / "ckpt" / "gaussian-nerf-adam.pt"
    state = torch.load(path, weights_only=True)
    assert "adam lr 0.0001" in state["schedule"]
    state["schedule"] = state["schedule"].replace("lr 0.0001", "lr 0.0002")  # saved before the registered lr changed
    torch.save(state, path)
    resumed = _contest(scene, out)
    assert resumed["gaussian-nerf-adam"]["resumed_from"] == [] and resumed["gaussian-nerf-esgd"]["resumed_from"] == [5]
    assert _curves(resumed) == _curves(straight)
    assert "gaussian-nerf-adam.pt was saved with other settings (adam lr 0.0002" in capsys.readouterr().out


def test_lr_scale_multiplies_every_learning_rate_of_every_method():
    import copy

    from benchmarks.nerf import scale_lrs
    from gnerf.nerf.methods import CONFIGS

    for name, registered in CONFIGS.items():
        cfg = copy.copy(registered)  # shallow, as benchmarks.nerf.build copies nerfstudio's vanilla-nerf
        scale_lrs(cfg, 3.0)
        new, old = cfg.optimizers["fields"], registered.optimizers["fields"]
        assert new["optimizer"].lr == pytest.approx(3 * old["optimizer"].lr), name
        for field in ("adam_lr", "esgd_lr"):  # the second algorithm's lr of muon and muon-esgd(-eq)
            if getattr(old["optimizer"], field, None) is not None:
                assert getattr(new["optimizer"], field) == pytest.approx(3 * getattr(old["optimizer"], field))
        assert new["scheduler"].lr_final == pytest.approx(3 * old["scheduler"].lr_final)  # the schedule's shape kept
        assert (
            new["scheduler"].kind == old["scheduler"].kind and new["scheduler"].max_steps == old["scheduler"].max_steps
        )
    assert CONFIGS["gaussian-nerf-muon"].optimizers["fields"]["optimizer"].adam_lr == 3e-4  # the registry untouched
    assert CONFIGS["gaussian-nerf-adam"].optimizers["fields"]["optimizer"].lr == 1e-4


def test_lego_contest_lr_screen_runs_scaled_lrs_under_its_own_protocol(scene, tmp_path):
    args = lego_contest.parse(["--preset", "tiny", "--report-only"])
    assert "lr_scale" not in lego_contest.protocol_of(args)  # records made before the option still match
    with pytest.raises(SystemExit):
        lego_contest.parse(["--preset", "tiny", "--report-only", "--lr-scale", "0"])
    out = tmp_path / "x3"
    records = _contest(scene, out, "--lr-scale", "3", "--steps", "6", "--methods", "gaussian-nerf-adam")
    rec = records["gaussian-nerf-adam"]
    assert rec["protocol"]["lr_scale"] == 3.0 and rec["complete"]
    assert "adam lr 0.0003, exponential to 3e-06 over 6 steps" in rec["schedule"]
    assert "every learning rate times 3" in (out / "lego_tiny_contest.md").read_text()
    with pytest.raises(SystemExit, match="another protocol"):  # the registered lrs never mix with a screen's records
        _contest(scene, out, "--steps", "6", "--methods", "gaussian-nerf-adam")


@pytest.mark.parametrize(
    "method",
    ["gaussian-nerf-muon", "gaussian-nerf-muon-esgd", "gaussian-nerf-muon-esgd-eq", "gaussian-nerf-psgd-kron-esgd"],
)
def test_registered_lego_lrs_are_the_ones_the_lr_screen_ran_at_its_best_multiple(method, tmp_path):
    """These methods are registered at the lr screen's x3 (docs/lego_cpu_lr_screen/lr_screen.md): compressed to the
    screen's 5,000 steps, each runs exactly the optimizer, lrs and schedule its x3 record ran."""
    from types import SimpleNamespace

    from benchmarks.recipes import method_config

    rec = json.loads((ROOT / "docs" / "lego_cpu_lr_screen" / "x3" / f"{method}.json").read_text())
    proto = rec["protocol"]
    cfg = method_config(
        method,
        tmp_path,
        tmp_path,
        iterations=proto["steps"],
        rays=proto["rays"],
        samples=proto["samples"],
        hidden_dim=proto["hidden"],
        num_layers=proto["layers"],
    )
    assert lego_contest.schedule_of(SimpleNamespace(config=cfg)) == rec["schedule"]


def test_lego_contest_stopped_by_sigterm_keeps_its_records_and_says_so_in_one_line(scene, tmp_path):
    import signal

    out = tmp_path / "out"
    args = ["--preset", "tiny", "--data", str(scene), "--image-scale", "1", "--steps", "100000", "--out", str(out)]
    args += ["--checkpoints", str(out / "ckpt"), "--methods", "gaussian-nerf-adam"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.gpu.lego_contest", *args],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    record = out / "gaussian-nerf-adam.json"
    deadline = time.monotonic() + 240
    while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: lego contest stopped (signal 15); its records")
    rec = json.loads(record.read_text())
    assert rec["steps"] >= 1 and not rec["complete"]
