"""The nerfstudio plugin, driven in-process: model, field, sampler, trainer protocol, checkpoints, metrics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.utils.eval_utils import eval_setup

from gnerf.errors import InputError, NonFiniteLossError
from gnerf.nerf import metrics as metrics_module
from gnerf.nerf.model import GaussianNeRFModelConfig
from gnerf.nerf.optimizers import GnerfSchedulerConfig
from gnerf.optim import ESGDMax
from gnerf.scenes import make_blender_scene

from helpers_tasks import esgd_counters
from nerf_helpers import nan_loss_after, tiny_config, train
from shared_data import LEGO


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_blender_scene(
        tmp_path_factory.mktemp("scenes") / "procedural", image_size=24, num_train=8, num_val=2, num_test=3
    )


def _rays(n: int, near=None) -> RayBundle:
    origins = torch.tensor([[0.0, 0.0, 4.0]]).expand(n, 3)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3) * 0.1 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    return RayBundle(
        origins=origins,
        directions=dirs,
        pixel_area=torch.ones(n, 1),
        camera_indices=torch.zeros(n, 1, dtype=torch.long),
    )


def _model(**overrides):
    cfg = GaussianNeRFModelConfig(**overrides)
    return cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=4, metadata={})


def test_default_model_is_the_papers():
    model = _model()
    rays = model.collider(_rays(5))
    samples = model.sampler(rays)
    assert samples.frustums.starts.shape == (5, 128, 1)  # exactly 128 points per ray, one model
    assert model.sampling == "uniform" and (model.near_plane, model.far_plane) == (2.0, 6.0)
    starts = samples.frustums.starts[..., 0]
    assert torch.all(starts >= 2.0) and torch.all(samples.frustums.ends[..., 0] <= 6.0 + 1e-5)
    linears = [m for m in model.field.trunk.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 9 and linears[0].in_features == 3  # raw xyz, no positional encoding
    assert linears[5].in_features == 256 + 3  # skip connection
    assert all(type(a).__name__ == "Gaussian" and a.sigma == 0.1 for a in model.field.trunk.activations)
    assert set(model.get_param_groups()) == {"fields"}


def test_field_density_and_colour_shapes_and_ranges():
    model = _model(hidden_dim=32, feature_dim=16, num_layers=3, skip_connections=(1,), num_samples=20)
    samples = model.sampler(model.collider(_rays(7)))
    out = model.field(samples)
    density, rgb = out[FieldHeadNames.DENSITY], out[FieldHeadNames.RGB]
    assert density.shape == (7, 20, 1) and rgb.shape == (7, 20, 3)
    assert torch.all(density >= 0)
    assert torch.all((rgb > 0) & (rgb < 1))
    rendered = model.get_outputs(model.collider(_rays(7)))
    assert rendered["rgb"].shape == (7, 3) and rendered["accumulation"].shape == (7, 1)
    assert torch.all((rendered["accumulation"] >= 0) & (rendered["accumulation"] <= 1 + 1e-5))


def test_forward_facing_metadata_switches_sampling_and_planes():
    cfg = GaussianNeRFModelConfig(num_samples=8)
    model = cfg.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-5.0] * 3, [5.0] * 3])),
        num_train_data=2,
        metadata={"near_plane": 1.2, "far_plane": 9.0, "forward_facing": True},
    )
    assert model.sampling == "disparity" and (model.near_plane, model.far_plane) == (1.2, 9.0)
    samples = model.sampler(model.collider(_rays(3)))
    mids = ((samples.frustums.starts + samples.frustums.ends) / 2)[0, :, 0]
    gaps = torch.diff(1.0 / mids)  # linear in disparity: gaps in 1/depth roughly constant
    assert mids[0] >= 1.2 and torch.all(gaps < 0)
    with pytest.raises(InputError, match="collider-params: need 0 <= near_plane < far_plane"):
        GaussianNeRFModelConfig(collider_params={"near_plane": 5.0, "far_plane": 1.0}).setup(
            scene_box=SceneBox(aabb=torch.ones(2, 3)), num_train_data=1, metadata={}
        )


def test_the_collider_is_nerfstudios_from_collider_params():
    """Model.populate_modules builds the collider: collider_params' planes, else the dataparser's, else Blender's."""
    from nerfstudio.model_components.scene_colliders import NearFarCollider

    forward_facing = {"near_plane": 1.2, "far_plane": 9.0}
    for params, metadata, planes in [
        (None, {}, (2.0, 6.0)),
        (None, forward_facing, (1.2, 9.0)),
        ({"far_plane": 4.0}, forward_facing, (1.2, 4.0)),
        ({"near_plane": 0.5, "far_plane": 3.0}, forward_facing, (0.5, 3.0)),
    ]:
        model = GaussianNeRFModelConfig(collider_params=params, num_samples=4).setup(
            scene_box=SceneBox(aabb=torch.ones(2, 3)), num_train_data=1, metadata=metadata
        )
        assert isinstance(model.collider, NearFarCollider) and not model.collider.reset_near_plane
        assert (model.collider.near_plane, model.collider.far_plane) == planes == (model.near_plane, model.far_plane)
    assert _model(reset_near_plane=True).collider.reset_near_plane  # nerfstudio's behaviour, when asked for
    with pytest.raises(InputError, match="enable-collider False: .* keep it True"):
        _model(enable_collider=False)
    with pytest.raises(InputError, match="collider-params: unknown key.* near"):
        _model(collider_params={"near": 1.0})


