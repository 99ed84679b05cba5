"""experiments/records.py with the grid: finished and diverged runs are recorded, recorded runs are not rerun."""

import csv
import json
import shutil

import pytest

from experiments.compare import CompareConfig, Run, read_results, run_comparison
from experiments.records import RunRecord, import_run


def _tiny(tmp_path, image, **kw):
    opts = dict(
        inputs=(image,),
        activations=("gaussian",),
        optimizers=("adam",),
        epochs=1,
        size=(16, 16),
        hidden_dim=8,
        num_layers=2,
        batch_size=64,
        workers=2,
        output_dir=tmp_path / "cmp",
        record=tmp_path / "rec",
    )
    opts.update(kw)
    return CompareConfig(**opts)


def test_finished_and_diverged_runs_are_recorded_and_not_run_again_without_their_folders(image, tmp_path):
    # esgd at lr 1e6 (the largest --optim.lr taken) makes the loss NaN in its second epoch: the job engine reports
    # it as diverged
    cfg = _tiny(tmp_path, image, optimizers=("adam", "esgd:lr=1e6"), epochs=2)
    assert run_comparison(cfg, log=lambda line: None)["statuses"] == {"done": 1, "diverged": 1}
    rec = tmp_path / "rec" / "tiny" / "gaussian"
    run_folder = tmp_path / "cmp" / "runs" / "tiny" / "gaussian" / "adam" / "seed0"
    assert (rec / "adam" / "seed0.jsonl").read_bytes() == (run_folder / "metrics.jsonl").read_bytes()
    assert (rec / "adam" / "seed0.json").read_bytes() == (run_folder / "config.json").read_bytes()
    info = json.loads((rec / "adam" / "seed0.run.json").read_text())
    assert info["command"].startswith("gnerf-fit-image ") and info["torch_threads"] == 1 and info["machine"]
    failed = json.loads((rec / "esgd+lr=1000000.0" / "seed0.failed.json").read_text())
    assert failed["status"] == "diverged" and "the training loss became" in failed["error"]
    assert json.loads((tmp_path / "rec" / "grid.json").read_text())["size"] == [16, 16]
    # a new checkout: the run folders are gone, the records stay; nothing is run again
    shutil.rmtree(tmp_path / "cmp")
    logs = []
    res = run_comparison(cfg, log=logs.append)
    assert res["statuses"] == {} and any("2 already finished, 0 to run" in line for line in logs)
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert {(r["optimizer"], r["status"], r["source"]) for r in rows} == {
        ("adam", "ok", "record"),
        ("esgd:lr=1000000.0", "diverged", "record"),
    }
    assert "| adam | " in (tmp_path / "cmp" / "summary.md").read_text()
    assert not (tmp_path / "cmp" / "runs").exists()
    # --plot-only rebuilds the same results from the records alone
    shutil.rmtree(tmp_path / "cmp")
    assert run_comparison(CompareConfig(**{**vars(cfg), "plot_only": True}), log=lambda line: None)["statuses"] == {}
    assert list(csv.DictReader(open(tmp_path / "cmp" / "results.csv"))) == rows


def test_a_record_refuses_a_grid_of_another_protocol(image, tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "grid.json").write_text(
        json.dumps({"task": "image", "batch_size": 64, "hidden_dim": 8, "num_layers": 2, "size": [32, 32]})
    )
    with pytest.raises(ValueError, match=r"another protocol \(size \[32, 32\] there, \[16, 16\] here\)"):
        run_comparison(_tiny(tmp_path, image), log=lambda line: None)


