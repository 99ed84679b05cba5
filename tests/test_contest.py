"""experiments/contest.py: time to quality, the best contender and the report, on synthetic records."""

import json

import numpy as np
import pytest

from experiments.contest import (
    CONTENDERS,
    ContestConfig,
    best_contender,
    compare_configs,
    contest,
    first_reaching,
    time_to_quality,
)
from experiments.records import RunRecord

#: PSNR after epochs 1-4 per optimizer and photo (10 iterations per epoch).
CURVES = {
    "adam": {"a": [10, 20, 25, 30], "b": [12, 18, 22, 26]},
    "esgd": {"a": [5, 10, 15, 20], "b": [10, 20, 26, 27]},
    "muon": {"a": [20, 30, 35, 40], "b": [15, 25, 30, 38]},
    "soap": {"a": [18, 28, 33, 36], "b": [14, 20, 28, 39]},
}


def _hist(values):
    return [
        {"epoch": e, "iteration": 10 * e, "wall_time": 2.0 * e, "loss": 0.1, "psnr": float(v)}
        for e, v in enumerate(values, 1)
    ]


def test_first_reaching_and_the_best_contender():
    assert first_reaching(_hist([10, 20, 30]), 20)["epoch"] == 2 and first_reaching(_hist([10, 20]), 20.5) is None
    finals = {"muon": {"a": 40.0, "b": 38.0}, "soap": {"a": 36.0, "b": 39.0}, "psgd-kron": {"a": 50.0, "b": None}}
    assert best_contender(finals, ["a", "b"], ["muon", "soap", "psgd-kron"]) == "muon"  # psgd-kron unfinished on b
    assert best_contender(finals, ["a", "b"], ["psgd-kron"]) is None
    assert set(CONTENDERS) == {"muon", "adam-cosine", "adam-linear", "soap", "psgd-kron", "schedulefree-adamw"}


def test_time_to_quality_finds_the_first_epoch_and_the_step_ratio_to_the_best_contender():
    hists = {o: {p: _hist(v) for p, v in runs.items()} for o, runs in CURVES.items()}
    adam_finals = {"a": 30.0, "b": 26.0}
    ttq = time_to_quality(hists, ["a", "b"], list(CURVES), adam_finals, "muon")
    assert {p: r["epoch"] for p, r in ttq["muon"]["reached"].items()} == {"a": 2, "b": 3}
    assert ttq["esgd"]["reached"]["a"] is None and ttq["esgd"]["reached"]["b"]["iteration"] == 30
    assert ttq["adam"]["ratio"] == pytest.approx((40 / 20 + 40 / 30) / 2) and ttq["adam"]["ratio_photos"] == 2
    assert ttq["esgd"]["ratio"] == pytest.approx(1.0) and ttq["esgd"]["ratio_photos"] == 1  # reached on b only
    muon_finals = {"a": 40.0, "b": 38.0}
    ttq = time_to_quality(hists, ["a", "b"], list(CURVES), muon_finals, "muon")
    assert ttq["adam"]["ratio"] is None and ttq["adam"]["reached"] == {"a": None, "b": None}
    assert ttq["soap"]["reached"]["a"] is None and ttq["soap"]["ratio"] == pytest.approx(1.0)
    assert ttq["muon"]["ratio"] == pytest.approx(1.0)


def test_the_report_is_built_from_the_records_alone(tmp_path):
    from gnerf.files import atomic_write_image

    for stem in ("a", "b", "c"):
        atomic_write_image(tmp_path / "kodak" / f"{stem}.png", np.zeros((4, 4, 3), dtype=np.uint8))
    cfg = ContestConfig(
        optimizers=tuple(CURVES),
        images=("a", "b"),
        more_optimizers=("adam", "muon"),
        more_images=("c",),
        kodak=tmp_path / "kodak",
        size=16,
        epochs=4,
        record=tmp_path / "rec",
        report=tmp_path / "contest.md",
        figure_dir=tmp_path / "figures",
        output_dir=tmp_path / "runs",
        plot_only=True,
    )
    assert [g.optimizers for g in compare_configs(cfg)] == [tuple(CURVES), ("adam", "muon")]
    for opt, runs in CURVES.items():
        for photo, values in runs.items():
            RunRecord(cfg.record, photo, "gaussian", opt, 0).write(
                "".join(json.dumps(r) + "\n" for r in _hist(values)).encode(),
                json.dumps({"threads": 1}).encode(),
                {"machine": "CPU test", "jobs_at_once": 2},
            )
    text = contest(cfg)
    assert (tmp_path / "contest.md").read_text() == text
    assert "| muon | 40.00 | 38.00 | 39.00 |" in text and "Best contender: **muon** (mean final PSNR 39.00 dB" in text
    assert "Machines the runs were recorded on: CPU test (8 runs)" in text and "torch threads per run: 1" in text
    adam_target = text.split("Target: (a)")[1].split("Target: (b)")[0]
    assert "| esgd | not reached | ep 3 / 30 it / 6 s | 1.00 (1 of 2) |" in adam_target
    assert "| adam | ep 4 / 40 it / 8 s | ep 4 / 40 it / 8 s | 1.67 (2 of 2) |" in adam_target
    best_target = text.split("Target: (b)")[1]
    assert "| adam | not reached | not reached | - |" in best_target
    assert (tmp_path / "figures" / "contest_psnr.png").stat().st_size > 0
    # the subset's section over three photos: every photo's finals, then the rest over the photos both finished
    more = text.split("## adam, muon on 3 photos (a-c)")[1]
    assert "| adam | 30.00 | 26.00 | - | 28.00 (2 of 3) |" in more
    assert "### On the 2 photos all of them have finished (a, b)" in more and "| adam | 30.00 | 26.00 | 28.00 |" in more
    assert "Best contender: **muon** (mean final PSNR 39.00 dB over 2 photos" in more
    assert (tmp_path / "figures" / "contest_psnr_3.png").stat().st_size > 0
    with pytest.raises(ValueError, match="--more-optimizers must be among --optimizers"):
        compare_configs(ContestConfig(optimizers=("adam",), more_optimizers=("muon",)))
