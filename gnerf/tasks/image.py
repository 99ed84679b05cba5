"""2D image fitting (paper sec. 3.2, supplementary sec. 4.1).

The image is resized to 256x256 (``--size``; a note is printed when that changes its aspect ratio),
pixel ``(x, y)`` coordinates span [-1, 1]^2, the network maps them to RGB and is trained with MSE on
shuffled minibatches of 512 pixels for 200 epochs (the paper's protocol and the configurations
published with it). After every epoch the whole image is reconstructed and its PSNR and SSIM (predictions
clipped to [0, 1]) are reported, and its LPIPS when the AlexNet weights are on disk (one AlexNet pass on
images of at least 32 x 32; see :func:`gnerf.metrics.lpips_metric`).

Outputs besides the loop's (see :mod:`gnerf.tasks.loop`): ``target.png`` (the image as fitted,
after resizing) and ``reconstruction.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from torch import nn

from gnerf.files import atomic_write_image
from gnerf.metrics import lpips_metric, mse, psnr, ssim
from gnerf.tasks import dist as gdist
from gnerf.tasks.build import predict
from gnerf.tasks.config import FitConfig, FitResult, Problem
from gnerf.tasks.io import check_size, grid_coordinates, read_image, resize_image
from gnerf.tasks.loop import fit
from gnerf.tasks.run import hold_run_folder, prepare_run, writing_outputs

__all__ = ["IMAGE_SIGMA", "ImageFitConfig", "fit_image"]

#: The paper's Gaussian width for images.
IMAGE_SIGMA = 0.05


@dataclass(kw_only=True)
class ImageFitConfig(FitConfig):
    """Fit an RGB image with a coordinate network."""

    image: Path
    """The RGB image to fit (PNG, JPEG, ...)."""
    size: Optional[Tuple[int, int]] = (256, 256)
    """(height, width) to resize to before fitting; None keeps the file's size. At most 8192 x 8192 pixels."""
    epochs: int = 200
    """Passes over the pixels (the paper: 200 epochs of 512-pixel minibatches = 25,600 steps at 256 x 256)."""


def _squash_note(path: Path, native: Tuple[int, int], size: Tuple[int, int]) -> Optional[str]:
    """A line saying that resizing ``native`` (height, width) to ``size`` changes the aspect ratio, or None."""
    (h, w), (th, tw) = native, size
    if abs(h * tw - w * th) <= 0.01 * w * th:
        return None
    return (
        f"note: image {str(path)!r} ({h} x {w}, height x width) is squashed to {th} x {tw}; to keep its aspect "
        f"ratio pass --size {th} {max(1, round(th * w / h))}, or --size None to fit it at its own size"
    )


def fit_image(cfg: ImageFitConfig) -> FitResult:
    """Run the image-fitting protocol of ``cfg``; returns the trained model and its metrics."""
    check_size(cfg.size)
    run = prepare_run("image", Path(cfg.image).stem, cfg, {"--image": cfg.image})
    out, device = run.output_dir, run.device
    with hold_run_folder(run):
        image = read_image(cfg.image, None, limit=cfg.size is None)  # [H, W, 3]
        if cfg.size is not None:
            note = _squash_note(cfg.image, tuple(image.shape[:2]), cfg.size)
            if note is not None and gdist.rank() == 0:
                print(note, flush=True)
            image = resize_image(image, cfg.size)
        h, w = image.shape[:2]
        yx = grid_coordinates(h, w)
        coords = yx.flip(-1).to(device)  # (x, y)
        target = image.reshape(-1, 3).to(device)

        lpips = lpips_metric(device) if gdist.rank() == 0 else None
        target_image = target.reshape(h, w, 3)

        def evaluate(model: nn.Module) -> Dict[str, float]:
            recon = predict(model, coords, cfg.eval_batch_size).clamp(0.0, 1.0)
            metrics = {
                "psnr": psnr(mse(recon, target).item()),
                "ssim": ssim(recon.reshape(h, w, 3), target_image).item(),
            }
            score = lpips(recon.reshape(1, h, w, 3), target_image[None]) if lpips is not None else None
            if score is not None:
                metrics["lpips"] = score.item()
            return metrics

        result = fit(Problem(coords, target, mse, evaluate, IMAGE_SIGMA), run)
        if not result.is_main:  # torchrun: rank 0 writes the outputs
            return result
        with writing_outputs(run):
            recon = predict(result.model, coords, cfg.eval_batch_size).reshape(h, w, 3)
            atomic_write_image(out / "target.png", image)
            atomic_write_image(out / "reconstruction.png", recon)
    return result
