"""Image metrics for evaluation, with LPIPS built lazily so that training never needs its weights.

torchmetrics' LPIPS (AlexNet) downloads torchvision's ImageNet AlexNet weights when it is built.
gnerf builds it on the first evaluation instead of at start-up; when the weights can be neither
found in torch's hub cache nor downloaded, it prints one line saying so and how to supply them,
and evaluation reports PSNR and SSIM without LPIPS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch
from torch import Tensor, nn
from torchmetrics.functional import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from nerfstudio.utils.rich_utils import CONSOLE

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_WEIGHTS}"


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights that LPIPS needs."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


class LazyLPIPS:
    """LPIPS (AlexNet) built on first use; ``None`` results when its weights are unavailable.

    A plain object rather than an ``nn.Module`` so that the metric's weights never enter a
    model's ``state_dict`` (checkpoints stay loadable whether or not LPIPS was available).
    """

    def __init__(self) -> None:
        self._metric: Optional[nn.Module] = None
        self._failed = False

    def _build(self, device: torch.device) -> Optional[nn.Module]:
        if self._metric is None and not self._failed:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
            except Exception as err:  # no network and no cached weights, most often
                self._failed = True
                CONSOLE.print(
                    f"[yellow]LPIPS skipped: could not load the AlexNet weights ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:120]}). Put {ALEXNET_WEIGHTS} (from {ALEXNET_URL}) at "
                    f"{alexnet_weights_path()} to get LPIPS; PSNR and SSIM are still reported.[/yellow]",
                    soft_wrap=True,  # one line, however narrow the terminal
                )
                return None
        if self._metric is not None:
            self._metric.to(device)
        return self._metric

    def __call__(self, image: Tensor, prediction: Tensor) -> Optional[Tensor]:
        metric = self._build(image.device)
        return None if metric is None else metric(image, prediction)


class ImageMetrics:
    """PSNR, SSIM and (when available) LPIPS for ``[1, 3, H, W]`` images in ``[0, 1]``."""

    def __init__(self) -> None:
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.lpips = LazyLPIPS()

    def __call__(self, image: Tensor, prediction: Tensor) -> Dict[str, float]:
        prediction = prediction.clamp(0.0, 1.0)
        metrics = {
            "psnr": float(self.psnr.to(image.device)(prediction, image).item()),
            "ssim": float(structural_similarity_index_measure(prediction, image, data_range=1.0).item()),
        }
        lpips = self.lpips(image, prediction)
        if lpips is not None:
            metrics["lpips"] = float(lpips.item())
        return metrics
