"""The lego lr screen's table, from records written the way benchmarks/gpu/lego_contest.py writes them."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu import lr_screen

PROTOCOL = {"data": "lego", "rays": 128, "samples": 64, "steps": 5000}


def _record(folder, method, curve, scale=None):
    protocol = dict(PROTOCOL, **({"lr_scale": scale} if scale is not None else {}))
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"method": method, "protocol": protocol, "curve": [{"step": s, "psnr": p} for s, p in curve]}
    rec["schedule"] = f"{method} lr {1e-4 * (scale or 1):g}, cosine to 0 over 5,000 steps"
    (folder / f"{method}.json").write_text(json.dumps(rec))


def test_the_table_marks_each_methods_best_multiple_and_the_edge_to_screen_past(tmp_path):
    x1, x3, x9 = tmp_path / "x1", tmp_path / "x3", tmp_path / "x9"
    _record(x1, "gaussian-nerf-adam", [(400, 12.0), (500, 15.0)])
    _record(x1, "gaussian-nerf-muon", [(400, 13.0)])  # stopped short of the step compared
    _record(x1, "vanilla-nerf-coarse", [(500, 16.0)])
    _record(x3, "gaussian-nerf-adam", [(500, 18.0)], scale=3.0)
    _record(x3, "gaussian-nerf-muon", [(500, 17.0)], scale=3.0)
    _record(x9, "gaussian-nerf-muon", [(500, 14.0)], scale=9.0)  # x3 is not an edge: x1 was tried, not there yet
    (x3 / "x3.json").write_text(json.dumps({"methods": {}}))  # a report's JSON: not a record
    out = tmp_path / "screen.md"
    text = lr_screen.main(["--screens", str(x1), str(x3), str(x9), "--step", "500", "--out", str(out)])
    assert out.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| gaussian") or line.startswith("| vanilla")]
    assert rows == [
        "| gaussian-nerf-adam | gaussian-nerf-adam lr 0.0001 | 15.00 | **18.00** |  | x3 | highest multiple tried: next x9 |",
        "| gaussian-nerf-muon | gaussian-nerf-muon lr 0.0001 | - (13.00 at 400) | **17.00** | 14.00 | x3 |  |",
        "| vanilla-nerf-coarse | vanilla-nerf-coarse lr 0.0001 | **16.00** |  |  | x1 |  |",
    ]


def test_records_of_another_protocol_are_refused(tmp_path):
    _record(tmp_path / "a", "gaussian-nerf-adam", [(500, 15.0)])
    (tmp_path / "b").mkdir()
    rec = {"method": "gaussian-nerf-adam", "protocol": dict(PROTOCOL, rays=256, lr_scale=3.0), "curve": []}
    (tmp_path / "b" / "gaussian-nerf-adam.json").write_text(json.dumps(rec))
    with pytest.raises(SystemExit, match=r"gaussian-nerf-adam.json: recorded under another protocol"):
        lr_screen.read([tmp_path / "a", tmp_path / "b"])
