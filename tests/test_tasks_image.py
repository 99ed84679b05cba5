import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gnerf.metrics import psnr
from gnerf.tasks import ImageFitConfig, OptimConfig, fit_image
from gnerf.tasks.build import build_field
from gnerf.tasks.cli import image_main
from gnerf.tasks.config import FieldConfig

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
    """--optim.adam-epochs reaches the variant as steps; after the switch it fits better than Adam alone."""
    runs = {}
    for name in ("adam", "esgd-adam-start"):
        runs[name] = tmp_path / name
        image_main(["--image", str(require(KODIM01)), "--size", "32", "32", "--epochs", "12", "--batch-size", "128",
                    "--field.hidden-dim", "64", "--field.num-layers", "3", "--threads", "1", "--no-progress",
                    "--output-dir", str(runs[name]), "--optim.name", name,
                    *(["--optim.adam-epochs", "3", "--optim.precondition-warmup-steps", "4"] if name != "adam" else [])])
    state = torch.load(runs["esgd-adam-start"] / "checkpoint.pt", weights_only=True)["optimizer"]["esgd"]
    assert state["adam_steps"] == 24 and state["num_steps"] == 96  # 3 epochs of 32 x 32 / 128 = 8 steps
    adam, variant = (check_run_folder(runs[n], 12, "psnr") for n in ("adam", "esgd-adam-start"))
    assert [r["psnr"] for r in variant[:3]] == pytest.approx([r["psnr"] for r in adam[:3]], abs=1e-3)  # Adam's
    assert variant[-1]["psnr"] > adam[-1]["psnr"] + 5.0  # measured 20.8 vs 10.8 dB


def test_the_adam_phase_is_counted_in_epochs_unless_given_in_steps():
    from gnerf.optim.registry import get_optimizer_spec
    from gnerf.tasks.build import ADAM_EPOCHS, build_run_optimizer

    spec, model = get_optimizer_spec("esgd-adam-start"), torch.nn.Linear(2, 3)
    steps = [build_run_optimizer(spec, ImageFitConfig(image=Path("x.png"), optim=opt), model, 128).adam_steps
             for opt in (OptimConfig(name=spec.name), OptimConfig(name=spec.name, adam_epochs=2.5),
                         OptimConfig(name=spec.name, adam_steps=7))]
    assert steps == [round(ADAM_EPOCHS * 128), 320, 7]
    with pytest.raises(ValueError, match="--optim.adam-steps and --optim.adam-epochs"):
        build_run_optimizer(spec, ImageFitConfig(image=Path("x.png"), optim=OptimConfig(
            name=spec.name, adam_steps=7, adam_epochs=1.0)), model, 128)
    with pytest.raises(ValueError, match="does not take the option"):  # other optimizers have no Adam phase
        build_run_optimizer(get_optimizer_spec("esgd"), ImageFitConfig(image=Path("x.png"), optim=OptimConfig(
            name="esgd", adam_epochs=1.0)), model, 128)


def test_forward_over_reverse_curvature_follows_the_double_backward_trajectory(tmp_path):
    results = {}
    for method in ("double-backward", "forward-over-reverse"):
        cfg = _cfg(tmp_path / method, epochs=2, size=(16, 16), batch_size=64,
                   optim=OptimConfig(name="esgd-max", precondition_warmup_steps=2, precondition_frequency=3, hvp_method=method))
        results[method] = fit_image(cfg).history
    for a, b in zip(results["double-backward"], results["forward-over-reverse"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-3)
    with pytest.raises(ValueError, match="--optim.hvp-method applies to"):
        fit_image(_cfg(tmp_path / "adam", optim=OptimConfig(name="adam", hvp_method="forward-over-reverse")))


def test_adam_loss_falls_with_the_relu_pe_learning_rate(tmp_path):
    cfg = _cfg(tmp_path / "adam", epochs=3, optim=OptimConfig(name="adam"),
               field=FieldConfig(activation="relu", hidden_dim=64, num_layers=3))
    result = fit_image(cfg)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["psnr"] > result.history[0]["psnr"]


def test_resume_continues_the_same_trajectory(tmp_path):
    # curvature steps every 3rd step after 4 warm-up steps, so the resumed epochs use the restored RNG
    optim = OptimConfig(name="esgd", precondition_warmup_steps=4, precondition_frequency=3)
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
    with pytest.raises(FileExistsError, match="--resume"):
        fit_image(_cfg(tmp_path / "r", epochs=1))
    with pytest.raises(ValueError, match=r"batch_size: 128 -> 64"):
        fit_image(_cfg(tmp_path / "r", epochs=2, resume=True, batch_size=64))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit_image(_cfg(tmp_path / "empty", epochs=2, resume=True))


def test_missing_and_unreadable_images_are_named(tmp_path):
    check_bad_inputs_are_named(tmp_path, fit_image, _cfg, "image", "nope.png",
                               [("bad.png", "not an image", "cannot read image .*bad.png")])


def test_unknown_optimizer_and_activation_are_named(tmp_path):
    # names are checked before the input is read
    with pytest.raises(ValueError, match=r"--optim.name 'sgdx'.*adam, esgd, esgd-max"):
        fit_image(_cfg(tmp_path / "r", image=tmp_path / "missing.png", optim=OptimConfig(name="sgdx")))
    with pytest.raises(ValueError, match=r"unknown activation 'tanh' \(--field.activation\)"):
        fit_image(_cfg(tmp_path / "r", field=FieldConfig(activation="tanh")))


def test_nan_loss_stops_the_run_with_a_message(tmp_path):
    with pytest.raises(FloatingPointError, match=r"training loss became nan.*--optim.lr"):
        fit_image(_cfg(tmp_path / "r", optim=OptimConfig(name="adam", lr=math.inf), log_every=2))


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
    assert stream_seeds(0) == (shuffle, probes) and len({0, shuffle, probes}) == 3 and stream_seeds(1) != (shuffle, probes)
    torch.manual_seed(0)
    init_words = torch.randint(0, 2, (4096,))
    for seed in (shuffle, probes):
        assert not torch.equal(torch.randint(0, 2, (4096,), generator=torch.Generator().manual_seed(seed)), init_words)
