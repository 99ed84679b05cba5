"""The pure-torch benchmarks (1)-(3) and (6) and the optimizer-step benchmark run end to end at a tiny size (fast)."""

from benchmarks import ddp, optimizer_steps, trunk
from benchmarks.common import TrunkSpec


def test_trunk_benchmarks_tiny(one_thread):  # tiny ops: threading only adds contention
    spec = TrunkSpec(points=64, width=16, layers=3, device="cpu")
    text, stats = trunk.step_overhead(spec, rounds=1, block=10, warmup_steps=2)
    assert "ratio ESGD-Max / Adam" in text and stats["ESGD-Max"]["n_curv"] == 1 and stats["Adam"]["n_curv"] == 0
    assert stats["ratio"] > 0
    text, stats = trunk.curvature_cost(spec, reps=1)
    assert "double backward / plain" in text and stats["double_backward"] > 0 and stats["plain"] > 0
    text, stats = trunk.update_cost(spec, reps=2)
    assert "Adam(foreach=True) step" in stats


def test_ddp_benchmark_tiny():
    spec = TrunkSpec(points=64, width=16, layers=3, device="cpu")
    text, stats = ddp.ddp_overhead(spec, world=2, rounds=1, block=4, warmup_steps=2)
    assert "ratio ESGD-Max / Adam under DDP" in text
    assert stats["ESGD-Max"]["n_curv"] == 1 and stats["Adam"]["n_curv"] == 0
    assert stats["ESGD-Max"]["reduces"] == [1]  # one all-reduce per curvature step
    assert stats["identical"]


def test_optimizer_steps_writes_its_table_with_its_command(one_thread, tmp_path):
    out = tmp_path / "steps.md"
    text = optimizer_steps.main(["--names", "adam", "esgd", "--block", "2", "--rounds", "1", "--output", str(out)])
    written = out.read_text()
    assert written.startswith("Command: `python -m benchmarks.optimizer_steps --names adam esgd --block 2")
    assert written.endswith(text) and "| esgd |" in text and "| adam |" in text