def test_garf_architecture_refuses_the_size_fields():
    with pytest.raises(
        InputError,
        match=r"garf has fixed sizes and does not take --pipeline.model.hidden-dim, "
        r"--pipeline.model.direction-dim: leave",
    ):
        _model(architecture="garf", hidden_dim=32, direction_dim=8)
    _model(architecture="garf", skip_connections=[5])  # the defaults, as a config.yml gives them back


def _linear_shapes(module):
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_garf_architecture_layers_are_the_published_ones():
    from gnerf.fields import Gaussian

    field = _model(architecture="garf").field
    trunk = field.trunk
    assert _linear_shapes(trunk.embedding) == [(3, 256)]
    assert _linear_shapes(trunk.layers) == [(256, 256)] * 5 + [(512, 256)]
    assert _linear_shapes(trunk.density) == [(256, 1)] and _linear_shapes(trunk.feature) == [(256, 256)]
    assert _linear_shapes(field.direction_embedding) == [(3, 256)]
    assert _linear_shapes(field.color_head) == [(512, 128), (128, 3)]
    assert len(_linear_shapes(field)) == 12  # nothing else: no positional encoding, no extra layer
    gaussians = [m for m in field.modules() if isinstance(m, Gaussian)]
    assert [type(m).__name__ for m in gaussians].count("CentredGaussian") == 2
    assert len(gaussians) == 2 + 1 + 1 and all(m.sigma == 0.1 for m in gaussians)  # + trunk's, colour head's


def test_garf_architecture_computes_the_published_forward():
    """Hooks check the centring and the skip; a re-implementation from the weights checks the whole output."""
    model = _model(architecture="garf", sigma=1.0, num_samples=5)  # sigma 1: activations far from 0 and 1
    field, trunk = model.field, model.field.trunk
    seen = {}

    def keep(name):
        return lambda module, args, out: seen.update({name: (args[0], out)})

    for name, module in [
        ("z", trunk.embedding[0]),
        ("embedding", trunk.embedding),
        ("last", trunk.layers[-1]),
        ("zd", field.direction_embedding[0]),
        ("direction", field.direction_embedding),
    ]:
        module.register_forward_hook(keep(name))
    samples = model.sampler(model.collider(_rays(3)))
    out = field(samples)

    def centred(z):
        return torch.exp(-0.5 * (z - z.mean(-1, keepdim=True)) ** 2)

    torch.testing.assert_close(seen["embedding"][1], centred(seen["z"][1]))
    torch.testing.assert_close(seen["direction"][1], centred(seen["zd"][1]))
    torch.testing.assert_close(seen["last"][0][..., :256], seen["embedding"][1])  # the embedding, not raw xyz

    def lin(m, x):
        return x @ m.weight.T + m.bias

    def gauss(x):
        return torch.exp(-0.5 * x**2)

    def reference(skip_first: bool):
        x, d = samples.frustums.get_positions(), samples.frustums.directions
        emb = centred(lin(trunk.embedding[0], x))
        h = emb
        for i, layer in enumerate(trunk.layers):
            h = gauss(lin(layer, h))
            if i == 4:
                h = torch.cat([emb, h] if skip_first else [h, emb], -1)
        density = torch.nn.functional.softplus(lin(trunk.density, h))
        colour_in = torch.cat([lin(trunk.feature, h), centred(lin(field.direction_embedding[0], d))], -1)
        head = field.color_head.layers
        return density, torch.sigmoid(lin(head[1], gauss(lin(head[0], colour_in))))

    density, rgb = reference(skip_first=True)
    torch.testing.assert_close(out[FieldHeadNames.DENSITY], density)
    torch.testing.assert_close(out[FieldHeadNames.RGB], rgb)
    assert not torch.allclose(reference(skip_first=False)[0], density, atol=1e-4)  # the check can tell the order


