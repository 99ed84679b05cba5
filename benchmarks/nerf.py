"""Benchmarks (4) and (5): gaussian-nerf-esgd against nerfstudio's vanilla-nerf (coarse network) on lego.

Both trainers are built in this one process with the same data (lego, same downscale), the same
rays per step and the same samples per ray, and step **in turn** (one step of each, order swapped
every step), each method's clock counting only its own steps, so machine noise hits both alike.

* (4) throughput: rays per second of gaussian-nerf-esgd, gaussian-nerf-adam and vanilla-nerf (coarse)
  over a window after the warm-up (gaussian-nerf-esgd's window holds its curvature steps at the
  cadence stated), and the time a 200,000-step run would take at that rate.
* (5) convergence per second: test PSNR against each method's own training wall time, over the
  same time budget; evaluation is paused off the clock.

Offline LPIPS: nerfstudio's ``NeRFModel.populate_modules`` builds torchmetrics'
``LearnedPerceptualImagePatchSimilarity``, which downloads AlexNet weights and fails offline. In this
benchmark only, :func:`offline_lpips` swaps that class for a stub that builds without weights and
raises if it is ever called (nothing here evaluates LPIPS; PSNR is computed directly).

Coarse network only: vanilla-nerf always runs its fine network (``num_importance_samples`` cannot be
0 by config), so :class:`CoarseOnlyNeRFModel` (benchmark only) renders and trains the coarse field
alone, i.e. nerfstudio's NeRF field (positional encoding, 8 x 256 + skip, RAdam 5e-4) on the same
uniform samples as the Gaussian field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from benchmarks.common import machine, section, sync, table, tf32_matmuls
from gnerf.metrics import mse, psnr
from gnerf.optim.defaults import PAPER

METHODS = ("gaussian-nerf-esgd", "vanilla-nerf (coarse)")


@contextlib.contextmanager
def offline_lpips():
    """Within the block, torchmetrics' LPIPS builds without weights and raises if called."""
    import torchmetrics.image.lpip as lpip

    class NoLPIPS(torch.nn.Module):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

        def forward(self, *args, **kwargs):
            raise RuntimeError("LPIPS is stubbed out in gnerf's benchmarks (no AlexNet weights offline)")

    original = lpip.LearnedPerceptualImagePatchSimilarity
    lpip.LearnedPerceptualImagePatchSimilarity = NoLPIPS
    try:
        yield
    finally:
        lpip.LearnedPerceptualImagePatchSimilarity = original


def _coarse_only_model_class():
    from nerfstudio.models.vanilla_nerf import NeRFModel

    class CoarseOnlyNeRFModel(NeRFModel):
        """vanilla-nerf with its fine network and PDF sampling skipped (benchmark only)."""

        def get_outputs(self, ray_bundle):
            from nerfstudio.field_components.field_heads import FieldHeadNames

            samples = self.sampler_uniform(ray_bundle)
            out = self.field_coarse.forward(samples)
            weights = samples.get_weights(out[FieldHeadNames.DENSITY])
            rgb = self.renderer_rgb(rgb=out[FieldHeadNames.RGB], weights=weights)
            acc = self.renderer_accumulation(weights)
            depth = self.renderer_depth(weights, samples)
            return {
                "rgb_coarse": rgb,
                "rgb_fine": rgb,
                "accumulation_coarse": acc,
                "accumulation_fine": acc,
                "depth_coarse": depth,
                "depth_fine": depth,
                "rgb": rgb,
            }

        def get_loss_dict(self, outputs, batch, metrics_dict=None):
            pred, image = self.renderer_rgb.blend_background_for_loss_computation(
                pred_image=outputs["rgb_coarse"],
                pred_accumulation=outputs["accumulation_coarse"],
                gt_image=batch["image"].to(outputs["rgb_coarse"].device),
            )
            return {"rgb_loss_coarse": self.rgb_loss(image, pred)}

        def get_param_groups(self):
            return {"fields": list(self.field_coarse.parameters())}

    return CoarseOnlyNeRFModel


@dataclasses.dataclass
class NerfSize:
    rays: int
    samples: int
    image_scale: float
    cadence: Tuple[int, int]  # gaussian-nerf-esgd (precondition_warmup_steps, precondition_frequency)


