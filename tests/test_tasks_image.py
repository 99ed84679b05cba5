import dataclasses
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gnerf.errors import InputError, NonFiniteLossError
from gnerf.metrics import psnr
from gnerf.optim.configs import AdamConfig, ESGDAdamStartConfig, ESGDConfig
from gnerf.optim.schedules import CosineSchedule
from gnerf.tasks import ImageFitConfig, fit_image
from gnerf.tasks.build import build_field
from gnerf.tasks.cli import image_main
from gnerf.tasks.config import FieldConfig
from gnerf.tasks.run import RunFolderError

from helpers_tasks import check_bad_inputs_are_named, check_run_folder, small
from shared_data import KODIM01, require


def _cfg(out, **kw):
    base = dict(image=require(KODIM01), size=(32, 32), epochs=6, output_dir=out, batch_size=128)
    base.update(kw)
    return ImageFitConfig(**small(**base))


def test_esgd_fits_kodim01_and_writes_every_output(tmp_path):
    run = tmp_path / "run"
    result = fit_image(_cfg(run))
    rows = check_run_folder(run, 6, "psnr")
    assert [r["psnr"] for r in rows] == pytest.approx([h["psnr"] for h in result.history])
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert rows[-1]["psnr"] > 15.0 and rows[-1]["psnr"] > rows[0]["psnr"] + 3.0
    target = iio.imread(run / "target.png")
    recon = iio.imread(run / "reconstruction.png")
    assert target.shape == recon.shape == (32, 32, 3) and recon.dtype == np.uint8
    mse = np.mean((recon / 255.0 - target / 255.0) ** 2)
    assert psnr(mse) == pytest.approx(rows[-1]["psnr"], abs=0.5)  # 8-bit rounding only


def test_esgd_adam_start_switches_from_adam_on_the_command_line(tmp_path):
    """--optim.adam-steps reaches the variant; after the switch it fits better than Adam alone."""
    runs = {}
    for name in ("adam", "esgd-adam-start"):
        runs[name] = tmp_path / name
        image_main(
            [
                "--image",
                str(require(KODIM01)),
                "--size",
                "32",
                "32",
                "--epochs",
                "12",
                "--batch-size",
                "128",
                "--field.hidden-dim",
                "64",
                "--field.num-layers",
                "3",
                "--threads",
                "1",
                "--no-progress",
                "--output-dir",
                str(runs[name]),
                f"optim:{name}",
                *(["--optim.adam-steps", "24", "--optim.precondition-warmup-steps", "4"] if name != "adam" else []),
            ]
        )
    # 3 epochs of 32 x 32 / 128 = 8 steps are Adam's
    adam, variant = (check_run_folder(runs[n], 12, "psnr") for n in ("adam", "esgd-adam-start"))
    assert [r["psnr"] for r in variant[:3]] == pytest.approx([r["psnr"] for r in adam[:3]], abs=1e-3)  # Adam's
    assert variant[-1]["psnr"] > adam[-1]["psnr"] + 5.0  # measured 20.8 vs 10.8 dB


def test_the_adam_phase_is_25_epochs_unless_given_in_steps():
    from gnerf.tasks.build import ADAM_EPOCHS, build_run_optimizer

    model = torch.nn.Linear(2, 3)
    lrs = []
    for opt, steps in (
        (ESGDAdamStartConfig(lr=None), round(ADAM_EPOCHS * 128)),
        (ESGDAdamStartConfig(adam_steps=7), 7),
    ):
        built = build_run_optimizer(ImageFitConfig(image=Path("x.png"), optim=opt), model, 128)
        lrs.append(built.param_groups[0]["lr"])
        assert built.param_groups[0]["adam_steps"] == steps
    assert lrs == [0.1, 0.1]


def _interrupted_then_resumed(monkeypatch, cfg, stop_before: int):
    """``cfg`` stopped (as by Ctrl-C) before epoch ``stop_before`` is saved, then resumed: its history."""
    from gnerf.tasks import loop

    finish = loop._Training._finish_epoch

    def stop(self, epoch, loss):
        if epoch == stop_before:
            raise KeyboardInterrupt
        finish(self, epoch, loss)

    with monkeypatch.context() as m:
        m.setattr(loop._Training, "_finish_epoch", stop)
        with pytest.raises(KeyboardInterrupt):
            fit_image(cfg)
    return fit_image(dataclasses.replace(cfg, resume=True)).history


def test_a_schedule_scales_the_lr_every_step_and_resumes_exactly(tmp_path, monkeypatch):
    fit_image(_cfg(tmp_path / "cos", epochs=2, optim=AdamConfig(lr=1e-3), schedule=CosineSchedule(lr_final=1e-4)))
    saved = torch.load(tmp_path / "cos" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert saved["initial_lr"] == 1e-3 and saved["lr"] == pytest.approx(1e-4)  # the end of the cosine
    cfg = _cfg(tmp_path / "a", epochs=4, optim=AdamConfig(lr=1e-3), schedule=CosineSchedule())
    straight = fit_image(cfg).history
    resumed = _interrupted_then_resumed(monkeypatch, dataclasses.replace(cfg, output_dir=tmp_path / "b"), 3)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]


