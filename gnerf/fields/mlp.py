"""The one coordinate MLP shared by the radiance field and every fitting task."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from gnerf.fields.activations import PositionalEncoding, make_activation, siren_init_

ActivationSpec = Union[str, Sequence[str]]
KwargsSpec = Optional[Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]]


class CoordinateMLP(nn.Module):
    """A coordinate network: optional positional encoding, ``num_layers`` linear layers.

    ``num_layers`` counts linear layers, the output layer included, so the paper's
    "5-layer network, 256 neurons per hidden layer" is ``num_layers=5, hidden_dim=256``:
    four activated hidden layers and a linear output.

    Args:
        in_dim: size of the input coordinates.
        out_dim: size of the output.
        hidden_dim: width of every hidden layer.
        num_layers: number of linear layers (>= 1).
        activation: one name for every hidden layer, or one name per hidden layer
            (``num_layers - 1`` names); see :data:`gnerf.fields.activations.ACTIVATIONS`.
        activation_kwargs: hyperparameters for the activation(s), one mapping for all or one
            per hidden layer, e.g. ``{"sigma": 0.05}``.
        skip_connections: indices of linear layers (``1 .. num_layers - 1``) whose input is the
            previous hidden features concatenated with the (encoded) network input.
        positional_encoding: number of frequencies ``L`` of the encoding
            ``[cos(2^k pi x), sin(2^k pi x)]``, ``k < L``; ``0`` feeds raw coordinates.
        init: ``"default"`` keeps PyTorch's Kaiming-uniform initialisation, ``"siren"`` applies
            the SIREN scheme (needs sine activations), ``"auto"`` picks ``"siren"`` when every
            hidden activation is a sine and ``"default"`` otherwise.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 5,
        activation: ActivationSpec = "gaussian",
        activation_kwargs: KwargsSpec = None,
        skip_connections: Sequence[int] = (),
        positional_encoding: int = 0,
        init: str = "auto",
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if in_dim < 1 or out_dim < 1 or hidden_dim < 1:
            raise ValueError(f"in_dim, out_dim and hidden_dim must be >= 1, got {in_dim}, {out_dim}, {hidden_dim}")
        num_hidden = num_layers - 1
        names = [activation] * num_hidden if isinstance(activation, str) else list(activation)
        if len(names) != num_hidden:
            raise ValueError(f"got {len(names)} activations for {num_hidden} hidden layers (num_layers={num_layers})")
        if activation_kwargs is None or isinstance(activation_kwargs, Mapping):
            kwargs_list = [dict(activation_kwargs or {})] * num_hidden
        else:
            kwargs_list = [dict(k) for k in activation_kwargs]
            if len(kwargs_list) != num_hidden:
                raise ValueError(f"got {len(kwargs_list)} activation_kwargs for {num_hidden} hidden layers")
        self.skip_connections = tuple(sorted(set(int(i) for i in skip_connections)))
        for i in self.skip_connections:
            if not 1 <= i < num_layers:
                raise ValueError(f"skip connection index {i} must lie in 1..{num_layers - 1}")

        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.encoding: Optional[PositionalEncoding] = (
            PositionalEncoding(in_dim, positional_encoding) if positional_encoding > 0 else None
        )
        enc_dim = self.encoding.out_dim if self.encoding is not None else in_dim

        self.layers = nn.ModuleList()
        self.activations = nn.ModuleList()
        for i in range(num_layers):
            fan_in = enc_dim if i == 0 else hidden_dim + (enc_dim if i in self.skip_connections else 0)
            fan_out = out_dim if i == num_layers - 1 else hidden_dim
            self.layers.append(nn.Linear(fan_in, fan_out))
        for name, kw in zip(names, kwargs_list):
            self.activations.append(make_activation(name, **kw))

        if init == "auto":
            init = "siren" if names and all(n.lower() == "sine" for n in names) else "default"
        if init == "siren":
            omegas = [getattr(a, "omega", None) for a in self.activations]
            if not omegas or any(o is None for o in omegas):
                raise ValueError("init='siren' needs sine activations on every hidden layer")
            for i, layer in enumerate(self.layers):
                # layer i feeds activation i; the linear output layer reuses the last omega
                siren_init_(layer, omega=omegas[min(i, len(omegas) - 1)], is_first=(i == 0))
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; choose 'auto', 'default' or 'siren'")

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"CoordinateMLP expects inputs with last dimension {self.in_dim}, got {tuple(x.shape)}")
        inp = self.encoding(x) if self.encoding is not None else x
        h = inp
        for i, layer in enumerate(self.layers):
            if i in self.skip_connections:
                h = torch.cat([h, inp], dim=-1)
            h = layer(h)
            if i < len(self.activations):
                h = self.activations[i](h)
        return h

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, skip_connections={self.skip_connections}"


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["CoordinateMLP", "count_parameters"]
