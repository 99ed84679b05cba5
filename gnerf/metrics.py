"""The error measures that gnerf reports everywhere: mean squared error, PSNR, SSIM and LPIPS.

Low in the import order (it imports only torch; LPIPS imports torchmetrics when it is built), so that the
fitting tasks, the nerfstudio model, the benchmarks and the tests share one definition.

SSIM is Wang et al.'s (2004): an 11 x 11 Gaussian window of sigma 1.5 (smaller, and odd, on images narrower
than 11 pixels), ``K1 = 0.01``, ``K2 = 0.03``, the mean over the window positions inside the image and over the
channels (torchmetrics' ``structural_similarity_index_measure`` with its defaults agrees to about 1e-4).
LPIPS (AlexNet, torchmetrics) is built only when torchvision's AlexNet weights are already on disk: gnerf never
downloads them (:func:`lpips_metric`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["ALEXNET_WEIGHTS", "alexnet_weights_path", "lpips_metric", "mse", "psnr", "ssim"]

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"


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


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """The mean SSIM of ``pred`` against ``target``, ``[..., H, W, C]`` images in ``[0, data_range]``, one value per
    image of the leading dimensions (a scalar for one ``[H, W, C]`` image); see the module docstring."""
    lead = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).double()
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2).double()
    size = min(11, h, w)
    size -= 1 - size % 2  # odd
    g = _gaussian_window(size, 1.5, x.dtype, x.device)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, size, size)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, kernel, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean(dim=(1, 2, 3)).reshape(lead).to(pred.dtype)


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights that LPIPS needs (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


def lpips_metric(device: Union[str, torch.device] = "cpu") -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """LPIPS (AlexNet) as ``metric(pred, target)`` on ``[N, H, W, 3]`` images in [0, 1] (the mean over N), or None
    when the AlexNet weights are not at :func:`alexnet_weights_path` (nothing is downloaded) or LPIPS cannot be
    built. Images smaller than 32 pixels a side are not measured (AlexNet's layers need more): None is returned
    for them by the metric."""
    if not alexnet_weights_path().is_file():
        return None
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device).eval()
    except Exception:  # a damaged weights file, a torchvision without AlexNet: report without LPIPS
        return None

    @torch.no_grad()
    def lpips(pred: Tensor, target: Tensor) -> Optional[Tensor]:
        if min(pred.shape[-3:-1]) < 32:
            return None
        scores = [
            metric(p[None].permute(0, 3, 1, 2).float(), t[None].permute(0, 3, 1, 2).float())
            for p, t in zip(pred.reshape(-1, *pred.shape[-3:]), target.reshape(-1, *target.shape[-3:]))
        ]
        return torch.stack(scores).mean()

    return lpips
