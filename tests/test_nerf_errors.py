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
    script = (
        textwrap.dedent(f"""
        from pathlib import Path
        from nerf_helpers import tiny_config
        from gnerf.nerf.llff_dataparser import LLFFDataParserConfig
        from nerfstudio.scripts.train import main
        tmp = Path({str(tmp_path)!r})
    """)
        + textwrap.dedent(body)
        + "\nmain(cfg)\n"
    )
    env = tree_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env["PYTHONPATH"]])
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_bad_scene_is_one_line_and_leaves_no_run_folder(tmp_path):
    _llff_scene(tmp_path)
    proc = _ns_train(
        tmp_path,
        """
        cfg = tiny_config("gaussian-nerf-esgd", tmp, tmp / "out", iterations=2,
                          dataparser=LLFFDataParserConfig(downscale_factor=1, holdout_every=1))
    """,
    )
    line = _one_error_line(proc)
    assert line.startswith("error: --holdout-every 1 holds out every one of the 17 view(s)")
    assert not any((tmp_path / "out").rglob("config.yml"))  # config.yml was written, then the empty run removed


def test_nan_loss_is_one_line_that_says_no_checkpoint_exists(tmp_path):
    from gnerf.scenes import make_blender_scene

    make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    proc = _ns_train(
        tmp_path,
        """
        from gnerf.nerf.model import GaussianNeRFModel
        real = GaussianNeRFModel.get_loss_dict
        GaussianNeRFModel.get_loss_dict = lambda self, o, b, m=None: {
            k: v * float("nan") for k, v in real(self, o, b, m).items()}
        cfg = tiny_config("gaussian-nerf-esgd", tmp / "scene", tmp / "out", iterations=3)
    """,
    )
    line = _one_error_line(proc)
    assert "became NaN or infinite at step 0" in line and "start again (no checkpoint had been saved)" in line


def test_a_bug_keeps_its_traceback(tmp_path):
    """Only InputError becomes one line: a ValueError raised inside the model's forward (a bug) reaches the ns-train
    user with its traceback."""
    from gnerf.scenes import make_blender_scene

    make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    proc = _ns_train(
        tmp_path,
        """
        from gnerf.nerf.model import GaussianNeRFModel
        def broken(self, ray_bundle):
            raise ValueError("a bug inside get_outputs")
        GaussianNeRFModel.get_outputs = broken
        cfg = tiny_config("gaussian-nerf-esgd", tmp / "scene", tmp / "out", iterations=2)
    """,
    )
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
    with pytest.raises(InputError, match=r"the run folder .*file/out.*file, not a folder; choose another --output-dir"):
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
    assert not any(needs_hessian_vector_products(o) for o in (Shampoo(params), KFAC(params), torch.optim.Adam(params)))
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
    with pytest.raises(
        NonFiniteLossError,
        match=r"resume from the last checkpoint \(step-000000005.ckpt\) "
        r"with --load-dir .*nerfstudio_models",
    ):
        train(cfg)


def test_a_checkpoint_that_cannot_be_written_is_an_input_error(tmp_path, monkeypatch):
    import errno

    from gnerf.nerf import trainer as trainer_module
    from gnerf.scenes import make_blender_scene

    def full(self, step, path):  # the disk fills up while the checkpoint is written
        raise OSError(errno.ENOSPC, "No space left on device")

    scene = make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)
    monkeypatch.setattr(trainer_module.CurvatureTrainer, "_write_checkpoint", full)
    with pytest.raises(
        InputError,
        match=r"cannot write the checkpoint .*step-000000001.ckpt: No space left on device; "
        r"free disk space or choose another --output-dir",
    ):
        train(tiny_config("gaussian-nerf-adam", scene, tmp_path / "out", iterations=2))


# -- run folders, scenes, options and checkpoints that ns-train refuses in one line ---------------------------------


def _blender(tmp_path: Path) -> Path:
    from gnerf.scenes import make_blender_scene

    return make_blender_scene(tmp_path / "scene", image_size=16, num_train=4, num_val=1, num_test=1)


HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\\n" % os.getpid(), 0)
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_second_run_on_the_same_run_folder_stops_at_once_naming_the_folder_and_process(tmp_path):
    cfg = tiny_config("gaussian-nerf-adam", _blender(tmp_path), tmp_path / "out", iterations=2)
    base = cfg.get_base_dir()
    base.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(base / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError) as raised:
            train(cfg)
        assert str(raised.value) == (
            f"{str(base)!r} is in use by another run (process {holder.pid}); wait for it to "
            "finish or give this run another --timestamp or --output-dir"
        )
        assert sorted(p.name for p in base.iterdir()) == [".lock"]  # the first run's config.yml is not replaced
    finally:
        holder.kill()
        holder.wait()
    train(cfg)
    assert (base / ".lock").read_text().strip() == str(os.getpid())
    assert [p.name for p in (base / "nerfstudio_models").iterdir()] == ["step-000000001.ckpt"]


