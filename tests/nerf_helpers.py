"""Shared helpers for the nerfstudio plugin tests: the registered methods at CPU-test size."""

from __future__ import annotations

from pathlib import Path

from benchmarks.recipes import method_config, train  # noqa: F401  (re-exported for the tests)


def tiny_config(
    method: str,
    data: Path,
    output_dir: Path,
    iterations: int = 12,
    precondition_warmup_steps: int = 3,
    precondition_frequency: int = 4,
    dataparser=None,
):
    """The registered method's config with tiny sizes: 64 rays x 16 samples, a 32-wide 3-layer trunk."""
    return method_config(
        method,
        data,
        output_dir,
        iterations=iterations,
        rays=64,
        samples=16,
        hidden_dim=32,
        num_layers=3,
        skip_connections=(1,),
        direction_dim=8,
        color_hidden_dim=16,
        curvature_cadence=(precondition_warmup_steps, precondition_frequency),
        dataparser=dataparser,
        experiment_name="test",
    )


def nan_loss_after(monkeypatch, finite_steps: int) -> None:
    """Make the Gaussian-NeRF loss finite for ``finite_steps`` steps, then NaN (0: NaN from the first step)."""
    from gnerf.nerf.model import GaussianNeRFModel

    real = GaussianNeRFModel.get_loss_dict
    calls = []

    def loss(self, outputs, batch, metrics_dict=None):
        calls.append(1)
        scale = 1.0 if len(calls) <= finite_steps else float("nan")
        return {k: v * scale for k, v in real(self, outputs, batch, metrics_dict).items()}

    monkeypatch.setattr(GaussianNeRFModel, "get_loss_dict", loss)