def test_garf_architecture_trains_through_the_method_config(scene, tmp_path):
    from benchmarks.recipes import setup_trainer
    from gnerf.nerf.field import GARFTrunk

    cfg = tiny_config(
        "gaussian-nerf-esgd", scene, tmp_path, iterations=3, precondition_warmup_steps=2, precondition_frequency=1
    )
    cfg.pipeline.model = GaussianNeRFModelConfig(architecture="garf", num_samples=cfg.pipeline.model.num_samples)
    trainer = setup_trainer(cfg)
    model = trainer.pipeline.model
    assert isinstance(model.field.trunk, GARFTrunk)
    initial = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert esgd_counters(trainer.optimizers.optimizers["fields"]) == {(3, 3)}  # curvature on steps 0, 1 (warm-up), 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), initial))
    assert "architecture: garf" in (trainer.base_dir / "config.yml").read_text()


def test_scheduler_decays_in_python_floats():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = ESGDMax(p, lr=1.0)
    sched = GnerfSchedulerConfig(kind="exponential", lr_final=0.1, max_steps=10).setup().get_scheduler(opt, lr_init=1.0)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(10**-0.5) and lrs[10] == pytest.approx(0.1)
    assert lrs[11] == pytest.approx(0.1)
    assert all(type(v) is float for v in sched.state_dict()["_last_lr"])


def test_esgd_training_protocol_checkpoint_and_resume(scene, tmp_path, monkeypatch):
    calls = []
    real_backward = torch.autograd.backward

    def spy(*args, **kwargs):
        calls.append(bool(kwargs.get("create_graph", args[3] if len(args) > 3 else False)))
        return real_backward(*args, **kwargs)

    def config(iterations, timestamp):  # one 16-step schedule, run as 12 steps then 4 resumed ones
        cfg = tiny_config(
            "gaussian-nerf-esgd",
            scene,
            tmp_path,
            iterations=iterations,
            precondition_warmup_steps=3,
            precondition_frequency=4,
        )
        sched = cfg.optimizers["fields"]["scheduler"]
        cfg.optimizers["fields"]["scheduler"] = dataclasses.replace(sched, max_steps=16)
        cfg.timestamp = timestamp
        return cfg

    monkeypatch.setattr(torch.autograd, "backward", spy)
    trainer = train(config(12, "first"))
    monkeypatch.setattr(torch.autograd, "backward", real_backward)

    # graph built on exactly the curvature steps 0, 1, 2, 6, 10 and on no other step
    assert [i for i, c in enumerate(calls) if c] == [0, 1, 2, 6, 10] and len(calls) == 12
    opt = trainer.optimizers.optimizers["fields"]
    assert isinstance(opt, ESGDMax) and esgd_counters(opt) == {(12, 5)}
    assert all(p.grad is None or p.grad.grad_fn is None for p in trainer.pipeline.model.parameters())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 ** (12 / 16))  # 1 -> 0.1 exponentially

    ckpts = sorted((trainer.base_dir / "nerfstudio_models").glob("*.ckpt"))
    assert [c.name for c in ckpts] == ["step-000000011.ckpt"]
    assert not list(trainer.base_dir.glob(".*.tmp"))
    state = torch.load(ckpts[0], map_location="cpu")  # torch >= 2.6 default: weights_only=True
    assert esgd_counters(state["optimizers"]["fields"]) == {(12, 5)}

    # resume (nerfstudio runs max_num_iterations more steps): step, curvature counters and schedule continue
    cfg = config(4, "resumed")
    cfg.load_dir = trainer.base_dir / "nerfstudio_models"
    resumed = train(cfg)
    ropt = resumed.optimizers.optimizers["fields"]
    assert esgd_counters(ropt) == {(12 + 4, 6)}  # step 14 is a curvature step
    assert ropt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_eval_setup_loads_checkpoint_and_reports_metrics_without_lpips(scene, tmp_path, monkeypatch, capsys):
    trainer = train(tiny_config("gaussian-nerf-esgd", scene, tmp_path, iterations=6))

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    import torchmetrics.image.lpip as lpip_module

    monkeypatch.setattr(lpip_module, "LearnedPerceptualImagePatchSimilarity", offline)
    _, pipeline, ckpt, step = eval_setup(trainer.base_dir / "config.yml", test_mode="test")
    assert step == 5 and ckpt.name == "step-000000005.ckpt"
    results = pipeline.get_average_eval_image_metrics(step=step)
    assert {"psnr", "ssim"} <= set(results) and "lpips" not in results
    assert math.isfinite(results["psnr"]) and 0 < results["ssim"] <= 1
    out = capsys.readouterr().out
    assert out.count("LPIPS skipped") == 1 and metrics_module.ALEXNET_WEIGHTS in out