def test_a_later_run_on_a_finished_run_folder_is_refused_unless_it_continues_that_run(tmp_path):
    cfg = tiny_config("gaussian-nerf-adam", _blender(tmp_path), tmp_path / "out", iterations=2)
    base = cfg.get_base_dir()
    train(cfg)
    models = base / "nerfstudio_models"
    kept = {p.name: p.read_bytes() for p in (base / "config.yml", models / "step-000000001.ckpt")}
    with pytest.raises(InputError) as raised:
        train(dataclasses.replace(cfg, max_num_iterations=3))
    assert str(raised.value) == (
        f"{base} already holds a run (its checkpoint step-000000001.ckpt), which this one would write over: "
        f"continue it with --load-dir {models}, or give this run another --timestamp or --output-dir"
    )
    assert {p.name: p.read_bytes() for p in (base / "config.yml", models / "step-000000001.ckpt")} == kept
    train(dataclasses.replace(cfg, load_dir=models))  # continuing that run is what the folder is for
    assert sorted(p.name for p in models.iterdir()) == ["step-000000003.ckpt"]  # nerfstudio keeps the latest only


class _FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, data) -> int:
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_full_disk_while_saving_a_checkpoint_leaves_no_temporary_file_nor_do_killed_saves(tmp_path, monkeypatch):
    import builtins

    from gnerf import files

    cfg = tiny_config("gaussian-nerf-adam", _blender(tmp_path), tmp_path / "out", iterations=2)
    base = cfg.get_base_dir()
    base.mkdir(parents=True)
    left = [".step-000000005.ckpt.tmp", ".step-000000007.ab12cd34.tmp.ckpt"]  # saves killed mid-write
    for name in left:
        (base / name).write_bytes(b"half a checkpoint")
    monkeypatch.setattr(
        files, "open", lambda path, mode="r", *a, **k: _FullDisk(builtins.open(path, mode, *a, **k)), raising=False
    )
    with pytest.raises(
        InputError,
        match=r"cannot write the checkpoint .*step-000000001.ckpt: No space left on device; "
        r"free disk space or choose another --output-dir",
    ):
        train(cfg)
    assert not [p.name for p in base.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c, "max_num_iterations", 0), "--max-num-iterations must be >= 1, got 0"),
        (lambda c: setattr(c.pipeline.model, "num_samples", 0), "--pipeline.model.num-samples must be >= 1, got 0"),
        (
            lambda c: setattr(c.pipeline.datamanager, "train_num_rays_per_batch", 0),
            "--pipeline.datamanager.train-num-rays-per-batch must be >= 1, got 0",
        ),
    ],
)
def test_counts_below_one_are_named_before_a_folder_is_made(tmp_path, change, message):
    cfg = tiny_config("gaussian-nerf-esgd", tmp_path / "scene", tmp_path / "out", iterations=2)
    change(cfg)
    with pytest.raises(InputError) as raised:
        cfg.save_config()
    assert str(raised.value) == message and not (tmp_path / "out").exists()


def test_malformed_blender_scenes_are_named_before_training(tmp_path):
    import json
    import shutil

    scene = _blender(tmp_path)

    def broken(name: str, edit) -> Path:
        copy = tmp_path / name
        shutil.copytree(scene, copy)
        edit(copy)
        return copy

    def no_frames(folder: Path) -> None:
        meta = json.loads((folder / "transforms_train.json").read_text())
        (folder / "transforms_train.json").write_text(json.dumps({**meta, "frames": []}))

    cases = [
        (broken("empty", no_frames), r"transforms_train.json lists no frames"),
        (
            broken("notest", lambda f: (f / "transforms_test.json").unlink()),
            r"the Blender scene .*notest has no transforms_test.json, whose views it needs for ns-eval to evaluate on",
        ),
        (
            broken("syntax", lambda f: (f / "transforms_val.json").write_text('{"frames": [,]}')),
            r"syntax/transforms_val.json is not valid JSON: Expecting value at line 1, column 13; fix the file",
        ),
    ]
    for folder, message in cases:
        out = tmp_path / f"out-{folder.name}"
        with pytest.raises(InputError, match=message):
            train(tiny_config("gaussian-nerf-adam", folder, out, iterations=2))
        assert not any(out.rglob("config.yml")) and not any(out.rglob(".lock"))


