"""experiments/esgd_seeds.py: its written-out published ESGD is gnerf's ESGD, and its report is built from the seeds."""

import copy
import json

import torch

from experiments.esgd_seeds import SeedStudyConfig, main, published_esgd_step, published_wants_graph
from gnerf.optim import ESGD


def test_the_written_out_published_esgd_takes_gnerf_esgds_steps():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ref = copy.deepcopy(net)
    x = torch.rand(64, 2)
    y = x.prod(1, keepdim=True)
    opt = ESGD(net.parameters(), lr=0.05, precondition_warmup_steps=3, precondition_frequency=4)
    state: dict = {}
    graphs = []
    for step in range(14):
        torch.manual_seed(100 + step)  # both draw their probes from the global generator
        graph = opt.should_create_graph()
        ((net(x) - y) ** 2).mean().backward(create_graph=graph)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.manual_seed(100 + step)
        graphs.append(published_wants_graph(state, 3, 4))
        assert graphs[-1] == graph, step
        ((ref(x) - y) ** 2).mean().backward(create_graph=graphs[-1])
        published_esgd_step(list(ref.parameters()), state, lr=0.05, warmup=3, every=4)
    assert [i for i, g in enumerate(graphs) if g] == [0, 1, 2, 6, 10]
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_seed_study_runs_the_contenders_and_reports_them(tmp_path):
    from gnerf.files import atomic_write_image

    g = torch.linspace(0, 1, 8)
    image = tmp_path / "tiny.png"
    atomic_write_image(
        image, torch.stack([g[:, None].expand(8, 8), g[None, :].expand(8, 8), 0.5 * torch.ones(8, 8)], -1)
    )
    cfg = SeedStudyConfig(
        seeds=(0, 1),
        image=image,
        size=8,
        epochs=2,
        workers=1,
        contenders=("published", "gnerf", "published+gnerf-esgd"),
        output_dir=tmp_path / "runs",
        report=tmp_path / "report.md",
        figure=tmp_path / "seeds.png",
    )
    text = main(cfg)
    assert (tmp_path / "report.md").read_text() == text and (tmp_path / "seeds.png").stat().st_size > 0
    assert "| seed | published | gnerf | published+gnerf-esgd |" in text and "Welch's t" in text
    finals = {
        c: [json.loads((tmp_path / "runs" / c / f"seed{s}.json").read_text())["psnr"] for s in (0, 1)]
        for c in ("published", "gnerf", "published+gnerf-esgd")
    }
    assert all(len(p) == 2 for runs in finals.values() for p in runs)
    for a, b in zip(finals["published"], finals["published+gnerf-esgd"]):  # the same streams, the same ESGD
        assert abs(a[-1] - b[-1]) < 1e-3
    cfg.plot_only = True
    assert main(cfg) == text


def test_each_seed_is_a_job_and_a_failed_one_is_reported_without_stopping_the_others(tmp_path):
    from experiments.esgd_seeds import SeedJob, seed_job
    from experiments.jobs import EngineConfig, run_jobs
    from gnerf.files import atomic_write_image

    image = tmp_path / "tiny.png"
    atomic_write_image(image, torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0)))
    good = SeedStudyConfig(seeds=(0,), image=image, size=8, epochs=1, output_dir=tmp_path / "runs")
    bad = SeedStudyConfig(seeds=(0,), image=tmp_path / "missing.png", size=8, epochs=1, output_dir=tmp_path / "bad")
    specs = [SeedJob(bad, "published", 0), SeedJob(good, "published", 0)]
    results = run_jobs(specs, EngineConfig(workers=1, poll_s=0.1), tmp_path / "jobs", job=seed_job)
    assert results[0]["status"] == "failed" and "missing.png" in results[0]["error"]
    assert results[1]["status"] == "done"
    saved = json.loads((tmp_path / "runs" / "published" / "seed0.json").read_text())
    assert results[1]["final"] == saved["psnr"][-1]
