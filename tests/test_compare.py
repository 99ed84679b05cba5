import csv
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest

from experiments.compare import CompareConfig, Run, optimizer_args, resolve, run_args, run_comparison
from gnerf.optim import OPTIMIZERS


def _tiny(tmp_path, inputs, **kw):
    """A grid of 16 x 16 images, 1 epoch, width 8: each run is one job of a second or two plus start-up."""
    opts = dict(
        inputs=tuple(inputs),
        activations=("gaussian",),
        optimizers=("adam",),
        epochs=1,
        size=(16, 16),
        hidden_dim=8,
        num_layers=2,
        batch_size=64,
        workers=2,
        output_dir=tmp_path / "cmp",
    )
    opts.update(kw)
    return CompareConfig(**opts)


def test_a_failed_run_is_reported_with_its_error_and_the_others_finish(image, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    cfg = _tiny(tmp_path, (image, broken), optimizers=("adam", "esgd"))
    logs = []
    res = run_comparison(cfg, log=logs.append)
    assert res["statuses"] == {"done": 2, "failed": 2}
    assert [(r.instance, r.optimizer) for r, _ in res["failures"]] == [("broken", "adam"), ("broken", "esgd")]
    error = res["failures"][0][1]
    assert error.startswith("error:") and "broken.png" in error
    summary = (tmp_path / "cmp" / "summary.md").read_text()
    assert "2 run(s) failed" in summary and f"broken gaussian adam seed0: `{error}`" in summary
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert {r["instance"] for r in rows} == {"tiny"} and len(rows) == 2
    # each job ran the fitting command in the run folder, which its log names
    log = (tmp_path / "cmp" / "runs" / "tiny" / "gaussian" / "adam" / "seed0" / "log.txt").read_text()
    assert log.startswith("$ gnerf-fit-image --output-dir ") and "optim:adam" in log
    assert any(line.endswith(f"broken gaussian esgd seed0: failed ({error})") for line in logs)


def test_the_grid_skips_finished_runs_and_resumes_unfinished_ones(image, tmp_path):
    cfg = _tiny(tmp_path, (image,), optimizers=("kfac",))
    logs = []
    assert run_comparison(cfg, log=logs.append)["statuses"] == {"done": 1}
    for name in ("loss_vs_iteration.png", "loss_vs_time.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    res = run_comparison(cfg, log=logs.append)  # nothing left to do: no job is submitted
    assert res["statuses"] == {} and any("1 already finished, 0 to run" in line for line in logs)
    # one more epoch: the run continues from its checkpoint with the fitting command's --resume
    res = run_comparison(CompareConfig(**{**vars(cfg), "epochs": 2}), log=logs.append)
    assert res["statuses"] == {"done": 1}
    log = (tmp_path / "cmp" / "runs" / "tiny" / "gaussian" / "kfac" / "seed0" / "log.txt").read_text()
    commands = [line for line in log.splitlines() if line.startswith("$ gnerf-fit-image")]
    assert len(commands) == 2 and "--resume" not in commands[0].split() and "--resume" in commands[1].split()
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert sorted({int(r["epoch"]) for r in rows}) == [1, 2] and len(rows) == 2


def test_a_run_is_one_command_line_and_its_optimizer_is_chosen_in_one_place(image, tmp_path):
    cfg = resolve(_tiny(tmp_path, (image,)))
    run = Run("image", image, "gaussian", "adam", 3)
    args = run_args(cfg, run, resume=True)
    assert "--resume" in args and args[args.index("--seed") + 1] == "3"
    assert args[-1] == "optim:adam" and "--size" in args  # the optimizer's subcommand comes last
    assert optimizer_args("adam", {"lr": 3e-4}) == ["optim:adam", "--optim.lr", "0.0003"]
    assert set(CompareConfig().optimizers) == set(OPTIMIZERS)


def test_slurm_jobs_get_the_partition_time_and_parallelism_asked_for(tmp_path, monkeypatch):
    from experiments.jobs import EngineConfig, _executor

    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("srun", "sbatch"):
        (fake / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    executor = _executor(
        EngineConfig(cluster="slurm", workers=3, threads=2, timeout_min=90, slurm_partition="cpu"), tmp_path / "jobs"
    )
    params = executor._executor.parameters
    assert (params["partition"], params["time"], params["cpus_per_task"]) == ("cpu", 90, 2)
    assert params["array_parallelism"] == 3
    with pytest.raises(ValueError, match="--cluster"):
        _executor(EngineConfig(cluster="pbs"), tmp_path / "jobs")


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
    cfg = ReproduceConfig(
        tasks=("image",),
        images=("a", "b"),
        activations=("gaussian",),
        size=(8, 8),
        epochs=2,
        workers=2,
        data_dir=tmp_path / "data",
        output_dir=tmp_path / "runs",
        report=report,
        figure_dir=tmp_path / "docs" / "figures",
    )
    text = reproduce(cfg)
    assert report.read_text() == text
    assert "| Gaussian | adam |" in text and "| Gaussian | esgd |" in text and "epoch 2" in text
    assert "(figures/reproduction_paper_image.png)" in text
    assert (tmp_path / "docs" / "figures" / "reproduction_paper_image.png").stat().st_size > 0
    claim = [line for line in text.splitlines() if line.startswith("- Gaussian: ESGD ends ahead of Adam")]
    assert len(claim) == 1 and "of 2 runs" in claim[0]
    # a run whose last attempt failed is listed in the report with its error line
    folder = tmp_path / "runs" / "image" / "runs" / "b" / "gaussian" / "esgd" / "seed0"
    (folder / "error.json").write_text(json.dumps({"status": "failed", "error": "error: out of memory"}))
    text = reproduce(replace(cfg, plot_only=True))
    assert "1 run(s) failed" in text and "- b gaussian esgd seed0: `error: out of memory`" in text
    with pytest.raises(ValueError, match="--report"):
        reproduce(
            ReproduceConfig(
                tasks=("image",),
                images=("a",),
                size=(8, 8),
                epochs=1,
                workers=1,
                data_dir=tmp_path / "data",
                output_dir=tmp_path / "runs2",
                plot_only=True,
            )
        )


def test_a_claim_whose_runs_all_diverged_is_reported_as_not_judged():
    from experiments.reproduce import claims

    grid = CompareConfig(task="occupancy", activations=("gaussian", "relu"), optimizers=("adam", "esgd"))
    row = dict(task="occupancy", instance="bunny", seed="0", iteration="20", wall_time="1.0", loss="0.1")
    rows = [
        {**row, "activation": act, "optimizer": opt, "status": "ok", "epoch": "1", "metric": str(m)}
        for act, opt, m in (("gaussian", "adam", 0.5), ("gaussian", "esgd", 0.6), ("relu", "adam", 0.7))
    ]
    rows.append(
        {**row, "activation": "relu", "optimizer": "esgd", "status": "diverged", "epoch": "nan", "metric": "nan"}
    )
    lines = [line for line in claims(grid, rows) if line.startswith("- ")]
    assert lines[0].startswith("- Gaussian: ESGD ends ahead of Adam — **holds**: ESGD ahead in 1 of 1 runs")
    assert lines[1] == (
        "- ReLU + PE: Adam ends ahead of ESGD — **not judged**: no pair of finished runs to compare "
        "(1 ESGD and 0 Adam run(s) diverged with a NaN loss)."
    )


def test_reproduce_suites_choose_their_grids_records_and_reports():
    from experiments.reproduce import ROOT, ReproduceConfig, contest_config, report_path, suite_configs, task_grids

    plans = {name: (c, task_grids(c, name)) for name, c in suite_configs(ReproduceConfig(suites=("all",), quick=True))}
    assert list(plans) == ["claims", "preconditioners", "video"]
    (pre,) = plans["preconditioners"][1]
    assert pre.activations == ("sine", "wavelet") and pre.size == (64, 64)
    assert pre.optimizers == ("adam", "esgd", "adahessian-e", "adahessian-j", "kfac", "kfac-adam", "shampoo")
    assert [p.stem for p in pre.inputs] == ["kodim01", "kodim02", "kodim03", "kodim04"]
    claims_image = plans["claims"][1][0]
    assert claims_image.record == pre.record == ROOT / "docs" / "data" / "reproduce-quick" / "image"  # shared runs
    (video,) = plans["video"][1]
    assert (video.task, video.size, video.max_frames, video.epochs) == ("video", (68, 160), 16, 20)
    assert video.activations == ("gaussian", "sine", "wavelet") and video.optimizers == ("adam", "esgd")
    assert report_path(plans["video"][0], "video") == ROOT / "docs" / "reproduction_video_quick.md"
    contest = contest_config(ReproduceConfig(suites=("contest",)))
    assert (contest.size, contest.epochs, contest.record) == (256, 200, ROOT / "docs" / "data" / "contest")
    with pytest.raises(ValueError, match="--suites: unknown nerf"):
        suite_configs(ReproduceConfig(suites=("nerf",)))
    with pytest.raises(ValueError, match="--report names one report"):
        suite_configs(ReproduceConfig(suites=("claims", "video"), report=Path("x.md")))


def _rows(act, opt, finals, status="ok"):
    return [
        dict(
            task="image",
            instance=f"p{i}",
            activation=act,
            optimizer=opt,
            seed=0,
            status=status,
            epoch=2,
            iteration=8,
            wall_time=1.0,
            loss=0.1,
            metric=v,
        )
        for i, v in enumerate(finals)
    ]


def test_the_preconditioner_report_states_the_papers_numbers_beside_its_own():
    from experiments.reproduce import paper_reference

    grid = CompareConfig(
        task="image", epochs=2, activations=("sine",), optimizers=("adam", "esgd", "adahessian-e", "shampoo")
    )
    rows = (
        _rows("sine", "adam", [25.0, 27.0])
        + _rows("sine", "esgd", [40.0, 42.0])
        + _rows("sine", "adahessian-e", [30.0, 30.0])
        + _rows("sine", "shampoo", [20.0, 22.0])
    )
    lines = paper_reference(grid, rows)
    assert "| sine | 26.11 / 26.00 | 36.16 / 41.00 | 34.71 / 30.00 | - / 21.00 |" in lines
    assert (
        "- sine: highest to lowest, the paper: ESGD, AdaHessian (E), Adam; here: ESGD, AdaHessian (E), Adam "
        "(the same order; best here matches the paper's best)."
    ) in lines
    assert paper_reference(CompareConfig(task="image", activations=("sine",), optimizers=("adam", "esgd")), rows) == []


def test_the_video_section_says_whether_adam_diverged_with_sine():
    from experiments.reproduce import video_lines

    grid = CompareConfig(task="video", epochs=2, activations=("sine",), optimizers=("adam", "esgd"))
    nan = dict(_rows("sine", "adam", [math.nan])[0], status="diverged", epoch=math.nan)
    assert video_lines(grid, [nan]) == [
        "- sine, Adam diverges (the paper, supplementary Fig. 11) — **holds**: 1 of 1 run(s) diverged (NaN loss)."
    ]
    assert (
        "**does not hold**: none of 2 run(s) diverged; mean final PSNR 21.00 dB"
        in video_lines(grid, _rows("sine", "adam", [20.0, 22.0]))[0]
    )


def test_plot_only_without_any_run_leaves_the_report_as_it_is(tmp_path):
    from experiments.reproduce import ReproduceConfig, reproduce

    kodak = tmp_path / "data" / "images" / "kodak"
    kodak.mkdir(parents=True)
    (kodak / "kodim01.png").write_bytes(b"")
    report = tmp_path / "docs" / "reproduction.md"
    report.parent.mkdir()
    report.write_text("measured before records existed\n")
    cfg = ReproduceConfig(
        tasks=("image",),
        images=("kodim01",),
        data_dir=tmp_path / "data",
        report=report,
        output_dir=tmp_path / "runs",
        plot_only=True,
    )
    with pytest.raises(ValueError, match="is left as it is"):
        reproduce(cfg)
    assert report.read_text() == "measured before records existed\n"


def test_the_video_suite_runs_and_reports_a_tiny_video_grid(tmp_path):
    from experiments.reproduce import ReproduceConfig, reproduce

    from shared_data import BIKES, require

    data = tmp_path / "data"
    (data / "video").mkdir(parents=True)
    (data / "video" / "bikes.mp4").symlink_to(require(BIKES))
    cfg = ReproduceConfig(
        suites=("video",),
        activations=("gaussian",),
        optimizers=("adam",),
        size=(8, 16),
        epochs=1,
        data_dir=data,
        output_dir=tmp_path / "runs",
        report=tmp_path / "docs" / "video.md",
        figure_dir=tmp_path / "docs" / "figures",
        workers=1,
    )
    grid = CompareConfig(
        task="video", inputs=(data / "video" / "bikes.mp4",), size=(8, 16), max_frames=2, output_dir=tmp_path
    )
    args = run_args(resolve(grid), Run("video", grid.inputs[0], "gaussian", "adam", 0), resume=False)
    assert args[args.index("--max-frames") + 1] == "2" and args[args.index("--size") + 1 :][:2] == ["8", "16"]
    text = reproduce(replace(cfg, max_frames=2))
    assert "## Video" in text and "the first 2 frames at 8 x 16" in text and "| Gaussian | adam |" in text
    assert (tmp_path / "docs" / "data" / "video" / "video" / "bikes" / "gaussian" / "adam" / "seed0.jsonl").is_file()


def _curve(act, opt, inst, metrics, seconds_per_epoch=2.0):
    return [
        dict(
            task="occupancy",
            instance=inst,
            activation=act,
            optimizer=opt,
            seed=0,
            status="ok",
            epoch=e,
            iteration=10 * e,
            wall_time=seconds_per_epoch * e,
            loss=0.1,
            metric=m,
        )
        for e, m in enumerate(metrics, start=1)
    ]


def test_the_time_to_quality_table_locates_each_target_run_by_run():
    from experiments.reproduce import time_to_quality_lines

    grid = CompareConfig(task="occupancy", epochs=4, activations=("gaussian",), optimizers=("adam", "esgd", "muon"))
    rows = (
        _curve("gaussian", "adam", "bunny", [0.1, 0.2, 0.3, 0.4])
        + _curve("gaussian", "adam", "dragon", [0.1, 0.2, 0.3, 0.5])
        + _curve("gaussian", "esgd", "bunny", [0.2, 0.4, 0.5, 0.6], seconds_per_epoch=3.0)
        + _curve("gaussian", "esgd", "dragon", [0.1, 0.1, 0.1, 0.2], seconds_per_epoch=3.0)
        + _curve("gaussian", "muon", "bunny", [0.3, 0.5, 0.6, 0.7])
        + _curve("gaussian", "muon", "dragon", [0.3, 0.5, 0.6, 0.8])
    )
    lines = time_to_quality_lines(grid, rows)
    # muon is the only contender, so it is the best; (a) Adam's finals 0.4 / 0.5, (b) muon's 0.7 / 0.8
    assert "(b) the final IoU of the best contender, **muon** (mean final 0.750)" in lines[1]
    table = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines if line.startswith("| ")}
    # esgd: bunny reaches 0.4 at epoch 2 (20 steps, 6 s), dragon never reaches 0.5; neither reaches muon's finals
    assert table["esgd"] == ["20 (1 of 2)", "6", "not reached", "", "- |"]
    # muon: 0.4 at epoch 2 on both; 0.7 at epoch 4, 0.8 at epoch 4; its own ratio is 1
    assert table["muon"] == ["20", "4", "40", "8", "1.00 |"]
    assert table["adam"] == ["40", "8", "not reached", "", "- |"]
    # without a contender the best entrant is the target of (b); without Adam, (a) is left out
    no_adam = [r for r in rows if r["optimizer"] != "adam"]
    lines = time_to_quality_lines(CompareConfig(task="occupancy", epochs=4, optimizers=("esgd", "muon")), no_adam)
    assert "(a)" not in lines[1] and "**muon**" in lines[1]
    unfinished = [r for r in rows if r["optimizer"] != "muon" and r["epoch"] < 4]
    assert (
        time_to_quality_lines(CompareConfig(task="occupancy", epochs=4, optimizers=grid.optimizers), unfinished) == []
    )


@pytest.mark.parametrize("how", ["signal 15", ""])  # SIGTERM (interrupt_on_sigterm's message), ^C (none)
def test_a_grid_command_stopped_from_outside_ends_with_one_line(capsys, how):
    from dataclasses import dataclass

    from experiments.compare import grid_main

    @dataclass
    class Tiny:
        """A grid of nothing."""

        n: int = 1

    def run(cfg, log, command):
        raise KeyboardInterrupt(how)

    with pytest.raises(SystemExit) as stop:
        grid_main(Tiny, run, "experiments.tiny", [])
    assert stop.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    said = how or "Ctrl-C"
    assert err[-1].startswith(f"error: experiments.tiny stopped ({said}); finished runs are recorded")
