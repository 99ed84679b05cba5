"""The quick-start demo: procedural scene -> ``ns-train gaussian-nerf-esgd`` -> ``ns-eval`` -> ``ns-render``.

Runs the real nerfstudio command-line tools, printing each command before it runs, so that the
demo doubles as a recipe. The training settings are reduced so that it fits about ten minutes on
a 2-core CPU; the paper's settings (2048 rays x 128 samples, 256-wide trunk, 200k steps) are the
method's defaults and are used whenever these overrides are left out.

Paths are relative to the working directory, as nerfstudio's are: the scene is built in
``data/generated/procedural`` and the runs go to ``outputs/demo`` (``make demo`` runs from the checkout).

The commands run with the known deprecation warnings of torch and nerfstudio silenced
(:func:`gnerf.quiet.child_warning_filters`), which the demo's own start shows once at most: without that,
each of the three commands prints them again, and ns-train's camera-indexing warning repeats on every step.
The summary is the last thing printed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from gnerf.errors import InputError
from gnerf.quiet import child_warning_filters
from gnerf.scenes import make_blender_scene


@dataclass
class DemoConfig:
    """Settings of the CPU demo (reduced from the paper's, see the module docstring)."""

    scene: Path = Path("data/generated/procedural")
    """Where the procedural scene is (built if missing), relative to the working directory."""
    output_dir: Path = Path("outputs/demo")
    """Where training runs, evaluation and video go, relative to the working directory."""
    iterations: int = 1000
    """Training iterations."""
    rays: int = 256
    """Rays per training step (the paper: 2048)."""
    samples: int = 32
    """Stratified samples per ray (the paper: 128)."""
    hidden_dim: int = 64
    """Trunk width (the paper: 256)."""
    num_layers: int = 4
    """Trunk linear layers (the paper: 9)."""
    device: str = "cpu"
    """cpu or cuda."""
    interpolation_steps: int = 6
    """Video frames between consecutive test cameras (24 frames per second)."""


def _bin(name: str) -> str:
    """A console script installed beside this Python (the virtual environment's bin/)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _run(cmd: List[str], env: Optional[dict] = None) -> None:
    print(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise SystemExit(f"demo: `{cmd[0]}` failed with exit code {result.returncode} (see its output above)")


def with_ffmpeg(path: str, link_dir: Path) -> str:
    """``path`` (a PATH value) with an ``ffmpeg`` on it, which ns-render needs: unchanged when it has one,
    else with ``link_dir`` in front, holding a link to the binary that imageio-ffmpeg ships.

    ``make setup`` calls this for the virtual environment's bin/, the demo for its own runs.
    """
    if shutil.which("ffmpeg", path=path) is not None:
        return path
    import imageio_ffmpeg

    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "ffmpeg"
    if not link.exists():
        link.unlink(missing_ok=True)  # a dangling link from an earlier environment
        link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    return f"{link_dir}{os.pathsep}{path}"


def _env_with_ffmpeg(link_dir: Path) -> dict:
    """The environment with this Python's bin/ and an ``ffmpeg`` on PATH (linked in ``link_dir`` if need be)."""
    env = _quiet_env()
    env["PATH"] = with_ffmpeg(f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", link_dir)
    return env


def _quiet_env() -> dict:
    """The environment with the known upstream deprecation warnings silenced (see the module docstring)."""
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), child_warning_filters()) if w)
    return env


def check_demo(cfg: DemoConfig) -> None:
    """Refuse, naming the option, a count below 1 before anything runs: ns-train would name its own option for most,
    and ``--interpolation-steps 0`` gave ns-render an empty camera path (a traceback after the training)."""
    for name in ("iterations", "rays", "samples", "hidden_dim", "num_layers", "interpolation_steps"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")


def _train_command(cfg: DemoConfig, scene: Path, stamp: str) -> List[str]:
    """The demo's ``ns-train gaussian-nerf-esgd`` command line, at its reduced CPU sizes."""
    from gnerf.nerf.model import skip_connections_for

    return [
        _bin("ns-train"),
        "gaussian-nerf-esgd",
        "--output-dir",
        str(cfg.output_dir),
        "--experiment-name",
        "procedural",
        "--timestamp",
        stamp,
        "--vis",
        "tensorboard",
        "--machine.device-type",
        cfg.device,
        "--max-num-iterations",
        str(cfg.iterations),
        "--steps-per-save",
        str(cfg.iterations),
        "--steps-per-eval-batch",
        "250",
        "--steps-per-eval-image",
        str(cfg.iterations),
        "--steps-per-eval-all-images",
        str(10 * cfg.iterations),
        "--pipeline.datamanager.train-num-rays-per-batch",
        str(cfg.rays),
        "--pipeline.datamanager.eval-num-rays-per-batch",
        str(cfg.rays),
        "--pipeline.model.num-samples",
        str(cfg.samples),
        "--pipeline.model.hidden-dim",
        str(cfg.hidden_dim),
        "--pipeline.model.feature-dim",
        str(cfg.hidden_dim),
        "--pipeline.model.num-layers",
        str(cfg.num_layers),
        "--pipeline.model.skip-connections",
        *(str(s) for s in skip_connections_for(cfg.num_layers)),
        "--optimizers.fields.scheduler.max-steps",
        str(cfg.iterations),
        "blender-data",
        "--data",
        str(scene),
    ]


def run_demo(cfg: DemoConfig) -> dict:
    """Build the scene, train, evaluate and render; return the evaluation results."""
    check_demo(cfg)
    start = time.perf_counter()
    scene = make_blender_scene(cfg.scene)
    print(f"scene: {scene}")
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H%M%S")
    _run(_train_command(cfg, scene, stamp), env=_quiet_env())
    run_dir = cfg.output_dir / "procedural" / "gaussian-nerf-esgd" / stamp
    config_yml = run_dir / "config.yml"
    eval_json = run_dir / "eval.json"
    video = run_dir / "renders" / "interpolate.mp4"
    env = _env_with_ffmpeg(cfg.output_dir / ".bin")
    from gnerf.nerf.run_config import check_run_config

    check_run_config(config_yml)  # nerfstudio's commands load it with PyYAML's unsafe loader
    _run([_bin("ns-eval"), "--load-config", str(config_yml), "--output-path", str(eval_json)], env=env)
    _run(
        [
            _bin("ns-render"),
            "interpolate",
            "--load-config",
            str(config_yml),
            "--output-path",
            str(video),
            "--pose-source",
            "eval",
            "--interpolation-steps",
            str(cfg.interpolation_steps),
            "--frame-rate",
            "24",
            "--order-poses",
            "True",
        ],
        env=env,
    )
    results = json.loads(eval_json.read_text())["results"]
    minutes = (time.perf_counter() - start) / 60
    print("\n" + "=" * 72)
    print(
        f"gnerf demo finished in {minutes:.1f} min ({cfg.iterations} ESGD-Max steps, {cfg.rays} rays x "
        f"{cfg.samples} samples, reduced from the paper's 2048 x 128 for the CPU)"
    )
    print(f"  run folder   {run_dir}")
    print(f"  checkpoint   {run_dir / 'nerfstudio_models'}")
    print(f"  evaluation   {eval_json}")
    print(f"  video        {video}")
    print(f"  tensorboard  tensorboard --logdir {run_dir}")
    metrics = ", ".join(f"{k} {results[k]:.4f}" for k in ("psnr", "ssim", "lpips") if k in results)
    print(f"  test images  {metrics}  (PSNR in dB)")
    print("=" * 72)
    return results
