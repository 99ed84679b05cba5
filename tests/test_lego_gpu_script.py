"""benchmarks/gpu/lego_convergence.py runs end to end at a tiny size on a procedural Blender scene (fast)."""

import json

from benchmarks.gpu import lego_convergence
from gnerf.scenes import make_blender_scene


def test_step_marks():
    assert lego_convergence.step_marks(600) == [10, 20, 30, 50, 100, 200, 300, 500]


def test_lego_convergence_tiny(tmp_path):
    scene = make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=4, supersample=1)
    runs = lego_convergence.main(["--data", str(scene), "--out", str(tmp_path / "out"), "--device", "cpu",
                                  "--threads", "1", "--budget", "600", "--max-steps", "12", "--rays", "32",
                                  "--samples", "8", "--hidden", "16", "--layers", "3", "--views", "2",
                                  "--lr-warmup", "0.5"])
    assert set(runs) == set(lego_convergence.METHODS)
    esgd = runs["gaussian-nerf-esgd"].trainer.optimizers.optimizers["fields"]
    assert esgd.param_groups[0]["lr_warmup"] == 0.5  # ESGD-Max only; Adam has no warm-up to change
    for r in runs.values():
        assert r.steps == 12 and r.stopped is None
        assert [(e.step, e.why) for e in r.curve] == [(10, "step"), (12, "end")]
        assert all(e.psnr > 0 for e in r.curve)
    md = (tmp_path / "out" / "lego_gpu.md").read_text()
    assert "Complete." in md and "| 10 |" in md and "gaussian-nerf-adam PSNR (dB)" in md
    assert (tmp_path / "out" / "lego_gpu.png").stat().st_size > 0
    data = json.loads((tmp_path / "out" / "lego_gpu.json").read_text())
    assert data["gaussian-nerf-esgd"]["steps"] == 12