def _fake_run(folder, epochs, config):
    folder.mkdir(parents=True)
    rows = [
        {"epoch": e, "iteration": 4 * e, "wall_time": 0.1 * e, "loss": 1.0 / e, "psnr": 10.0 + e}
        for e in range(1, epochs + 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.json").write_text(json.dumps(config))


def test_the_record_is_read_when_the_run_folder_is_gone_and_the_longer_history_wins(image, tmp_path):
    cfg = _tiny(tmp_path, image, epochs=3)
    run = Run("image", image, "gaussian", "adam", 0)
    rec = RunRecord(tmp_path / "rec", "tiny", "gaussian", "adam", 0)
    rec.write(
        b"".join(
            json.dumps({"epoch": e, "iteration": e, "wall_time": e, "loss": 1.0, "psnr": 20.0}).encode() + b"\n"
            for e in (1, 2, 3)
        ),
        b"{}",
        {"machine": "m"},
    )
    rows = read_results(cfg)
    assert [(r["epoch"], r["metric"], r["source"]) for r in rows] == [
        (1, 20.0, "record"),
        (2, 20.0, "record"),
        (3, 20.0, "record"),
    ]
    # a run folder with more epochs (a run extending the recorded one) is read instead
    _fake_run(run.folder(tmp_path / "cmp"), 4, {})
    assert [r["source"] for r in read_results(cfg)] == ["folder"] * 4


def test_a_finished_run_folder_of_another_layout_is_imported_after_its_config_is_checked(tmp_path):
    config = {
        "size": [16, 16],
        "batch_size": 64,
        "seed": 0,
        "threads": 1,
        "field": {"activation": "gaussian", "hidden_dim": 8, "num_layers": 2},
        "optim": {"name": "muon", "lr": 6.666666666666667e-05},
        "schedule": {"name": "cosine"},
    }
    expected = {
        "size": [16, 16],
        "batch_size": 64,
        "seed": 0,
        "activation": "gaussian",
        "hidden_dim": 8,
        "num_layers": 2,
        "optimizer": "muon",
        "lr": 6.67e-05,
        "schedule": "cosine",
    }
    _fake_run(tmp_path / "old" / "done", 3, config)
    _fake_run(tmp_path / "old" / "short", 2, config)
    _fake_run(tmp_path / "old" / "other", 3, {**config, "size": [32, 32]})
    rec = RunRecord(tmp_path / "rec", "a", "gaussian", "muon+lr=6.67e-05", 0)
    assert import_run(tmp_path / "old" / "short", rec, 3, expected, {})[0] == "unfinished"
    outcome, why = import_run(tmp_path / "old" / "other", rec, 3, expected, {})
    assert outcome == "mismatch" and "size [32, 32] (expected [16, 16])" in why
    assert import_run(tmp_path / "old" / "done", rec, 3, expected, {"machine": None}) == ("recorded", "3 epochs")
    assert rec.metrics.read_bytes() == (tmp_path / "old" / "done" / "metrics.jsonl").read_bytes()
    assert rec.run_info()["source"] == f"imported from {tmp_path / 'old' / 'done'}"
    assert import_run(tmp_path / "old" / "done", rec, 3, expected, {})[0] == "present"
    assert import_run(tmp_path / "old" / "done", rec, 3, {**expected, "lr": 1e-4}, {})[0] == "present"
    rec2 = RunRecord(tmp_path / "rec", "b", "gaussian", "muon+lr=0.0001", 0)
    outcome, why = import_run(tmp_path / "old" / "done", rec2, 3, {**expected, "lr": 1e-4}, {})
    assert outcome == "mismatch" and why.startswith("lr 6.66")


def test_a_record_made_with_other_settings_than_its_spec_now_runs_is_refused_with_its_path(image, tmp_path):
    cfg = _tiny(tmp_path, image, optimizers=("muon",), epochs=1)
    rec = RunRecord(tmp_path / "rec", "tiny", "gaussian", "muon", 0)
    row = json.dumps({"epoch": 1, "iteration": 1, "wall_time": 1.0, "loss": 1.0, "psnr": 20.0}).encode() + b"\n"
    config = {"optim": {"name": "muon", "lr": 2e-4, "adam_lr": 1e-4}, "schedule": {"name": "cosine", "lr_final": 0.0}}
    rec.write(row, json.dumps(config).encode(), {"machine": "m"})
    # muon's registered lr is not 2e-4: the record is not a run of muon's registered settings
    with pytest.raises(ValueError, match=r"muon/seed0\.json: recorded with optim\.lr 0\.0002, now 6\.67e-05"):
        read_results(cfg)
    with pytest.raises(ValueError, match="registered settings changed"):
        run_comparison(cfg, log=lambda line: None)
    # the same files under the spec that names their lr are that spec's run; a file that states no lr (the task's
    # default then) or predates a setting is not contradicted
    moved = RunRecord(tmp_path / "rec", "tiny", "gaussian", "muon+lr=0.0002", 0)
    moved.write(row, json.dumps(config).encode(), {"machine": "m"})
    assert [r["source"] for r in read_results(_tiny(tmp_path, image, optimizers=("muon:lr=2e-4",)))] == ["record"]
    config["optim"]["lr"] = None
    rec.write(row, json.dumps(config).encode(), {"machine": "m"})
    assert [r["source"] for r in read_results(cfg)] == ["record"]
    config["schedule"]["name"] = "constant"
    rec.write(row, json.dumps(config).encode(), {"machine": "m"})
    with pytest.raises(ValueError, match="schedule.name constant, now cosine"):
        read_results(cfg)
