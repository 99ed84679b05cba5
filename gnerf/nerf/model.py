"""Gaussian-NeRF: one Gaussian radiance field, stratified samples, no hierarchical sampling."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from torch.nn import Parameter

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.ray_samplers import LinearDisparitySampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps

from gnerf.errors import InputError
from gnerf.metrics import mse, psnr
from gnerf.nerf.field import GaussianRadianceField
from gnerf.nerf.metrics import ImageMetrics

BLENDER_NEAR, BLENDER_FAR = 2.0, 6.0


@dataclass
class GaussianNeRFModelConfig(ModelConfig):
    """Gaussian-NeRF (GARF) with the paper's defaults (supplementary, sec. 4.3)."""

    _target: Type = field(default_factory=lambda: GaussianNeRFModel)
    num_samples: int = 128
    """Stratified samples per ray (a single model, no hierarchical or proposal sampling)."""
    sampling: Literal["auto", "uniform", "disparity"] = "auto"
    """Sample spacing: uniform in depth, linear in disparity (forward-facing scenes, as GARF), or
    auto: disparity when the dataparser marks the scene forward-facing, uniform otherwise."""
    enable_collider: bool = True
    """Clip every ray to the near and far planes of ``collider_params`` (nerfstudio's ``NearFarCollider``, built by
    ``Model.populate_modules``). Required: the samples lie between these planes, the model has no other bounds."""
    collider_params: Optional[Dict[str, float]] = None
    """The collider's ``near_plane`` and ``far_plane`` (``--pipeline.model.collider-params near_plane 2 far_plane 6``);
    None, or a plane left out: the dataparser's ``near_plane`` / ``far_plane`` metadata (LLFF: from the scene's
    bounds), else 2 and 6 (Blender)."""
    reset_near_plane: bool = False
    """The collider's ``reset_near_plane``: move the near plane to 0 outside training (nerfstudio's default). False:
    evaluation, ns-render and the viewer sample between the same planes as training (without the jitter)."""
    background_color: Literal["random", "last_sample", "black", "white"] = "white"
    """Background composited behind the field (Blender scenes have white backgrounds)."""
    architecture: Literal["gnerf", "garf"] = "gnerf"
    """Field network. gnerf: the trunk and heads sized by the fields below. garf: the network of GARF's
    published code (centred Gaussian on the first xyz and direction layers, six 256-wide Gaussian layers with
    the first layer's embedding concatenated before the last, 256-wide direction embedding, 512 -> 128 -> 3
    colour head), whose sizes are fixed: it takes sigma and position_scale, and refuses the size fields
    (hidden_dim through color_num_layers) at values other than their defaults."""
    sigma: float = 0.1
    """Width of every Gaussian activation."""
    hidden_dim: int = 256
    """Trunk width."""
    num_layers: int = 9
    """Trunk linear layers, output included (eight hidden layers)."""
    skip_connections: Tuple[int, ...] = (5,)
    """Trunk layers that receive xyz again."""
    feature_dim: int = 256
    """Feature size passed from the trunk to the colour head."""
    direction_dim: int = 64
    """Size of the Gaussian embedding of the view direction (0: no view dependence)."""
    color_hidden_dim: int = 128
    """Colour head width."""
    color_num_layers: int = 2
    """Colour head linear layers, output included."""
    position_scale: float = 1.0
    """xyz is multiplied by this before entering the field."""
    loss_coefficients: Dict[str, float] = field(default_factory=lambda: {"rgb_loss": 1.0})
    """Weight of each loss term."""
    eval_num_rays_per_chunk: int = 4096
    """Rays rendered at once during evaluation."""


