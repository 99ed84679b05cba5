"""ns-train's user errors: one `error:` line, no traceback, no half-made run folder; first-use defaults."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gnerf.errors import InputError, NonFiniteLossError
from gnerf.nerf.llff_dataparser import LLFFDataParserConfig

from nerf_helpers import nan_loss_after, tiny_config, train
from shared_data import ROOT, tree_env


def _llff_scene(folder: Path) -> Path:
    import test_llff_dataparser as llff

    c2w = llff._make_opengl_poses()
    bounds = np.stack([np.full(llff.N_VIEWS, 2.0), np.full(llff.N_VIEWS, 9.0)], axis=1)
    np.save(folder / "poses_bounds.npy", llff._to_llff_rows(c2w, bounds))
    llff._write_images(folder / "images", llff.H0, llff.W0)
    return folder


def _ns_train(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Run nerfstudio's own `ns-train` main on a config built by ``body`` (which defines ``cfg``), in a fresh process."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from nerf_helpers import tiny_config
        from gnerf.nerf.llff_dataparser import LLFFDataParserConfig
        from nerfstudio.scripts.train import main
        tmp = Path({str(tmp_path)!r})
    """) + textwrap.dedent(body) + "\nmain(cfg)\n"
    env = tree_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env["PYTHONPATH"]])
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_bad_scene_is_one_line_and_leaves_no_run_folder(tmp_path):
    _llff_scene(tmp_path)
    proc = _ns_train(tmp_path, """
        cfg = tiny_config("gaussian-nerf-esgd", tmp, tmp / "out", iterations=2,
                          dataparser=LLFFDataParserConfig(downscale_factor=1, holdout_every=1))
    """)
    line = _one_error_line(proc)
    assert line.startswith("error: --holdout-every 1 holds out every one of the 17 view(s)")
    assert not any((tmp_path / "out").rglob("config.yml"))  # config.yml was written, then the empty run removed


def test_nan_loss_is_one_line_that_says_no_checkpoint_exists(tmp_path):
    from gnerf.scenes import make_blender_scene

    make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    proc = _ns_train(tmp_path, """
        from gnerf.nerf.model import GaussianNeRFModel
        real = GaussianNeRFModel.get_loss_dict
        GaussianNeRFModel.get_loss_dict = lambda self, o, b, m=None: {
            k: v * float("nan") for k, v in real(self, o, b, m).items()}
        cfg = tiny_config("gaussian-nerf-esgd", tmp / "scene", tmp / "out", iterations=3)
    """)
    line = _one_error_line(proc)
    assert "became NaN or infinite at step 0" in line and "start again (no checkpoint had been saved)" in line


def test_a_bug_keeps_its_traceback(tmp_path):
    """Only InputError becomes one line: a ValueError raised inside the model's forward (a bug) reaches the ns-train
    user with its traceback."""
    from gnerf.scenes import make_blender_scene

    make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    proc = _ns_train(tmp_path, """
        from gnerf.nerf.model import GaussianNeRFModel
        def broken(self, ray_bundle):
            raise ValueError("a bug inside get_outputs")
        GaussianNeRFModel.get_outputs = broken
        cfg = tiny_config("gaussian-nerf-esgd", tmp / "scene", tmp / "out", iterations=2)
    """)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: a bug inside get_outputs" in proc.stderr, proc.stderr
    assert not any(line.startswith("error:") for line in proc.stderr.splitlines()), proc.stderr


def test_a_missing_scene_is_named_and_leaves_no_run_folder(tmp_path):
    with pytest.raises(InputError, match=r"the scene .*missing does not exist: point --data at a scene folder"):
        train(tiny_config("gaussian-nerf-esgd", tmp_path / "missing", tmp_path / "out", iterations=1))
    assert not any((tmp_path / "out").rglob("config.yml"))