@pytest.mark.parametrize("name", ["muon", "adam-cosine", "adam-linear", "soap", "psgd-kron", "schedulefree-adamw"])
def test_each_contender_resumes_bit_exactly_with_its_schedule(tmp_path, monkeypatch, name):
    from gnerf.optim import OPTIMIZERS

    cfg = _cfg(tmp_path / "a", epochs=3, optim=OPTIMIZERS[name](lr=None))
    straight = fit_image(cfg).history
    resumed = _interrupted_then_resumed(monkeypatch, dataclasses.replace(cfg, output_dir=tmp_path / "b"), 2)
    assert [(r["loss"], r["psnr"]) for r in resumed] == [(r["loss"], r["psnr"]) for r in straight]


def test_schedule_free_is_evaluated_on_its_averaged_weights(tmp_path):
    from gnerf.optim.contenders import ScheduleFreeAdamWConfig

    result = fit_image(_cfg(tmp_path / "sf", epochs=2, optim=ScheduleFreeAdamWConfig()))
    opt_state = torch.load(tmp_path / "sf" / "checkpoint.pt", weights_only=True)["optimizer"]
    assert opt_state["param_groups"][0]["train_mode"] is True  # saved while training, so --resume continues
    # The checkpoint holds the training point y = (1 - beta1) z + beta1 x; the returned model must hold the averaged
    # weights x = (y - (1 - beta1) z) / beta1.
    beta1 = opt_state["param_groups"][0]["betas"][0]
    saved = torch.load(tmp_path / "sf" / "checkpoint.pt", weights_only=True)["model"]
    z = [opt_state["state"][i]["z"] for i in opt_state["param_groups"][0]["params"]]
    named = list(result.model.named_parameters())
    assert len(named) == len(z)
    for (name, returned), z_i in zip(named, z):
        assert not torch.equal(returned, saved[name])
        torch.testing.assert_close(returned, (saved[name] - (1 - beta1) * z_i) / beta1, rtol=1e-4, atol=1e-5)
    assert result.history[-1]["psnr"] > result.history[0]["psnr"]


def test_adam_loss_falls_with_the_relu_pe_learning_rate(tmp_path):
    cfg = _cfg(
        tmp_path / "adam",
        epochs=3,
        optim=AdamConfig(lr=None),
        field=FieldConfig(activation="relu", hidden_dim=64, num_layers=3),
    )
    result = fit_image(cfg)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["psnr"] > result.history[0]["psnr"]


def test_resume_continues_the_same_trajectory(tmp_path):
    # curvature steps every 3rd step after 4 warm-up steps, so the resumed epochs use the restored RNG
    optim = ESGDConfig(lr=None, precondition_warmup_steps=4, precondition_frequency=3)
    straight = fit_image(_cfg(tmp_path / "a", epochs=4, optim=optim)).history
    fit_image(_cfg(tmp_path / "b", epochs=2, optim=optim))
    resumed = fit_image(_cfg(tmp_path / "b", epochs=4, optim=optim, resume=True)).history
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed):
        assert a["iteration"] == b["iteration"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-9)
        assert a["psnr"] == pytest.approx(b["psnr"], rel=1e-6)
    check_run_folder(tmp_path / "b", 4, "psnr")


def test_resume_refuses_a_changed_configuration_and_a_run_folder_is_not_overwritten(tmp_path):
    fit_image(_cfg(tmp_path / "r", epochs=1))
    with pytest.raises(RunFolderError, match="--resume"):
        fit_image(_cfg(tmp_path / "r", epochs=1))
    with pytest.raises(ValueError, match=r"batch_size: 128 -> 64"):
        fit_image(_cfg(tmp_path / "r", epochs=2, resume=True, batch_size=64))
    with pytest.raises(InputError, match="no checkpoint"):
        fit_image(_cfg(tmp_path / "empty", epochs=2, resume=True))


def test_missing_and_unreadable_images_are_named(tmp_path):
    check_bad_inputs_are_named(
        tmp_path, fit_image, _cfg, "image", "nope.png", [("bad.png", "not an image", "cannot read image .*bad.png")]
    )


def test_unknown_optimizer_and_activation_are_named(tmp_path, capsys):
    # names are checked before the input is read
    with pytest.raises(SystemExit):
        image_main(["--image", str(tmp_path / "missing.png"), "optim:sgdx"])
    assert "optim:esgd" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown activation 'tanh' \(--field.activation\)"):
        fit_image(_cfg(tmp_path / "r", field=FieldConfig(activation="tanh")))


