"""experiments/sweep.py: the sweep as a grid with records, its winner rule and the import of the old layout."""

import dataclasses
import json
from typing import Optional

import numpy as np
import pytest

from experiments.records import RunRecord
from experiments.sweep import (
    CENTRES,
    SweepConfig,
    best_runs,
    centre_lr,
    choose_winner,
    compare_config,
    finals_of,
    import_old_sweep,
    multiples_of,
    spec,
    sweep,
    table,
)


def test_the_sweep_is_a_grid_of_lr_variants_with_the_registered_schedules(tmp_path):
    assert spec("muon", 1.0) == "muon:lr=0.0002" and spec("muon", 1 / 3) == "muon:lr=6.67e-05"
    assert spec("esgd", 3.0) == "esgd:lr=0.45"
    cfg = compare_config(SweepConfig(record=tmp_path / "rec"))
    assert (
        cfg.optimizers[:2] == ("muon:lr=0.0002", "adam-cosine:lr=0.0003") and len(cfg.optimizers) == 33
    )  # 11 optimizers x 3 lrs
    assert (cfg.size, cfg.epochs, cfg.batch_size, cfg.seeds, cfg.activations) == (
        (128, 128),
        100,
        512,
        (0,),
        ("gaussian",),
    )
    assert [p.stem for p in cfg.inputs] == ["kodim01", "kodim02", "kodim03", "kodim04"]
    with pytest.raises(ValueError, match="unknown lbfgs"):
        compare_config(SweepConfig(optimizers=("lbfgs",)))


def _muon_registered_at(lr):
    """``muon``'s config with another registered lr."""
    from gnerf.optim.contenders import MuonConfig

    return dataclasses.make_dataclass(
        "MuonConfig", [("lr", Optional[float], dataclasses.field(default=lr))], bases=(MuonConfig,)
    )


def test_a_registered_winner_does_not_move_the_grid_and_the_table_says_it_is_registered(tmp_path, monkeypatch):
    from gnerf.optim import OPTIMIZERS

    cfg = SweepConfig(optimizers=("muon",), multiples=(1.0, 1 / 3), extend=0, images=("kodim01",), record=tmp_path)
    before = spec("muon", 1 / 3)
    # a new registered lr: the sweep stays centred where it began
    monkeypatch.setitem(OPTIMIZERS, "muon", _muon_registered_at(1e-3))
    assert spec("muon", 1 / 3) == before and centre_lr("muon") == CENTRES["muon"]
    finals = {"muon:lr=0.0002": {"kodim01": 70.0}, "muon:lr=6.67e-05": {"kodim01": 80.0}}
    assert "| muon | 6.67e-05 | 0.333 | 80.00 | **80.00** | **winner**, registered: 0.001 |" in table(
        cfg, finals=finals
    )
    monkeypatch.setitem(OPTIMIZERS, "muon", _muon_registered_at(6.67e-5))
    assert "| **winner**, registered |" in table(cfg, finals=finals)
    monkeypatch.delitem(CENTRES, "muon")
    assert centre_lr("muon") == 6.67e-5  # an optimizer without a centre: its registered lr


def _entry(lr, multiple, **finals):
    return {"lr": lr, "multiple": multiple, "finals": finals}


def test_the_winner_is_the_best_complete_lr_and_ties_go_to_the_centre_lr():
    images = ("a", "b")
    entries = [
        _entry(1.0, 1 / 3, a=30.0, b=31.0),
        _entry(3.0, 1.0, a=35.0, b=35.0),
        _entry(9.0, 3.0, a=40.0, b="diverged"),
    ]
    assert choose_winner(entries, images) == (1, "winner")  # the higher mean diverged on b: it cannot win
    tie = [_entry(1.0, 1 / 3, a=35.004, b=35.0), _entry(3.0, 1.0, a=35.0, b=35.0), _entry(9.0, 3.0, a=35.0, b=35.001)]
    assert choose_winner(tie, images) == (1, "winner")  # equal to 0.01 dB: the centre lr
    no_reg = [_entry(1.0, 1 / 3, a=35.0, b=35.0), _entry(9.0, 3.0, a=35.0, b=35.0)]
    assert choose_winner(no_reg, images) == (0, "winner")  # as near to it: the smaller lr
    unfinished = [_entry(1.0, 1 / 3, a=30.0, b=31.0), _entry(3.0, 1.0, a=35.0, b=12)]  # b: 12 epochs done
    assert choose_winner(unfinished, images) == (0, "leading")
    assert choose_winner([_entry(1.0, 1.0, a=30.0), _entry(3.0, 3.0, a="failed", b="diverged")], images) == (None, "")


def _kodak(tmp_path, stems):
    from gnerf.files import atomic_write_image

    kodak = tmp_path / "kodak"
    for stem in stems:
        atomic_write_image(kodak / f"{stem}.png", np.zeros((4, 4, 3), dtype=np.uint8))
    return kodak


def _record(cfg, name, multiple, image, psnr_final, epochs):
    rec = RunRecord(cfg.record, image, "gaussian", spec(name, multiple).replace(":", "+"), 0)
    rows = [
        {"epoch": e, "iteration": 32 * e, "wall_time": float(e), "loss": 0.1, "psnr": psnr_final - epochs + e}
        for e in range(1, epochs + 1)
    ]
    rec.write("".join(json.dumps(r) + "\n" for r in rows).encode(), b"{}", {"machine": "test"})
    return rec


