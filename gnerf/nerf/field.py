"""The Gaussian-activated radiance field (GARF, Chng et al., ECCV 2022) as a nerfstudio ``Field``.

Two architectures. ``"gnerf"`` (the default): raw xyz goes into a Gaussian-activated trunk
built from the shared :class:`~gnerf.fields.CoordinateMLP` (no positional encoding, raw xyz
again at the skip layers). The trunk's linear output is split into a raw density, passed
through softplus, and a feature vector. The ray direction is embedded by a linear layer
followed by a Gaussian activation, concatenated with the feature, and a small
Gaussian-activated colour head with a sigmoid gives RGB.

``"garf"``: the network of GARF's published code, fixed sizes (:class:`GARFTrunk`; the
direction embedding is 256 wide with a centred Gaussian, the colour head 512 -> 128 -> 3).
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field

from gnerf.fields import CentredGaussian, CoordinateMLP, Gaussian


class GARFTrunk(nn.Module):
    """GARF's position network as published: xyz -> (raw density, 256 features).

    ``Linear(3, 256)`` with a :class:`~gnerf.fields.CentredGaussian` gives the embedding; six
    Gaussian layers 256 wide follow, the last of which also takes the embedding
    (``[embedding, h]``, 512 inputs); then ``Linear(256, 1)`` gives the raw density and
    ``Linear(256, 256)`` the feature. PyTorch's default initialisation throughout.

    Args:
        sigma: width of every Gaussian.
    """

    width = 256

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        w = self.width
        self.embedding = nn.Sequential(nn.Linear(3, w), CentredGaussian(sigma))
        self.layers = nn.ModuleList([nn.Linear(w, w) for _ in range(5)] + [nn.Linear(2 * w, w)])
        self.activation = Gaussian(sigma)
        self.density = nn.Linear(w, 1)
        self.feature = nn.Linear(w, w)

    def forward(self, x: Tensor) -> Tensor:
        """``[raw density, feature]`` along the last dimension, as the ``"gnerf"`` trunk returns them."""
        embedding = self.embedding(x)
        h = embedding
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        h = self.activation(self.layers[-1](torch.cat([embedding, h], dim=-1)))
        return torch.cat([self.density(h), self.feature(h)], dim=-1)


class GaussianRadianceField(Field):
    """Gaussian radiance field.

    Args:
        sigma: Gaussian activation width for every layer (the paper: 0.1).
        hidden_dim: trunk width.
        num_layers: trunk linear layers, output layer included (9: eight 256-wide hidden layers).
        skip_connections: trunk layers that also receive the raw xyz input.
        feature_dim: size of the feature passed from the trunk to the colour head.
        direction_dim: size of the Gaussian embedding of the ray direction (0 disables view dependence).
        color_hidden_dim: width of the colour head.
        color_num_layers: linear layers of the colour head, output included.
        position_scale: xyz is multiplied by this before the trunk.
        architecture: ``"gnerf"``, sized by the arguments above, or ``"garf"``, GARF's published
            network, which takes only ``sigma`` and ``position_scale`` from them.
    """

    def __init__(
        self,
        sigma: float = 0.1,
        hidden_dim: int = 256,
        num_layers: int = 9,
        skip_connections: Sequence[int] = (5,),
        feature_dim: int = 256,
        direction_dim: int = 64,
        color_hidden_dim: int = 128,
        color_num_layers: int = 2,
        position_scale: float = 1.0,
        architecture: Literal["gnerf", "garf"] = "gnerf",
    ) -> None:
        super().__init__()
        gaussian = {"sigma": sigma}
        self.position_scale = float(position_scale)
        self.trunk: nn.Module
        if architecture == "garf":
            self.trunk = GARFTrunk(sigma)
            feature_dim = direction_dim = GARFTrunk.width
            color_hidden_dim, color_num_layers = GARFTrunk.width // 2, 2
            direction_activation: nn.Module = CentredGaussian(sigma)
        elif architecture == "gnerf":
            self.trunk = CoordinateMLP(
                3,
                1 + feature_dim,
                hidden_dim=hidden_dim,
                num_layers=num_layers,
                activation="gaussian",
                activation_kwargs=gaussian,
                skip_connections=skip_connections,
            )
            direction_activation = Gaussian(sigma)
        else:
            raise ValueError(f"unknown architecture {architecture!r}; choose gnerf or garf")
        self.direction_embedding: Optional[nn.Module] = (
            nn.Sequential(nn.Linear(3, direction_dim), direction_activation) if direction_dim > 0 else None
        )
        self.color_head = CoordinateMLP(
            feature_dim + max(direction_dim, 0),
            3,
            hidden_dim=color_hidden_dim,
            num_layers=color_num_layers,
            activation="gaussian",
            activation_kwargs=gaussian,
        )

    def get_density(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        positions = ray_samples.frustums.get_positions() * self.position_scale
        out = self.trunk(positions)
        density = F.softplus(out[..., :1])
        return density, out[..., 1:]

    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Optional[Tensor] = None
    ) -> Dict[FieldHeadNames, Tensor]:
        assert density_embedding is not None
        features = [density_embedding]
        if self.direction_embedding is not None:
            features.append(self.direction_embedding(ray_samples.frustums.directions))
        rgb = torch.sigmoid(self.color_head(torch.cat(features, dim=-1)))
        return {FieldHeadNames.RGB: rgb}
