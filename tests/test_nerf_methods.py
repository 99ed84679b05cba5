"""Every registered Gaussian-NeRF method trains, evaluates and renders (in-process, tiny sizes)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nerfstudio.utils.eval_utils import eval_setup

from gnerf.errors import InputError
from gnerf.nerf.methods import CONFIGS
from gnerf.optim import MuonAdam, PSGDKronESGD
from gnerf.scenes import make_blender_scene

from nerf_helpers import method_config, tiny_config, train
from shared_data import LEGO


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_blender_scene(
        tmp_path_factory.mktemp("scenes") / "procedural", image_size=16, num_train=6, num_val=2, num_test=2
    )


def _render(trainer, tmp_path, monkeypatch):
    import imageio.v2 as imageio

    from nerfstudio.scripts import render
    from nerfstudio.utils import install_checks

    monkeypatch.setattr(install_checks, "check_ffmpeg_installed", lambda: None)  # frames as images need no ffmpeg
    render.RenderInterpolated(
        load_config=trainer.base_dir / "config.yml",
        output_path=tmp_path / "render",
        output_format="images",
        image_format="png",
        interpolation_steps=1,
    ).main()
    return [imageio.imread(p) for p in sorted((tmp_path / "render").glob("*.png"))]


@pytest.mark.parametrize(
    "method",
    [
        "gaussian-nerf-muon",
        "gaussian-nerf-adam-cosine",
        "gaussian-nerf-muon-esgd",
        "gaussian-nerf-muon-esgd-eq",
        "gaussian-nerf-psgd-kron-esgd",
    ],
)
def test_contender_method_trains_evaluates_and_renders(method, scene, tmp_path, monkeypatch):
    trainer = train(tiny_config(method, scene, tmp_path, iterations=4))
    _, pipeline, ckpt, step = eval_setup(trainer.base_dir / "config.yml", test_mode="test")
    assert step == 3 and ckpt.is_file()
    metrics = pipeline.get_average_eval_image_metrics(step=step)
    assert math.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] <= 1
    frames = _render(trainer, tmp_path, monkeypatch)
    assert frames and frames[0].shape[:2] == (16, 16)


def _train_with_square_hidden_matrices(method, scene, tmp_path, iterations):
    """Train ``method`` with a trunk of 16x3, 16x16, 16x16, 16x19 (skip), 17x16: two square hidden matrices."""
    cfg = method_config(
        method,
        scene,
        tmp_path,
        iterations=iterations,
        rays=32,
        samples=8,
        hidden_dim=16,
        num_layers=5,
        skip_connections=(3,),
        direction_dim=4,
        color_hidden_dim=8,
    )
    return train(cfg)


def test_muon_method_steps_the_square_hidden_matrices_with_muon(scene, tmp_path):
    trainer = _train_with_square_hidden_matrices("gaussian-nerf-muon", scene, tmp_path, 2)
    opt = trainer.optimizers.optimizers["fields"]
    assert isinstance(opt, MuonAdam)
    muon, adam = ([p for g in opt.param_groups if g["algorithm"] == a for p in g["params"]] for a in ("muon", "adam"))
    field = trainer.pipeline.model.field
    square = [p for p in field.parameters() if p.ndim == 2 and p.shape[0] == p.shape[1]]
    assert [id(p) for p in muon] == [id(p) for p in square] and len(square) == 2
    assert all(p.ndim == 1 or p.shape[0] != p.shape[1] for p in adam)
    assert all("momentum_buffer" in opt.state[p] for p in muon)
    # the cosine schedule has reached 0 at the run's last step
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_muon_esgd_eq_method_divides_muons_step_by_the_hidden_matrices_curvature(scene, tmp_path):
    trainer = _train_with_square_hidden_matrices("gaussian-nerf-muon-esgd-eq", scene, tmp_path, 3)
    opt = trainer.optimizers.optimizers["fields"]
    muon = [g for g in opt.param_groups if g["algorithm"] == "muon"]
    assert sum(len(g["params"]) for g in muon) == 2
    assert all((g["hidden_curvature"], g["curvature_damping"]) == ("after", 0.1) for g in muon)
    assert all(int(opt.state[p]["curvature_updates"]) == 3 for g in muon for p in g["params"])


def test_psgd_kron_esgd_method_steps_the_square_hidden_matrices_with_psgd_kron(scene, tmp_path):
    trainer = _train_with_square_hidden_matrices("gaussian-nerf-psgd-kron-esgd", scene, tmp_path, 3)
    opt = trainer.optimizers.optimizers["fields"]
    assert isinstance(opt, PSGDKronESGD)
    kron, esgd = (
        [p for g in opt.param_groups if g["algorithm"] == a for p in g["params"]] for a in ("psgd-kron", "esgd")
    )
    square = [p for p in trainer.pipeline.model.field.parameters() if p.ndim == 2 and p.shape[0] == p.shape[1]]
    assert [id(p) for p in kron] == [id(p) for p in square] and len(square) == 2
    assert all(int(opt.state[p]["curvature_updates"]) == 3 for p in esgd)
    assert len(opt.state_dict()["psgd_kron"]["state"]) == 2  # PSGD-Kron's own state, saved with the checkpoint


def test_a_bad_optimizer_option_is_one_input_error(scene, tmp_path):
    cfg = tiny_config("gaussian-nerf-muon", scene, tmp_path, iterations=1)
    group = cfg.optimizers["fields"]
    group["optimizer"] = dataclasses.replace(group["optimizer"], ns_dtype="float16")
    with pytest.raises(InputError, match="ns_dtype"):
        train(cfg)


@pytest.mark.skipif(not LEGO.exists(), reason="needs ../shared/data/nerf_synthetic/lego")
@pytest.mark.parametrize(
    "method",
    [
        "gaussian-nerf-muon",
        "gaussian-nerf-adam-cosine",
        "gaussian-nerf-muon-esgd",
        "gaussian-nerf-muon-esgd-eq",
        "gaussian-nerf-psgd-kron-esgd",
    ],
)
def test_contender_method_trains_on_lego(method, tmp_path):
    cfg = tiny_config(method, LEGO, tmp_path, iterations=3)
    cfg.pipeline.datamanager.camera_res_scale_factor = 0.05  # 20 x 20
    trainer = train(cfg)
    _, pipeline, _, step = eval_setup(trainer.base_dir / "config.yml", test_mode="test")
    outputs = pipeline.model.get_outputs_for_camera(pipeline.datamanager.eval_dataset.cameras[0:1])
    metrics, _ = pipeline.model.get_image_metrics_and_images(outputs, pipeline.datamanager.eval_dataset[0])
    assert math.isfinite(metrics["psnr"]) and torch.isfinite(outputs["rgb"]).all()


def test_every_method_is_registered_with_nerfstudio():
    from importlib.metadata import entry_points

    names = {e.name for e in entry_points(group="nerfstudio.method_configs")}
    assert set(CONFIGS) <= names
