"""Where the tests find the repository and the shared data (``../shared/data`` next to the repository)."""

from __future__ import annotations

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