def test_lpips_is_reported_when_the_metric_builds(monkeypatch):
    class FakeLPIPS:
        def __init__(self, normalize):
            assert normalize

        def to(self, device):
            return self

        def __call__(self, a, b):
            return torch.mean((a - b) ** 2)

    import torchmetrics.image.lpip as lpip_module

    monkeypatch.setattr(lpip_module, "LearnedPerceptualImagePatchSimilarity", FakeLPIPS)
    m = metrics_module.ImageMetrics()
    img = torch.rand(1, 3, 16, 16)
    res = m(img, img * 0.5)
    assert res["lpips"] == pytest.approx(float(torch.mean((img - img * 0.5) ** 2)))
    assert res["psnr"] == pytest.approx(-10 * math.log10(float(torch.mean((img - img * 0.5) ** 2))), rel=1e-4)


def test_nan_loss_stops_with_message(scene, tmp_path, monkeypatch):
    nan_loss_after(monkeypatch, 0)
    with pytest.raises(NonFiniteLossError, match=r"became NaN or infinite at step 0 \(rgb_loss=nan\)"):
        train(tiny_config("gaussian-nerf-esgd", scene, tmp_path, iterations=3))


def test_nan_after_start_is_caught_before_any_checkpoint(scene, tmp_path, monkeypatch):
    nan_loss_after(monkeypatch, 12)
    cfg = tiny_config("gaussian-nerf-adam", scene, tmp_path, iterations=15)  # save at the end only
    with pytest.raises(NonFiniteLossError, match="between steps 10 and 14"):
        train(cfg)
    assert not list((cfg.get_base_dir() / "nerfstudio_models").glob("*.ckpt"))


def test_grad_scaler_is_refused_with_curvature_optimizers(scene, tmp_path):
    cfg = tiny_config("gaussian-nerf-esgd", scene, tmp_path, iterations=2)
    cfg.use_grad_scaler = True
    with pytest.raises(ValueError, match="without --mixed-precision and --use-grad-scaler"):
        train(cfg)


def test_adam_method_trains_with_first_order_steps_only(scene, tmp_path, monkeypatch):
    calls = []
    real_backward = torch.autograd.backward
    monkeypatch.setattr(
        torch.autograd, "backward", lambda *a, **k: calls.append(k.get("create_graph", False)) or real_backward(*a, **k)
    )
    trainer = train(tiny_config("gaussian-nerf-adam", scene, tmp_path, iterations=4))
    assert calls == [False] * 4
    opt = trainer.optimizers.optimizers["fields"]
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] < 1e-4


@pytest.mark.skipif(not LEGO.exists(), reason="needs ../shared/data/nerf_synthetic/lego")
def test_lego_downscaled_trains_and_evaluates(tmp_path):
    cfg = tiny_config(
        "gaussian-nerf-esgd", LEGO, tmp_path, iterations=6, precondition_warmup_steps=2, precondition_frequency=3
    )
    cfg.pipeline.datamanager.camera_res_scale_factor = 0.1  # 40x40
    trainer = train(cfg)
    assert esgd_counters(trainer.optimizers.optimizers["fields"]) == {(6, 3)}  # curvature on steps 0, 1, 3
    _, pipeline, _, step = eval_setup(trainer.base_dir / "config.yml", test_mode="test")
    assert len(pipeline.datamanager.eval_dataset) == 200
    metrics, images = pipeline.model.get_image_metrics_and_images(
        pipeline.model.get_outputs_for_camera(pipeline.datamanager.eval_dataset.cameras[0:1]),
        pipeline.datamanager.eval_dataset[0],
    )
    assert images["img"].shape == (40, 80, 3) and math.isfinite(metrics["psnr"])


