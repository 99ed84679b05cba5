"""experiments/schedule_sweep.py: each optimizer's schedules at its registered lr, in the lr sweep's records."""

import json

from experiments.records import RunRecord
from experiments.schedule_sweep import ScheduleSweepConfig, best_schedule, schedule_spec, schedule_sweep, specs_of
from experiments.sweep import spec


def test_each_optimizer_gets_every_schedule_at_its_registered_lr_and_keeps_its_warm_up():
    assert schedule_spec("muon", "cosine") == spec("muon", 1 / 3) == "muon:lr=6.67e-05"  # the lr sweep's run
    assert schedule_spec("muon", "exponential") == "muon:lr=6.67e-05:schedule=exponential:lr_final=6.67e-07"
    assert schedule_spec("esgd", "cosine") == "esgd:lr=0.15:schedule=cosine"
    assert (
        schedule_spec("psgd-kron-esgd", "constant") == "psgd-kron-esgd:lr=3.33e-05:schedule=constant:warmup_steps=100"
    )
    specs = specs_of(ScheduleSweepConfig(optimizers=("adam", "soap")))
    assert [(n, k) for n, k, _ in specs] == [
        ("adam", "constant"),
        ("adam", "cosine"),
        ("adam", "exponential"),
        ("adam", "linear"),
        ("soap", "cosine"),
        ("soap", "constant"),
        ("soap", "exponential"),
        ("soap", "linear"),
    ]
    assert schedule_spec("muon", "linear") == "muon:lr=6.67e-05:schedule=linear"


def test_the_best_schedule_needs_every_photo_and_a_tie_goes_to_the_registered_one():
    rows = [{"finals": {"a": 30.0, "b": 31.0}}, {"finals": {"a": 31.0, "b": 30.0}}, {"finals": {"a": 40.0}}]
    assert best_schedule(rows, ["a", "b"]) == (0, "leading")  # the third has not finished on b
    rows[2]["finals"]["b"] = "diverged"
    assert best_schedule(rows, ["a", "b"]) == (0, "best")


def test_the_table_reads_the_lr_sweeps_records(tmp_path):
    cfg = ScheduleSweepConfig(
        optimizers=("adam",),
        images=("a",),
        kodak=tmp_path / "kodak",
        epochs=2,
        record=tmp_path / "rec",
        report=tmp_path / "schedules.md",
        output_dir=tmp_path / "runs",
        plot_only=True,
    )
    for kind, psnr in (("constant", 30.0), ("cosine", 33.0)):
        rec = RunRecord(cfg.record, "a", "gaussian", schedule_spec("adam", kind).replace(":", "+"), 0)
        rows = [{"epoch": e, "iteration": e, "wall_time": 1.0, "loss": 0.1, "psnr": psnr - 2 + e} for e in (1, 2)]
        rec.write("".join(json.dumps(r) + "\n" for r in rows).encode(), b"{}", {"machine": "test"})
    text = schedule_sweep(cfg)
    assert (tmp_path / "schedules.md").read_text() == text
    lines = [line for line in text.splitlines() if line.startswith("| adam")]
    assert lines == [
        "| adam | 0.0001 | constant (registered) | 30.00 | 30.00 |  |",
        "| adam | 0.0001 | cosine | 33.00 | 33.00 | *leading* |",
        "| adam | 0.0001 | exponential | - | - |  |",
        "| adam | 0.0001 | linear | - | - |  |",
    ]
