"""Command-line smoke tests (few: each nerfstudio command takes 15-50 s to start on a small CPU).

The demo runs the real ``ns-train gaussian-nerf-esgd``, ``ns-eval`` and ``ns-render interpolate``
commands one after the other, so one tiny demo run covers all three and the README's main command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio

from shared_data import ROOT, tree_env

BIN = Path(sys.executable).parent


def test_ns_train_help_lists_both_methods():
    out = subprocess.run([str(BIN / "ns-train"), "--help"], capture_output=True, text=True, timeout=300, env=tree_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gaussian-nerf-esgd" in out.stdout and "gaussian-nerf-adam" in out.stdout


def test_demo_trains_evaluates_and_renders(tmp_path):
    """Run from another folder, the demo builds its scene and writes its runs there (data/, outputs/)."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "demo.py"),
        "--iterations",
        "8",
        "--rays",
        "64",
        "--samples",
        "8",
        "--hidden-dim",
        "16",
        "--num-layers",
        "3",
        "--interpolation-steps",
        "2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=tree_env())
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "gnerf demo finished" in out.stdout and "test images  psnr" in out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("=" * 72)  # the summary comes last
    warned = [line.split("Warning: ", 1)[1] for line in (out.stdout + out.stderr).splitlines() if "Warning: " in line]
    assert len(warned) == len(set(warned)), warned  # no warning is printed twice
    run_dir = next((tmp_path / "outputs" / "demo" / "procedural" / "gaussian-nerf-esgd").iterdir())
    ckpts = list((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
    assert [c.name for c in ckpts] == ["step-000000007.ckpt"]
    results = json.loads((run_dir / "eval.json").read_text())["results"]
    assert results["psnr"] > 5 and 0 < results["ssim"] <= 1
    frames = iio.imread(run_dir / "renders" / "interpolate.mp4", plugin="pyav")
    assert frames.ndim == 4 and frames.shape[0] >= 10 and frames.shape[1:] == (64, 64, 3)
    assert frames.std() > 1  # not a blank video