def size(
    quick: bool, rays: Optional[int] = None, samples: Optional[int] = None, image_scale: Optional[float] = None
) -> NerfSize:
    """quick: a 2-core CPU; otherwise the paper's rays and samples; each may be overridden."""
    paper = (PAPER.precondition_warmup_steps, PAPER.precondition_frequency)
    sz = NerfSize(64, 32, 0.25, (5, paper[1])) if quick else NerfSize(2048, 128, 1.0, paper)
    return dataclasses.replace(
        sz, rays=rays or sz.rays, samples=samples or sz.samples, image_scale=image_scale or sz.image_scale
    )


#: The learning rates of an optimizer config (the lr, and the second algorithm's of a two-algorithm optimizer) and of a
#: scheduler config (absolute values a schedule starts from or reaches) that :func:`scale_lrs` multiplies.
OPTIMIZER_LRS = ("lr", "adam_lr", "esgd_lr")
SCHEDULER_LRS = ("lr_final", "lr_final_forward_facing", "lr_pre_warmup")


def scale_lrs(cfg, scale: float) -> None:
    """Multiply every learning rate of ``cfg``'s optimizer groups by ``scale``: the optimizers' lrs
    (:data:`OPTIMIZER_LRS`) and their schedules' absolute lrs (:data:`SCHEDULER_LRS`), so each schedule keeps its shape
    and every ratio between a method's lrs stays as registered. ``cfg.optimizers`` is replaced by a new dict of new
    groups, so a registered config that ``cfg`` was shallow-copied from keeps its lrs."""
    if scale == 1.0:
        return

    def scaled(part, names):
        if part is None:
            return None
        return dataclasses.replace(
            part, **{n: getattr(part, n) * scale for n in names if isinstance(getattr(part, n, None), float)}
        )

    cfg.optimizers = {
        name: {
            **group,
            "optimizer": scaled(group["optimizer"], OPTIMIZER_LRS),
            "scheduler": scaled(group.get("scheduler"), SCHEDULER_LRS),
        }
        for name, group in cfg.optimizers.items()
    }


def build(
    method: str,
    data: Path,
    out: Path,
    sz: NerfSize,
    iterations: int,
    device: str,
    test_mode: str = "val",
    architecture: str = "gnerf",
    lr_scale: float = 1.0,
):
    """A trainer at ``sz`` for a registered Gaussian method (``benchmarks.recipes.METHODS``, the field's
    ``architecture`` as given) or ``"vanilla-nerf (coarse)"``; ``test_mode="test"``: evaluate on the test split;
    ``lr_scale``: every learning rate times this (:func:`scale_lrs`)."""
    from benchmarks.recipes import METHODS as GAUSSIAN_METHODS
    from benchmarks.recipes import method_config, setup_trainer

    if method in GAUSSIAN_METHODS:  # the registered size: 9 x 256 GARF trunk
        cfg = method_config(
            method,
            data,
            out,
            iterations=iterations,
            rays=sz.rays,
            samples=sz.samples,
            hidden_dim=256,
            num_layers=9,
            skip_connections=(5,),
            image_scale=sz.image_scale,
            device=device,
            curvature_cadence=sz.cadence,
            experiment_name="gaussian",
        )
        cfg.pipeline.model = dataclasses.replace(cfg.pipeline.model, architecture=architecture)
    elif method == "vanilla-nerf (coarse)":
        from nerfstudio.configs.method_configs import method_configs

        base = method_configs["vanilla-nerf"]
        cfg = dataclasses.replace(base)
        dm = dataclasses.replace(
            cfg.pipeline.datamanager,
            data=data,
            train_num_rays_per_batch=sz.rays,
            eval_num_rays_per_batch=sz.rays,
            camera_res_scale_factor=sz.image_scale,
        )
        model = dataclasses.replace(
            cfg.pipeline.model, _target=_coarse_only_model_class(), num_coarse_samples=sz.samples
        )
        cfg.pipeline = dataclasses.replace(cfg.pipeline, datamanager=dm, model=model)
        cfg.max_num_iterations = iterations
        cfg.steps_per_save = 10 * iterations + 1
        cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10 * iterations + 1
        cfg.vis = "tensorboard"
        cfg.machine = dataclasses.replace(cfg.machine, device_type=device)
        cfg.output_dir, cfg.experiment_name, cfg.timestamp = out, "vanilla", "run"
    else:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(GAUSSIAN_METHODS)} or 'vanilla-nerf (coarse)'"
        )
    cfg.logging.local_writer.enable = False
    scale_lrs(cfg, lr_scale)
    with offline_lpips():
        trainer = setup_trainer(cfg, test_mode=test_mode)
    trainer.pipeline.train()
    return trainer