def skip_connections_for(num_layers: int) -> Tuple[int, ...]:
    """The trunk layers that receive xyz again in a trunk of ``num_layers`` linear layers: the registered ones
    at the registered depth (the paper's (5,) of 9), else the middle layer (none below 3 layers)."""
    registered = GaussianNeRFModelConfig()
    if num_layers == registered.num_layers:
        return tuple(registered.skip_connections)
    return (num_layers // 2,) if num_layers > 2 else ()


#: The fields that size the gnerf network; GARF's published network has fixed sizes.
SIZE_FIELDS = (
    "hidden_dim",
    "num_layers",
    "skip_connections",
    "feature_dim",
    "direction_dim",
    "color_hidden_dim",
    "color_num_layers",
)


def field_sizes(config: GaussianNeRFModelConfig) -> Dict[str, object]:
    """The size arguments of the field: the size fields for ``gnerf``; none for ``garf``, which refuses
    (:class:`InputError`) any size field set to other than its default."""
    if config.architecture != "garf":
        return {name: getattr(config, name) for name in SIZE_FIELDS}
    defaults = GaussianNeRFModelConfig()
    changed = [name for name in SIZE_FIELDS if _as_tuple(getattr(config, name)) != getattr(defaults, name)]
    if changed:
        options = ", ".join("--pipeline.model." + name.replace("_", "-") for name in changed)
        raise InputError(
            f"--pipeline.model.architecture garf has fixed sizes and does not take {options}: leave "
            "the size options at their defaults, or use --pipeline.model.architecture gnerf"
        )
    return {}


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value  # skip_connections read back from a config.yml


def collider_planes(config: GaussianNeRFModelConfig, metadata: Dict) -> Dict[str, float]:
    """``collider_params`` completed with the dataparser's planes (``metadata``), else Blender's; checked."""
    option = "--pipeline.model.collider-params"
    if not config.enable_collider:
        raise InputError(
            "--pipeline.model.enable-collider False: Gaussian-NeRF samples between the collider's near "
            f"and far planes and has no other bounds; keep it True and set the planes with {option}"
        )
    given = dict(config.collider_params or {})
    unknown = sorted(set(given) - {"near_plane", "far_plane"})
    if unknown:
        raise InputError(f"{option}: unknown key(s) {', '.join(unknown)}; it takes near_plane and far_plane")
    near = float(given.get("near_plane", metadata.get("near_plane", BLENDER_NEAR)))
    far = float(given.get("far_plane", metadata.get("far_plane", BLENDER_FAR)))
    if not 0 <= near < far < math.inf:
        raise InputError(
            f"{option}: need 0 <= near_plane < far_plane, got near_plane {near}, far_plane {far}; "
            f"set both, e.g. {option} near_plane 2 far_plane 6"
        )
    return {"near_plane": near, "far_plane": far}


class GaussianNeRFModel(Model):
    """Renders a :class:`GaussianRadianceField` with stratified samples and classic volume rendering."""

    config: GaussianNeRFModelConfig

    def populate_modules(self) -> None:
        c = self.config
        metadata = self.kwargs.get("metadata") or {}
        # nerfstudio's Model.populate_modules builds the NearFarCollider from collider_params: give it the planes,
        # from the dataparser where collider_params leaves them out
        self.config = dataclasses.replace(c, collider_params=collider_planes(c, metadata))
        super().populate_modules()
        self.collider.reset_near_plane = c.reset_near_plane  # a NearFarCollider argument collider_params cannot hold
        self.near_plane, self.far_plane = self.collider.near_plane, self.collider.far_plane

        sampling = c.sampling
        if sampling == "auto":
            sampling = "disparity" if metadata.get("forward_facing", False) else "uniform"
        self.sampling = sampling
        sampler_cls = LinearDisparitySampler if sampling == "disparity" else UniformSampler
        self.sampler = sampler_cls(num_samples=c.num_samples, train_stratified=True)

        self.field = GaussianRadianceField(
            sigma=c.sigma,
            position_scale=c.position_scale,
            architecture=c.architecture,
            **field_sizes(c),
        )
        self.renderer_rgb = RGBRenderer(background_color=c.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="expected")
        self.image_metrics = ImageMetrics()

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {"fields": list(self.field.parameters())}

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, torch.Tensor]:
        ray_samples = self.sampler(ray_bundle)
        field_outputs = self.field(ray_samples)
        weights = ray_samples.get_weights(field_outputs[FieldHeadNames.DENSITY])
        return {
            "rgb": self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights),
            "accumulation": self.renderer_accumulation(weights),
            "depth": self.renderer_depth(weights, ray_samples),
        }

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        image = batch["image"].to(outputs["rgb"].device)
        pred, gt = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=image
        )
        return {"rgb_loss": self.config.loss_coefficients["rgb_loss"] * mse(pred, gt)}

    def get_metrics_dict(self, outputs, batch) -> Dict[str, torch.Tensor]:
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb"].device))
        return {"psnr": psnr(mse(outputs["rgb"].detach(), image))}

    def get_image_metrics_and_images(
        self, outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb"].device))
        rgb = outputs["rgb"]
        metrics = self.image_metrics(torch.moveaxis(image, -1, 0)[None], torch.moveaxis(rgb, -1, 0)[None])
        acc = colormaps.apply_colormap(outputs["accumulation"])
        depth = colormaps.apply_depth_colormap(
            outputs["depth"], accumulation=outputs["accumulation"], near_plane=self.near_plane, far_plane=self.far_plane
        )
        images = {"img": torch.cat([image, rgb], dim=1), "accumulation": acc, "depth": depth}
        return metrics, images