def test_a_scene_without_a_val_split_trains_when_the_trainer_evaluates_on_test(tmp_path):
    """``ns-train`` evaluates on val, so it refuses a scene without one; the benchmarks set up their trainers on
    the test split (the lego that benchmarks/gpu/prepare.sh carries to a GPU has train and test only)."""
    from benchmarks.recipes import setup_trainer

    scene = _blender(tmp_path)
    (scene / "transforms_val.json").unlink()
    with pytest.raises(InputError, match=r"has no transforms_val.json, whose views it needs to evaluate during"):
        train(tiny_config("gaussian-nerf-adam", scene, tmp_path / "val", iterations=2))
    trainer = setup_trainer(tiny_config("gaussian-nerf-adam", scene, tmp_path / "test", iterations=2), "test")
    assert len(trainer.pipeline.datamanager.eval_dataset) == 1


class _RunsCode:
    """Pickles as a call of ``open(marker, "w")``: loading it with plain pickle creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_dir_without_a_usable_checkpoint_is_named(tmp_path):
    scene = _blender(tmp_path)
    trained = train(tiny_config("gaussian-nerf-adam", scene, tmp_path / "first", iterations=2))
    saved = trained.checkpoint_dir / "step-000000001.ckpt"
    state = torch.load(saved, weights_only=True)

    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "step-000000003.ckpt").write_text("not a checkpoint")
    pickled, marker = tmp_path / "pickled", tmp_path / "marker"
    pickled.mkdir()
    torch.save({**state, "extra": _RunsCode(marker)}, pickled / "step-000000001.ckpt")
    cases = [
        (
            empty,
            rf"--load-dir {empty} holds no checkpoint \(step-NNNNNNNNN.ckpt\); point it at the nerfstudio_models "
            r"folder of an earlier run",
        ),
        (garbage, r"the checkpoint .*step-000000003.ckpt is unreadable \(truncated, or not a torch checkpoint\)"),
        (
            pickled,
            r"the checkpoint .*step-000000001.ckpt holds a pickled Python object \(io.open\) that could run "
            r"code when loaded",
        ),
    ]
    for i, (folder, message) in enumerate(cases):
        cfg = tiny_config("gaussian-nerf-adam", scene, tmp_path / f"out{i}", iterations=2)
        cfg.load_dir = folder
        with pytest.raises(InputError, match=message):
            train(cfg)
    assert not marker.exists()

    wider = tiny_config("gaussian-nerf-adam", scene, tmp_path / "wider", iterations=2)
    wider.pipeline.model.hidden_dim = wider.pipeline.model.feature_dim = 48  # tensors of other shapes
    wider.load_dir = trained.checkpoint_dir
    with pytest.raises(
        InputError,
        match=r"the checkpoint .*step-000000001.ckpt does not fit this model \(size "
        r"mismatch for .*\): load it with the options of the run that wrote it",
    ):
        train(wider)


def test_a_run_config_is_read_without_running_code_from_it(tmp_path):
    import yaml

    from gnerf.nerf import checks
    from gnerf.nerf.run_config import load_run_config

    cfg = tiny_config("gaussian-nerf-esgd", tmp_path / "scene", tmp_path / "out", iterations=2)
    cfg.save_config()
    checks.release_run_folder(cfg.get_base_dir())
    config_yml = cfg.get_base_dir() / "config.yml"
    text = config_yml.read_text()
    assert load_run_config(config_yml) == yaml.load(text, Loader=yaml.Loader)

    marker = tmp_path / "marker"
    attacks = {
        "apply": f"!!python/object/apply:os.system [touch {marker}]",
        "name": "!!python/name:os.system",
        "gnerf-call": f"!!python/object/apply:gnerf.files.atomic_write_bytes [{marker}, abc]",
    }
    refusals = {
        "apply": r"!!python/object/apply:os.system names something outside nerfstudio and gnerf \(line \d+\)",
        "name": r"!!python/name:os.system names something outside nerfstudio and gnerf",
        "gnerf-call": r"!!python/object/apply:gnerf.files.atomic_write_bytes is not a class defined in nerfstudio",
    }
    for name, tag in attacks.items():
        evil = tmp_path / f"{name}.yml"
        evil.write_text(text.replace("method_name: gaussian-nerf-esgd", f"method_name: {tag}"))
        with pytest.raises(InputError, match=rf"{name}.yml is not safe to load: {refusals[name]}.*; it could run code"):
            load_run_config(evil)
    assert not marker.exists()


def test_known_upstream_deprecation_warnings_are_shown_once_while_training(tmp_path):
    import warnings

    scene = _blender(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        train(tiny_config("gaussian-nerf-esgd", scene, tmp_path / "out", iterations=6))
    texts = [str(w.message) for w in caught]
    assert len(texts) == len(set(texts)), sorted(texts)
    # outside gnerf's entry points nothing is filtered
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            warnings.warn(
                "Using a non-tuple sequence for multidimensional indexing is deprecated", UserWarning, stacklevel=1
            )
    assert len(caught) == 2


def test_the_demo_silences_the_known_warnings_in_the_commands_it_runs(tmp_path):
    from gnerf.quiet import KNOWN_UPSTREAM, child_warning_filters

    code = "import warnings\n" + "".join(
        f"warnings.warn({start!r} + ' more', {category.__name__})\n" for category, start in KNOWN_UPSTREAM
    )
    env = {**os.environ, "PYTHONWARNINGS": child_warning_filters()}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""


def test_ns_eval_on_a_run_without_a_usable_checkpoint_folder_is_one_line(tmp_path, capsys):
    """nerfstudio's eval_setup (ns-eval, ns-render, ...) takes the largest step it parses from every name in the run's
    checkpoint folder: an empty folder was an IndexError, any other file a ValueError."""
    from nerfstudio.utils.eval_utils import eval_setup

    from gnerf.nerf import checks

    cfg = tiny_config("gaussian-nerf-esgd", _blender(tmp_path), tmp_path / "out", iterations=2)
    cfg.save_config()
    checks.release_run_folder(cfg.get_base_dir())
    base, models = cfg.get_base_dir(), cfg.get_checkpoint_dir()
    models.mkdir()
    cases = [
        (
            None,
            f"error: the run {base} saved no checkpoint ({models} is empty: the run stopped before its first "
            "save); train it again, or load the config.yml of a run that saved a checkpoint",
        ),
        (
            "notes.txt",
            f"error: {models} holds 'notes.txt', which is not a checkpoint (step-NNNNNNNNN.ckpt); "
            "nerfstudio reads every name in that folder as a step: move the file out",
        ),
    ]
    for stray, message in cases:
        if stray is not None:
            (models / stray).write_text("not a checkpoint")
        with pytest.raises(SystemExit) as exited:
            eval_setup(base / "config.yml")
        assert exited.value.code == 1
        assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")] == [message]


def test_an_empty_camera_path_is_refused_before_ns_render_and_the_demo_refuses_zero_interpolation_steps(
    tmp_path, monkeypatch
):
    import json

    from gnerf import demo
    from gnerf.nerf.run_config import check_camera_path, main

    camera = {"camera_to_world": [float(i == j) for i in range(4) for j in range(4)], "fov": 50.0}
    path = {"render_height": 16, "render_width": 16, "seconds": 1.0, "camera_path": [camera, camera]}
    good, empty = tmp_path / "good.json", tmp_path / "empty.json"
    good.write_text(json.dumps(path))
    empty.write_text(json.dumps({**path, "camera_path": []}))
    assert check_camera_path(good) == 2
    with pytest.raises(InputError, match=r"the camera path .*empty.json has no cameras \(its camera_path is empty\)"):
        check_camera_path(empty)
    with pytest.raises(SystemExit):
        main([str(good), str(empty)])

    def no_command(cmd, env=None):
        raise AssertionError(f"the demo ran {cmd[0]}")

    monkeypatch.setattr(demo, "_run", no_command)
    cfg = demo.DemoConfig(scene=tmp_path / "scene", output_dir=tmp_path / "out", interpolation_steps=0)
    with pytest.raises(InputError, match=r"^--interpolation-steps must be >= 1, got 0$"):
        demo.run_demo(cfg)
    assert not (tmp_path / "scene").exists() and not (tmp_path / "out").exists()


def test_ns_train_refuses_an_ema_of_the_weights_before_a_folder_is_made(tmp_path):
    cfg = tiny_config("gaussian-nerf-esgd", tmp_path / "scene", tmp_path / "out", iterations=2)
    group = next(iter(cfg.optimizers))
    cfg.optimizers[group]["optimizer"].ema_decay = 0.99
    with pytest.raises(InputError) as raised:
        cfg.save_config()
    assert str(raised.value).startswith(
        f"--optimizers.{group}.optimizer.ema-decay: ns-train does not evaluate an EMA of the weights"
    )
    assert not (tmp_path / "out").exists()