def test_unwritable_output_folder_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    cfg = tiny_config("gaussian-nerf-esgd", tmp_path / "scene", blocker / "out", iterations=1)
    with pytest.raises(InputError, match=r"cannot write the run folder .*file/out.*choose another --output-dir"):
        cfg.save_config()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_device_is_refused_and_cpu_is_the_default(tmp_path):
    from method_configs.gnerf_methods import gaussian_nerf_adam, gaussian_nerf_esgd  # the registration

    assert gaussian_nerf_esgd.config.machine.device_type == "cpu"
    assert gaussian_nerf_adam.config.machine.device_type == "cpu"
    cfg = tiny_config("gaussian-nerf-esgd", tmp_path / "scene", tmp_path / "out", iterations=1)
    cfg.machine = dataclasses.replace(cfg.machine, device_type="cuda")
    with pytest.raises(InputError, match="torch sees no CUDA device: pass --machine.device-type cpu"):
        cfg.save_config()


def test_llff_data_names_the_experiment_after_the_scene(tmp_path):
    from method_configs.gnerf_methods import gaussian_nerf_esgd

    cfg = dataclasses.replace(gaussian_nerf_esgd.config)
    scene = tmp_path / "fern"
    dm = dataclasses.replace(cfg.pipeline.datamanager, dataparser=LLFFDataParserConfig(data=scene))
    cfg.pipeline = dataclasses.replace(cfg.pipeline, datamanager=dm)
    cfg.experiment_name = None
    assert cfg.get_base_dir().parts[-3] == "fern"


def test_first_order_optimizers_are_not_curvature_optimizers(tmp_path):
    """K-FAC and Shampoo take no Hessian-vector products: gradient accumulation is allowed for them."""
    from nerfstudio.engine.optimizers import OptimizerConfig

    from gnerf.optim import ESGDMax
    from gnerf.optim.base import needs_hessian_vector_products
    from gnerf.optim.kfac import KFAC
    from gnerf.optim.shampoo import Shampoo
    from gnerf.scenes import make_blender_scene

    params = [torch.nn.Parameter(torch.zeros(2, 2))]
    assert needs_hessian_vector_products(ESGDMax(params))
    assert not any(needs_hessian_vector_products(o) for o in (Shampoo(params), KFAC(params),
                                                               torch.optim.Adam(params)))
    scene = make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    cfg = tiny_config("gaussian-nerf-adam", scene, tmp_path / "out", iterations=2)
    shampoo = OptimizerConfig(_target=Shampoo, lr=0.1, eps=1e-4)  # any gnerf.optim optimizer runs so
    cfg.optimizers = {"fields": {**cfg.optimizers["fields"], "optimizer": shampoo}}
    cfg.gradient_accumulation_steps = {"fields": 2}
    train(cfg)  # refused before: "use a curvature optimizer, which does not support gradient accumulation"


def test_nan_message_points_at_a_saved_checkpoint(tmp_path, monkeypatch):
    from gnerf.scenes import make_blender_scene

    scene = make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    cfg = tiny_config("gaussian-nerf-adam", scene, tmp_path / "out", iterations=12)
    cfg.steps_per_save = 5
    nan_loss_after(monkeypatch, 6)
    with pytest.raises(NonFiniteLossError, match=r"resume from the last checkpoint \(step-000000005.ckpt\) "
                                                 r"with --load-dir .*nerfstudio_models"):
        train(cfg)


def test_a_checkpoint_that_cannot_be_written_is_an_input_error(tmp_path, monkeypatch):
    import errno

    from gnerf.nerf import trainer as trainer_module
    from gnerf.scenes import make_blender_scene

    def full(self, step, path):  # the disk fills up while the checkpoint is written
        raise OSError(errno.ENOSPC, "No space left on device")

    scene = make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    monkeypatch.setattr(trainer_module.CurvatureTrainer, "_write_checkpoint", full)
    with pytest.raises(InputError, match=r"cannot write the checkpoint .*step-000000001.ckpt: No space left on device; "
                                         r"free disk space or choose another --output-dir"):
        train(tiny_config("gaussian-nerf-adam", scene, tmp_path / "out", iterations=2))
