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
