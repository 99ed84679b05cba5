"""Where the tests find the repository and the shared data (``../shared/data`` next to the repository), and the
environment under which the commands they start import this tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
KODIM01 = DATA / "images" / "kodak" / "kodim01.png"
BUNNY = DATA / "shapes" / "bunny.obj"
DRAGON = DATA / "shapes" / "dragon.obj"
BIKES = DATA / "video" / "bikes.mp4"
LEGO = DATA / "nerf_synthetic" / "lego"


def require(path: Path) -> Path:
    """``path``, or skip the test when the shared data folder is not next to the repository."""
    if not path.exists():
        pytest.skip(f"shared data {path} is missing (expected ../shared/data next to the repository)")
    return path


def tree_env() -> dict:
    """``os.environ`` with this repository first on ``PYTHONPATH``: a command a test starts (a script, torchrun,
    ``ns-train``) imports gnerf from the tree under test even where another checkout is the editable install."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