def test_nan_loss_stops_the_run_with_a_message(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"training loss became (nan|inf).*--optim.lr"):
        fit_image(_cfg(tmp_path / "r", optim=ESGDConfig(lr=1e6), log_every=2))
    with pytest.raises(ValueError, match=r"--optim.lr inf: must be a finite number"):
        fit_image(_cfg(tmp_path / "r2", optim=AdamConfig(lr=math.inf)))


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(SystemExit) as exit_info:
        image_main(["--image", str(missing), "--output-dir", str(tmp_path / "r"), "--no-progress"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.jpg" in err and "Traceback" not in err


def test_field_builder_uses_the_paper_defaults():
    relu = build_field(FieldConfig(activation="relu"), 2, 3, default_sigma=0.05)
    assert relu.encoding is not None and relu.encoding.num_frequencies == 8
    gauss = build_field(FieldConfig(), 2, 3, default_sigma=0.05)
    assert gauss.encoding is None and gauss.activations[0].sigma == 0.05 and len(gauss.layers) == 5
    assert gauss.layers[1].weight.shape == (256, 256)
    sine = build_field(FieldConfig(activation="sine", hidden_dim=16), 2, 3, default_sigma=0.05)
    assert sine.activations[0].omega == 30.0 and sine.layers[0].weight.abs().max() <= 1 / 2
    wav = build_field(FieldConfig(activation="wavelet", sigma=0.2), 2, 3, default_sigma=0.05)
    assert (wav.activations[0].omega0, wav.activations[0].s0) == (10.0, 10.0)
    assert torch.isfinite(wav(torch.zeros(4, 2))).all()


def test_initialisation_shuffling_and_probes_draw_independent_streams():
    """The shuffle and probe generators are seeded apart from the initialisation's ``torch.manual_seed(seed)``."""
    from gnerf.tasks.build import stream_seeds

    shuffle, probes = stream_seeds(0)
    assert (
        stream_seeds(0) == (shuffle, probes) and len({0, shuffle, probes}) == 3 and stream_seeds(1) != (shuffle, probes)
    )
    torch.manual_seed(0)
    init_words = torch.randint(0, 2, (4096,))
    for seed in (shuffle, probes):
        assert not torch.equal(torch.randint(0, 2, (4096,), generator=torch.Generator().manual_seed(seed)), init_words)


def test_an_ema_of_the_weights_is_evaluated_written_out_and_resumed_exactly(tmp_path, monkeypatch):
    decay = 0.9
    cfg = _cfg(tmp_path / "a", epochs=3, optim=AdamConfig(lr=1e-3, ema_decay=decay))
    steps = []  # the training weights after every step, recomputed into the average below
    update = torch.optim.swa_utils.AveragedModel.update_parameters

    def record(self, model):
        steps.append([p.detach().clone() for p in model.parameters()])
        update(self, model)

    with monkeypatch.context() as m:
        m.setattr(torch.optim.swa_utils.AveragedModel, "update_parameters", record)
        result = fit_image(cfg)
    assert len(steps) == 3 * 8  # 32 x 32 / 128 = 8 steps an epoch
    expected = steps[0]
    for weights in steps[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    for returned, want in zip(result.model.parameters(), expected):
        torch.testing.assert_close(returned, want)
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    trained = [ckpt["model"][name] for name, _ in result.model.named_parameters()]
    assert not torch.equal(trained[0], expected[0])  # the checkpoint's model is the training weights
    assert int(ckpt["average"]["n_averaged"]) == 24
    # what is evaluated each epoch, and written out, is the average
    recon = iio.imread(tmp_path / "a" / "reconstruction.png") / 255.0
    full = iio.imread(tmp_path / "a" / "target.png") / 255.0
    assert psnr(np.mean((recon - full) ** 2)) == pytest.approx(result.history[-1]["psnr"], abs=0.5)

    straight = fit_image(dataclasses.replace(cfg, output_dir=tmp_path / "s")).history
    resumed = _interrupted_then_resumed(monkeypatch, dataclasses.replace(cfg, output_dir=tmp_path / "b"), 2)
    assert [(r["loss"], r["psnr"]) for r in resumed] == [(r["loss"], r["psnr"]) for r in straight]
    plain = fit_image(_cfg(tmp_path / "p", epochs=3, optim=AdamConfig(lr=1e-3))).history
    assert [r["loss"] for r in plain] == [r["loss"] for r in straight]  # the average never changes the training
    assert plain[-1]["psnr"] != straight[-1]["psnr"]


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
def test_a_bad_ema_decay_is_one_line(tmp_path, capsys, value):
    with pytest.raises(SystemExit):
        image_main(
            ["--image", str(require(KODIM01)), "--output-dir", str(tmp_path / "r"), "optim:adam"]
            + ["--optim.ema-decay", str(value)]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("ema_decay" in err[0] or "ema-decay" in err[0]) and "Traceback" not in err[0]
    assert not (tmp_path / "r").exists()


def test_schedule_free_refuses_a_second_average(tmp_path, capsys):
    with pytest.raises(SystemExit):
        image_main(
            ["--image", str(require(KODIM01)), "--output-dir", str(tmp_path / "sf"), "optim:schedulefree-adamw"]
            + ["--optim.ema-decay", "0.99"]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "error: optim:schedulefree-adamw: schedulefree-adamw evaluates its own averaged weights: leave ema_decay unset"
    )
    assert not (tmp_path / "sf").exists()