def _step(trainer, step: int, device: str, tf32: bool = False) -> float:
    sync(device)
    t0 = time.perf_counter()
    with tf32_matmuls(tf32):
        trainer.train_iteration(step)
        sync(device)
    return time.perf_counter() - t0


class TestViews:
    """``count`` test views evenly spaced over the test split, rendered at a fraction of the training resolution; targets kept on the device."""

    def __init__(self, trainer, count: int, scale: float = 1.0) -> None:
        model, dataset = trainer.pipeline.model, trainer.pipeline.datamanager.eval_dataset
        n = len(dataset)
        self.indices = list(range(0, n, max(n // count, 1)))[:count]
        self.cameras, self.targets, self.names = [], [], []
        for i in self.indices:
            camera = dataset.cameras[i : i + 1].to(model.device)
            if scale != 1.0:
                camera.rescale_output_resolution(scale)
            h, w = int(camera.height[0, 0]), int(camera.width[0, 0])
            image = model.renderer_rgb.blend_background(dataset[i]["image"].to(model.device))[..., :3]
            if image.shape[:2] != (h, w):  # area average: the mean colour over each rendered pixel's footprint
                image = F.interpolate(image.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
            self.cameras.append(camera)
            self.targets.append(image)
            self.names.append(Path(dataset.image_filenames[i]).name)
        self.height, self.width = self.targets[0].shape[:2]

    @torch.no_grad()
    def metrics(self, trainer) -> Dict[str, float]:
        """Mean PSNR (dB) and SSIM (torchmetrics', Gaussian window 11 x 11, sigma 1.5) over the views."""
        from torchmetrics.functional import structural_similarity_index_measure

        model = trainer.pipeline.model
        model.eval()
        total = {"psnr": 0.0, "ssim": 0.0}
        side = min(self.height, self.width)
        window = min(11, side if side % 2 else side - 1)  # 11 but on images smaller than that (tiny rehearsals)
        for camera, target in zip(self.cameras, self.targets):
            pred = model.get_outputs_for_camera(camera)["rgb"].clamp(0, 1)
            total["psnr"] += float(psnr(mse(pred, target)))
            total["ssim"] += float(
                structural_similarity_index_measure(
                    pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None], data_range=1.0, kernel_size=window
                )
            )
        model.train()
        return {k: v / len(self.cameras) for k, v in total.items()}

    def psnr(self, trainer) -> float:
        return self.metrics(trainer)["psnr"]


PLAIN = "gaussian-nerf-esgd, plain Gaussian"  # (4) --plain-gaussian: the activation as autograd of exp(c x^2)
TF32 = "gaussian-nerf-esgd, TF32"  # (4) --tf32: TF32 matmuls (a GPU's tensor cores) around its steps
VARIANTS = {PLAIN: "gaussian-nerf-esgd", TF32: "gaussian-nerf-esgd"}


def _plain_gaussian(module, x):
    return torch.exp(x.square() * (-0.5 / module.sigma**2))


def setup_trainers(
    data: Path, tmp: Path, sz: NerfSize, iterations: int, device: str, methods: Tuple[str, ...] = METHODS
) -> Dict:
    """``{method: trainer}`` for ``methods`` (registered names, ``VARIANTS`` keys or vanilla-nerf), each in its own
    folder under ``tmp``, at ``sz`` for ``iterations`` steps."""
    if not (data / "transforms_train.json").exists():
        raise SystemExit(f"benchmarks (4)/(5): {data} is not a Blender-format scene; pass --data")
    trainers = {}
    for i, m in enumerate(methods):
        trainers[m] = build(VARIANTS.get(m, m), data, tmp / str(i), sz, iterations, device)
        if m == PLAIN:  # the same field computing each Gaussian as gnerf did before its fused activation
            from gnerf.fields.activations import Gaussian

            for module in trainers[m].pipeline.model.modules():
                if isinstance(module, Gaussian):
                    module.forward = _plain_gaussian.__get__(module)
    return trainers


def image_width(trainers) -> int:
    """The training images' width in pixels (after the downscale)."""
    return int(trainers[METHODS[0]].pipeline.datamanager.train_dataset.cameras.width[0].item())


def spec_line(sz: NerfSize, device: str, data: Path, px: int) -> str:
    """The one-line description of a nerf benchmark's set-up that heads its section."""
    return (
        f"{data.name} at {px}x{px} px (downscale {sz.image_scale}), {sz.rays} rays x {sz.samples} samples per step for both; gaussian-nerf-esgd: "
        f"9 x 256 GARF, ESGD-Max lr 1, curvature cadence (warm-up {sz.cadence[0]}, then every {sz.cadence[1]}); "
        f"vanilla-nerf: nerfstudio's NeRF field, coarse only, RAdam 5e-4; {machine(device)}"
    )


LPIPS_NOTE = (
    "nerfstudio's vanilla-nerf builds LPIPS (AlexNet weights, a download) at start-up: here "
    "`benchmarks.nerf.offline_lpips` swaps torchmetrics' LearnedPerceptualImagePatchSimilarity for a stub "
    "that raises if called, during set-up only; nothing here evaluates LPIPS"
)
COARSE_NOTE = (
    "vanilla-nerf's fine network cannot be disabled by config (get_outputs always runs PDF sampling and field_fine), "
    "so the benchmark-only subclass `CoarseOnlyNeRFModel` trains and renders the coarse field alone"
)


THROUGHPUT_METHODS = ("gaussian-nerf-esgd", "gaussian-nerf-adam", "vanilla-nerf (coarse)")
PAPER_STEPS = 200_000  # a paper-length run (supplementary, sec. 4.3)


def throughput(
    data: Path,
    device: str,
    quick: bool,
    sz: Optional[NerfSize] = None,
    plain_gaussian: bool = False,
    tf32: bool = False,
) -> Tuple[str, Dict]:
    """(4): rays per second of both registered methods and coarse vanilla-nerf, stepping in turn over the same steps.

    ``plain_gaussian``: also gaussian-nerf-esgd with its Gaussians computed as plain autograd of
    ``exp(c x^2)`` (:data:`PLAIN`), to measure the fused activation. ``tf32``: also gaussian-nerf-esgd
    with TF32 matmuls (:data:`TF32`; no effect on a CPU).
    """
    sz = sz or size(quick)
    methods = THROUGHPUT_METHODS + ((PLAIN,) if plain_gaussian else ()) + ((TF32,) if tf32 else ())
    warm, timed = (sz.cadence[0] + 2, 100) if quick else (sz.cadence[0] + 5, 300)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = setup_trainers(data, Path(tmp), sz, warm + timed, device, methods)
        px = image_width(trainers)
        secs = {m: 0.0 for m in methods}
        for step in range(warm + timed):
            for m in methods if step % 2 == 0 else methods[::-1]:
                dt = _step(trainers[m], step, device, tf32=m == TF32)
                if step >= warm:
                    secs[m] += dt
    rps = {m: timed * sz.rays / s for m, s in secs.items()}
    ref = rps["vanilla-nerf (coarse)"]
    rows = [
        (m, timed, 1e3 * secs[m] / timed, rps[m], rps[m] / ref, secs[m] / timed * PAPER_STEPS / 60) for m in methods
    ]
    body = table(
        [
            "method",
            "timed steps",
            "mean step (ms)",
            "rays / s",
            "rays/s vs vanilla-nerf (coarse)",
            f"{PAPER_STEPS:,} steps at this rate (min)",
        ],
        rows,
    )
    notes = [
        f"**throughput gaussian-nerf-esgd / vanilla-nerf (coarse) = {rps[methods[0]] / ref:.2f}**; "
        f"mean step gaussian-nerf-esgd / gaussian-nerf-adam = {rps[methods[1]] / rps[methods[0]]:.3f}",
        f"{warm} warm-up steps then {timed} timed steps each, the trainers stepping in turn (train_iteration: "
        "ray sampling, forward, loss, backward, optimizer and scheduler step)",
        LPIPS_NOTE,
        COARSE_NOTE,
    ]
    if plain_gaussian:
        notes.insert(
            1,
            f"fused Gaussian activation: gaussian-nerf-esgd at {rps[methods[0]] / rps[PLAIN]:.2f}x the rays/s "
            f"of the same method computing its Gaussians as plain autograd of exp(c x^2) ({PLAIN!r})",
        )
    return section("(4) End to end: training throughput", spec_line(sz, device, data, px), body, notes), rps


def convergence(
    data: Path,
    device: str,
    quick: bool,
    sz: Optional[NerfSize] = None,
    budget: Optional[float] = None,
    checkpoints: Optional[int] = None,
    figure: Optional[Path] = None,
) -> Tuple[str, Dict]:
    """(5): test PSNR against each method's own training wall time, over the same budget.

    ``figure``: also plot the two curves there (PNG).
    """
    sz = sz or size(quick)
    default_budget, default_checkpoints, n_views = (45.0, 3, 2) if quick else (600.0, 6, 8)
    budget, checkpoints = budget or default_budget, checkpoints or default_checkpoints
    marks = [budget * (k + 1) / checkpoints for k in range(checkpoints)]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = setup_trainers(data, Path(tmp), sz, 10**7, device)
        px = image_width(trainers)
        views = {m: TestViews(trainers[m], n_views) for m in METHODS}
        clock = {m: 0.0 for m in METHODS}
        steps = {m: 0 for m in METHODS}
        curve: Dict[str, List[Tuple[float, int, float]]] = {m: [] for m in METHODS}
        nxt = {m: 0 for m in METHODS}
        while any(nxt[m] < checkpoints for m in METHODS):
            for m in METHODS if sum(steps.values()) % 2 == 0 else METHODS[::-1]:
                if nxt[m] >= checkpoints:
                    continue
                clock[m] += _step(trainers[m], steps[m], device)
                steps[m] += 1
                if clock[m] >= marks[nxt[m]]:
                    curve[m].append((clock[m], steps[m], views[m].psnr(trainers[m])))
                    nxt[m] += 1
    rows = []
    for k in range(checkpoints):
        row = [f"{marks[k]:.0f}"]
        for m in METHODS:
            t, s, p = curve[m][k]
            row += [s, p]
        rows.append(row)
    body = table(
        [
            "training time (s)",
            "gaussian-nerf-esgd steps",
            "gaussian-nerf-esgd test PSNR (dB)",
            "vanilla-nerf (coarse) steps",
            "vanilla-nerf (coarse) test PSNR (dB)",
        ],
        rows,
    )
    final = {m: curve[m][-1][2] for m in METHODS}
    notes = [
        f"**test PSNR after {budget:.0f} s: gaussian-nerf-esgd {final[METHODS[0]]:.2f} dB, vanilla-nerf (coarse) "
        f"{final[METHODS[1]]:.2f} dB**",
        f"each method's clock counts only its own training steps (the trainers step in turn); PSNR is the mean "
        f"over {n_views} test views at the training resolution, rendered off the clock",
        LPIPS_NOTE,
        COARSE_NOTE,
    ]
    if figure is not None:
        plot_convergence(curve, figure, f"{data.name}, {sz.rays} rays x {sz.samples} samples, {machine(device)}")
        notes.append(f"figure: `{figure}`")
    return section("(5) Convergence per second", spec_line(sz, device, data, px), body, notes), curve


def plot_convergence(curve: Dict[str, List[Tuple[float, int, float]]], path: Path, title: str) -> None:
    """Test PSNR against training wall time, one line per method (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, points in curve.items():
        ax.plot([t for t, _, _ in points], [p for _, _, p in points], marker="o", label=m)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