def _llff_config(tmp_path, iterations: int):
    """A tiny forward-facing LLFF scene (24x32 views, bounds 2..9) and the ESGD method's config on it."""
    from gnerf.nerf.llff_dataparser import LLFFDataParserConfig

    import test_llff_dataparser as llff

    c2w = llff._make_opengl_poses()
    bounds = np.stack([np.full(llff.N_VIEWS, 2.0), np.full(llff.N_VIEWS, 9.0)], axis=1)
    np.save(tmp_path / "poses_bounds.npy", llff._to_llff_rows(c2w, bounds))
    llff._write_images(tmp_path / "images", llff.H0, llff.W0)
    return tiny_config(
        "gaussian-nerf-esgd",
        tmp_path,
        tmp_path / "out",
        iterations=iterations,
        dataparser=LLFFDataParserConfig(downscale_factor=1),
    )


def test_forward_facing_lr_final(tmp_path):
    trainer = train(_llff_config(tmp_path, iterations=3))
    assert trainer.pipeline.model.sampling == "disparity"
    # 1 -> 0.01 over the run on forward-facing scenes (Blender: 1 -> 0.1)
    assert trainer.optimizers.optimizers["fields"].param_groups[0]["lr"] == pytest.approx(0.01)


def test_forward_facing_trains_at_image_size(tmp_path):
    """llff-data --image-size: the trainer's datasets hold the resized images and cameras of that size."""
    (tmp_path / "scene").mkdir()
    cfg = _llff_config(tmp_path / "scene", iterations=2)
    cfg.pipeline.datamanager.dataparser.image_size = (12, 16)  # from images/ at 24 x 32
    cfg.pipeline.datamanager.dataparser.image_cache_dir = tmp_path / "cache"
    trainer = train(cfg)
    for dataset in (trainer.pipeline.datamanager.train_dataset, trainer.pipeline.datamanager.eval_dataset):
        assert dataset[0]["image"].shape == (12, 16, 3)
        assert (dataset.cameras.width == 16).all() and (dataset.cameras.height == 12).all()


def test_evaluation_samples_as_training_does(scene, tmp_path):
    """Eval mode keeps the near plane: training's sample positions without the jitter, hence its renders."""
    trainer = train(tiny_config("gaussian-nerf-esgd", scene, tmp_path, iterations=4))
    model = trainer.pipeline.model
    camera = trainer.pipeline.datamanager.eval_dataset.cameras[0:1]
    model.sampler.train_stratified = False  # train mode then samples deterministically, as eval mode does

    samples, outputs = {}, {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        rays = camera.generate_rays(camera_indices=0).flatten()
        samples[mode] = model.sampler(model.collider(rays)).frustums
        outputs[mode] = model.get_outputs_for_camera(camera)
    assert not model.training
    torch.testing.assert_close(samples["eval"].starts[:, 0], torch.full_like(samples["eval"].starts[:, 0], 2.0))
    torch.testing.assert_close(samples["eval"].starts, samples["train"].starts)
    torch.testing.assert_close(samples["eval"].ends, samples["train"].ends)
    for key in ("rgb", "accumulation", "depth"):
        torch.testing.assert_close(outputs["eval"][key], outputs["train"][key])


def test_ns_render_of_forward_facing_scene_is_not_blank(tmp_path, monkeypatch):
    """ns-render's code path (eval_setup, eval mode, disparity sampling) on a forward-facing scene draws the field."""
    import imageio.v2 as imageio

    from nerfstudio.scripts import render
    from nerfstudio.utils import install_checks

    trainer = train(_llff_config(tmp_path, iterations=3))
    monkeypatch.setattr(install_checks, "check_ffmpeg_installed", lambda: None)  # frames as images need no ffmpeg
    render.RenderInterpolated(
        load_config=trainer.base_dir / "config.yml",
        output_path=tmp_path / "render" / "frames",
        output_format="images",
        image_format="png",
        interpolation_steps=1,
    ).main()
    frames = sorted((tmp_path / "render" / "frames").glob("*.png"))
    assert frames
    for frame in frames:
        rgb = imageio.imread(frame)[..., :3]
        assert rgb.shape == (24, 32, 3)
        assert (rgb < 250).all(), f"{frame.name} has white pixels: nothing in front of the white background"