def test_the_table_marks_each_optimizers_winner_from_the_records_alone(tmp_path):
    kodak = tmp_path / "kodak"  # no photos: the table needs only the records
    cfg = SweepConfig(
        optimizers=("adam", "soap"),
        multiples=(1.0, 3.0),
        images=("a", "b"),
        kodak=kodak,
        epochs=5,
        extend=0,
        record=tmp_path / "rec",
        report=tmp_path / "sweep.md",
        output_dir=tmp_path / "runs",
        figure=tmp_path / "sweep.png",
        plot_only=True,
    )
    for image, (x1, x3) in {"a": (30.0, 33.0), "b": (31.0, 32.0)}.items():
        _record(cfg, "adam", 1.0, image, x1, 5)
        _record(cfg, "adam", 3.0, image, x3, 5)
    _record(cfg, "soap", 1.0, "a", 40.0, 5)
    _record(cfg, "soap", 1.0, "b", 41.0, 5)
    _record(cfg, "soap", 3.0, "a", 45.0, 3)  # under way
    text = sweep(cfg)
    assert (tmp_path / "sweep.md").read_text() == text
    assert (tmp_path / "sweep.png").is_file()  # adam's winner and soap's leading lr have finished on a and b
    lines = {
        tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines() if line.startswith("| ")
    }
    assert lines[("adam", "0.0003")].endswith(
        "| 33.00 | 32.00 | **32.50** | **winner**, registered: 0.0001 |"
    )  # adam stays the paper's
    assert lines[("adam", "0.0001")].endswith("| 30.00 | 31.00 | 30.50 |  |")
    assert lines[("soap", "0.0003")].endswith("| 40.00 | 41.00 | 40.50 | *leading* |")
    assert lines[("soap", "0.0009")].endswith("| (3/5 ep) | - | - |  |")
    assert "6 of 8 runs recorded finished or diverged" in text
    assert "Winners still on the edge of the lrs tried (the limit of 0 extension(s) per side reached): adam." in text


def test_a_winner_on_an_edge_extends_the_sweep_by_factors_of_3_up_to_the_limit(tmp_path):
    cfg = SweepConfig(
        optimizers=("adam",),
        multiples=(1.0, 3.0),
        images=("a", "b"),
        kodak=tmp_path / "kodak",
        epochs=5,
        extend=2,
        record=tmp_path / "rec",
        report=None,
        output_dir=tmp_path / "runs",
        plot_only=True,
    )
    for image in ("a", "b"):
        _record(cfg, "adam", 1.0, image, 30.0, 5)
        _record(cfg, "adam", 3.0, image, 33.0, 5)  # the largest multiple wins: 9 is added
    assert multiples_of(cfg, "adam", finals_of(cfg)) == [1.0, 3.0, 9.0]
    assert "| adam | 0.0009 | 9 | - | - | - |  |" in table(cfg)
    for image in ("a", "b"):
        _record(cfg, "adam", 9.0, image, 34.0, 5)  # wins again: 27, the second and last step on this side
    assert multiples_of(cfg, "adam", finals_of(cfg)) == [1.0, 3.0, 9.0, 27.0]
    for image in ("a", "b"):
        _record(cfg, "adam", 27.0, image, 35.0, 5)
    assert multiples_of(cfg, "adam", finals_of(cfg)) == [1.0, 3.0, 9.0, 27.0]
    assert "limit of 2 extension(s) per side reached): adam." in table(cfg)
    for image in ("a", "b"):
        _record(cfg, "adam", 27.0, image, 20.0, 5)  # rerecorded worse: 9 wins inside, nothing more to add
    assert multiples_of(cfg, "adam", finals_of(cfg)) == [1.0, 3.0, 9.0, 27.0]
    assert "still on the edge" not in table(cfg)
    runs, photos = best_runs(cfg)
    assert list(runs) == ["adam lr 0.0009"] and photos == ["a", "b"]
    assert [r["psnr"] for r in runs["adam lr 0.0009"]["a"][1]][-1] == 34.0


def test_the_old_sweep_layout_is_imported_into_the_record(tmp_path):
    kodak = _kodak(tmp_path, ("a", "b"))
    cfg = SweepConfig(
        optimizers=("muon",),
        multiples=(1.0, 1 / 3),
        images=("a", "b"),
        kodak=kodak,
        epochs=3,
        size=16,
        record=tmp_path / "rec",
        report=None,
        output_dir=tmp_path / "runs",
    )
    config = {
        "size": [16, 16],
        "batch_size": 512,
        "seed": 0,
        "threads": 1,
        "field": {"activation": "gaussian", "hidden_dim": 256, "num_layers": 5},
        "optim": {"name": "muon", "lr": 2e-4 / 3},
        "schedule": {"name": "cosine"},
    }
    for folder, epochs in (("muon-lr6.67e-05/a", 3), ("muon-lr6.67e-05/b", 2)):
        path = tmp_path / "old" / folder
        path.mkdir(parents=True)
        path.joinpath("metrics.jsonl").write_text(
            "".join(
                json.dumps({"epoch": e, "iteration": e, "wall_time": e, "loss": 0.1, "psnr": 20.0 + e}) + "\n"
                for e in range(1, epochs + 1)
            )
        )
        path.joinpath("config.json").write_text(json.dumps(config))
    logs = []
    assert import_old_sweep(cfg, tmp_path / "old", logs.append) == {"recorded": 1, "unfinished": 1}
    assert (tmp_path / "rec" / "a" / "gaussian" / "muon+lr=6.67e-05" / "seed0.jsonl").is_file()
    text = table(cfg)
    assert "| muon | 6.67e-05 | 0.333 | 23.00 | - | 23.00 (1 of 2) |  |" in text
    assert "1 of them imported from the sweep's earlier layout" in text


def test_an_unknown_optimizer_is_one_error_line(capsys):
    from experiments.sweep import main

    with pytest.raises(SystemExit):
        main(["--plot-only", "--optimizers", "nope"])
    err = capsys.readouterr().err
    assert err.startswith("error: --optimizers: unknown nope; choose from adam, ") and err.count("\n") == 1
