"""experiments/variants.py: optimizer variant specs, their canonical form, folder name and command line."""

from pathlib import Path

import pytest
import tyro

from experiments.compare import CompareConfig, Run, resolve, run_args
from experiments.variants import canonical, parse_variant
from gnerf.tasks.image import ImageFitConfig


@pytest.mark.parametrize(
    "spec, canon, args",
    [
        ("muon", "muon", ["optim:muon"]),
        ("Muon:lr=6e-4", "muon:lr=0.0006", ["optim:muon", "--optim.lr", "0.0006"]),
        (
            "adam:lr=3e-4:schedule=cosine",
            "adam:lr=0.0003:schedule=cosine",
            ["optim:adam", "--optim.lr", "0.0003", "schedule:cosine"],
        ),
        (
            "adam:schedule=cosine:lr-final=1e-6:lr=3e-4",
            "adam:lr=0.0003:schedule=cosine:lr_final=1e-06",
            ["optim:adam", "--optim.lr", "0.0003", "schedule:cosine", "--schedule.lr-final", "1e-06"],
        ),
        # schedule options alone change the registered schedule (muon's cosine)
        (
            "muon:lr_final=1e-6",
            "muon:schedule=cosine:lr_final=1e-06",
            ["optim:muon", "schedule:cosine", "--schedule.lr-final", "1e-06"],
        ),
        (
            "adam:betas=0.9,0.99:foreach=none",
            "adam:betas=0.9,0.99:foreach=none",
            ["optim:adam", "--optim.betas", "0.9", "0.99", "--optim.foreach", "None"],
        ),
        ("muon:nesterov=false", "muon:nesterov=false", ["optim:muon", "--optim.no-nesterov"]),
        # every optimizer takes an EMA of the weights for its evaluation
        ("psgd-kron:ema_decay=0.99", "psgd-kron:ema_decay=0.99", ["optim:psgd-kron", "--optim.ema-decay", "0.99"]),
        # a key both have is the optimizer's; schedule.KEY is the schedule's
        (
            "schedulefree-adamw:warmup_steps=5:schedule.warmup_steps=3",
            "schedulefree-adamw:warmup_steps=5:schedule=constant:schedule.warmup_steps=3",
            [
                "optim:schedulefree-adamw",
                "--optim.warmup-steps",
                "5",
                "schedule:constant",
                "--schedule.warmup-steps",
                "3",
            ],
        ),
    ],
)
def test_a_spec_has_one_canonical_form_a_folder_and_a_command_line_the_fitting_command_takes(spec, canon, args):
    v = parse_variant(spec)
    assert v.spec == canon and parse_variant(canon) == v and v.slug == canon.replace(":", "+")
    assert v.args() == args
    cfg = tyro.cli(ImageFitConfig, args=["--image", "x.png", *v.args()])
    assert cfg.optim == v.config()
    assert (cfg.schedule or cfg.optim.schedule) == v.schedule_config()


def test_equal_values_written_differently_are_one_variant():
    assert canonical("adam:lr=3e-4") == canonical("ADAM:lr=0.0003") == canonical("adam:lr=3.0e-04")
    assert parse_variant("esgd").plain and not parse_variant("esgd:lr=0.1").plain


@pytest.mark.parametrize(
    "spec, words",
    [
        ("lbfgs", "unknown optimizer 'lbfgs'; choose one of: adam"),
        ("adam:lr", "'lr' is not KEY=VALUE"),
        ("adam:lr=abc", "lr=abc needs a number"),
        ("adam:momentum=0.9", "neither adam nor its schedule constant has an option 'momentum'"),
        ("adam:schedule=step", "unknown schedule 'step'; choose one of: constant, cosine, exponential, linear"),
        ("adam:lr=-1", "invalid lr=-1.0"),
        ("adam:betas=0.9", "betas=0.9 needs 2 comma-separated values"),
        ("adam:lr=1:lr=2", "lr is given twice"),
        ("kfac:precondition_frequency=1.5", "needs a whole number"),
        ("adam:schedule=exponential:lr_final=0", "exponential decay needs positive learning rates"),
        ("adam:ema_decay=1", "invalid ema_decay=1.0: must be in [0, 1)"),
    ],
)
def test_a_bad_spec_is_one_line_that_names_it(spec, words):
    with pytest.raises(ValueError) as err:
        parse_variant(spec)
    message = str(err.value)
    assert message.startswith(f"optimizer spec {spec!r}: ") and words in message and "\n" not in message


def test_the_grid_runs_variants_in_folders_of_their_own(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    cfg = resolve(
        CompareConfig(
            inputs=(image,),
            activations=("gaussian",),
            output_dir=tmp_path,
            optimizers=("adam", "adam:lr=3e-4:schedule=cosine"),
        )
    )
    assert cfg.optimizers == ("adam", "adam:lr=0.0003:schedule=cosine")
    run = Run("image", image, "gaussian", cfg.optimizers[1], 0)
    assert run.folder(tmp_path) == tmp_path / "runs" / "a" / "gaussian" / "adam+lr=0.0003+schedule=cosine" / "seed0"
    assert Run("image", image, "gaussian", "adam", 0).folder(Path("o")) == Path("o/runs/a/gaussian/adam/seed0")
    args = run_args(cfg, run, resume=False)
    assert args[-4:] == ["optim:adam", "--optim.lr", "0.0003", "schedule:cosine"]  # subcommands last, optim first
    with pytest.raises(ValueError, match="given twice"):
        resolve(CompareConfig(inputs=(image,), optimizers=("adam:lr=3e-4", "adam:lr=0.0003"), output_dir=tmp_path))
    with pytest.raises(ValueError, match="optimizer spec 'adam:lr=x'"):
        resolve(CompareConfig(inputs=(image,), optimizers=("adam:lr=x",), output_dir=tmp_path))
