"""The error measures that gnerf reports everywhere: mean squared error and PSNR.

Low in the import order (it imports only torch), so that the fitting tasks, the nerfstudio
model, the benchmarks and the tests share one definition.
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

__all__ = ["mse", "psnr"]


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of ``pred`` against ``target`` over all elements."""
    return (pred - target).square().mean()


def psnr(mse: Union[float, Tensor], peak: float = 1.0) -> Union[float, Tensor]:
    """Peak signal-to-noise ratio in dB of a mean squared error.

    A float gives a float (``inf`` for 0); a tensor gives a tensor, element-wise, with the error
    clamped at 1e-10 (at most 100 dB for ``peak`` 1) so that it stays finite and differentiable.
    """
    if isinstance(mse, Tensor):
        return -10.0 * torch.log10(mse.clamp_min(1e-10) / (peak * peak))
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)
