"""Fixtures every test file may use (pytest puts the repository root on ``sys.path``: ``pythonpath`` in pyproject.toml).

Paths to the repository and the shared data are in ``shared_data.py``; helpers for the fitting
tasks, the nerfstudio plugin and multi-process runs in ``helpers_tasks.py``, ``nerf_helpers.py``
and ``dist_helpers.py``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Give every test torch's thread count as it found it (the setting is process-wide; runs set ``threads=1``)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread(restore_torch_threads):
    """Tiny problems: one thread avoids oversubscription on a busy machine (restored afterwards)."""
    torch.set_num_threads(1)


@pytest.fixture
def image(tmp_path):
    """An 8 x 8 RGB PNG (two ramps and a constant) in the test's folder: a fitting run of a second."""
    from gnerf.files import atomic_write_image

    g = torch.linspace(0, 1, 8)
    img = torch.stack([g[:, None].expand(8, 8), g[None, :].expand(8, 8), 0.5 * torch.ones(8, 8)], -1)
    path = tmp_path / "tiny.png"
    atomic_write_image(path, img)
    return path
