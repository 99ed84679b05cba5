import csv
from pathlib import Path

import pytest
import torch

from experiments.compare import CompareConfig, run_comparison


@pytest.fixture
def image(tmp_path):
    from gnerf.tasks.io import atomic_write_image

    g = torch.linspace(0, 1, 8)
    img = torch.stack([g[:, None].expand(8, 8), g[None, :].expand(8, 8), 0.5 * torch.ones(8, 8)], -1)
    path = tmp_path / "tiny.png"
    atomic_write_image(path, img)
    return path


def test_grid_runs_resumes_and_writes_results_and_figures(image, tmp_path):
    cfg = CompareConfig(inputs=(image,), activations=("gaussian", "relu"), optimizers=("adam", "kfac"), epochs=1,
                        size=(8, 8), hidden_dim=8, num_layers=2, batch_size=32, workers=1,
                        output_dir=tmp_path / "cmp")
    logs = []
    res = run_comparison(cfg, log=logs.append)
    assert res["statuses"] == {"done": 4}
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert len(rows) == 4 and {r["optimizer"] for r in rows} == {"adam", "kfac"}
    for name in ("loss_vs_iteration.png", "loss_vs_time.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    # resumable: nothing to do again; more epochs continue the runs from their checkpoints
    run_comparison(cfg, log=logs.append)
    assert any("4 already finished, 0 to run" in line for line in logs)
    res = run_comparison(CompareConfig(**{**vars(cfg), "epochs": 2}), log=logs.append)
    assert res["statuses"] == {"done": 4}
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert sorted({int(r["epoch"]) for r in rows}) == [1, 2] and len(rows) == 8


def test_unknown_names_are_refused(image, tmp_path):
    with pytest.raises(ValueError, match="unknown optimizer"):
        run_comparison(CompareConfig(inputs=(image,), optimizers=("lbfgs",), output_dir=tmp_path))
    with pytest.raises(FileNotFoundError):
        run_comparison(CompareConfig(inputs=(Path("nope.png"),), output_dir=tmp_path))


def test_reproduce_writes_a_report_with_tables_figure_and_claims(image, tmp_path):
    from experiments.reproduce import ReproduceConfig, reproduce

    kodak = tmp_path / "data" / "images" / "kodak"
    kodak.mkdir(parents=True)
    for stem in ("a", "b"):
        (kodak / f"{stem}.png").write_bytes(image.read_bytes())
    report = tmp_path / "docs" / "report.md"
    cfg = ReproduceConfig(tasks=("image",), images=("a", "b"), activations=("gaussian",), size=(8, 8), epochs=2,
                          workers=1, data_dir=tmp_path / "data", output_dir=tmp_path / "runs", report=report,
                          figure_dir=tmp_path / "docs" / "figures")
    text = reproduce(cfg)
    assert report.read_text() == text
    assert "| Gaussian | adam |" in text and "| Gaussian | esgd |" in text and "epoch 2" in text
    assert "(figures/reproduction_paper_image.png)" in text
    assert (tmp_path / "docs" / "figures" / "reproduction_paper_image.png").stat().st_size > 0
    claim = [line for line in text.splitlines() if line.startswith("- Gaussian: ESGD ends ahead of Adam")]
    assert len(claim) == 1 and "of 2 runs" in claim[0]
    with pytest.raises(ValueError, match="--report"):
        reproduce(ReproduceConfig(tasks=("image",), images=("a",), size=(8, 8), epochs=1, workers=1,
                                  data_dir=tmp_path / "data", output_dir=tmp_path / "runs2", plot_only=True))


def test_a_claim_whose_runs_all_diverged_is_reported_as_not_judged():
    from experiments.reproduce import claims

    grid = CompareConfig(task="occupancy", activations=("gaussian", "relu"), optimizers=("adam", "esgd"))
    row = dict(task="occupancy", instance="bunny", seed="0", iteration="20", wall_time="1.0", loss="0.1")
    rows = [{**row, "activation": act, "optimizer": opt, "status": "ok", "epoch": "1", "metric": str(m)}
            for act, opt, m in (("gaussian", "adam", 0.5), ("gaussian", "esgd", 0.6), ("relu", "adam", 0.7))]
    rows.append({**row, "activation": "relu", "optimizer": "esgd", "status": "diverged", "epoch": "nan", "metric": "nan"})
    lines = [line for line in claims(grid, rows) if line.startswith("- ")]
    assert lines[0].startswith("- Gaussian: ESGD ends ahead of Adam — **holds**: ESGD ahead in 1 of 1 runs")
    assert lines[1] == ("- ReLU + PE: Adam ends ahead of ESGD — **not judged**: no pair of finished runs to compare "
                        "(1 ESGD and 0 Adam run(s) diverged with a NaN loss).")
