"""Activations and input encodings for coordinate networks.

Each activation is an ``nn.Module`` with its hyperparameters as attributes so
that a network prints what it is. The paper's defaults (supplementary, sec. 4):

===========  ===========================================  =======================
name         definition                                   defaults
===========  ===========================================  =======================
gaussian     ``exp(-x^2 / (2 sigma^2))``                   sigma = 0.05 (images),
                                                          0.09 (shapes), 0.1 (NeRF)
sine         ``sin(omega x)`` (+ SIREN initialisation)     omega = 30
wavelet      ``cos(omega0 x) * exp(-(s0 x)^2)``            omega0 = 10, s0 = 10
relu         ``max(x, 0)`` (usually with positional enc.)  L = 8 frequencies
===========  ===========================================  =======================

:class:`CentredGaussian` (GARF's first layers) is built directly: it is not among the names
:func:`make_activation` accepts, which are also the fitting tasks' ``--field.activation`` choices.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict

import torch
from torch import Tensor, nn


class _GaussianFunction(torch.autograd.Function):
    r"""``y = exp(c x^2)`` (``c = -1 / (2 sigma^2)``) with one temporary and hand-written derivatives.

    Autograd of ``torch.exp(x.square() * c)`` keeps three ``x``-sized temporaries and spends four
    elementwise passes on the backward; this keeps ``x`` and ``y`` only and computes
    :math:`\partial y / \partial x = 2 c\, x\, y` in place. The backward is written in
    differentiable operations on ``x`` and the saved output ``y`` (whose own graph leads back here), so
    double backward (Hessian-vector products), ``torch.func`` transforms and forward mode (``jvp``)
    give the same values as the plain expression.
    """

    generate_vmap_rule = True  # elementwise: torch.func.vmap applies it to the batched tensor

    @staticmethod
    def forward(x: Tensor, c: float) -> Tensor:
        return torch.square(x).mul_(c).exp_()

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Tensor) -> None:
        x, c = inputs
        ctx.c = c
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:
        x, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: out of place, so that this backward is differentiated too
            return grad * y * x * (2.0 * ctx.c), None
        return torch.mul(grad, x).mul_(y).mul_(2.0 * ctx.c), None

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, _c: Any) -> Tensor:
        x, y = ctx.saved_tensors
        return tangent * y * x * (2.0 * ctx.c)


def gaussian(x: Tensor, sigma: float) -> Tensor:
    """``exp(-x^2 / (2 sigma^2))``, elementwise (:class:`Gaussian`'s function)."""
    return _GaussianFunction.apply(x, -0.5 / sigma**2)


class Gaussian(nn.Module):
    """Gaussian activation ``exp(-x^2 / (2 sigma^2))`` (Ramasinghe & Lucey, 2022)."""

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"Gaussian activation needs sigma > 0, got sigma={sigma}")
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        return gaussian(x, self.sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class CentredGaussian(Gaussian):
    """Gaussian of each pre-activation's offset from the mean of its layer, ``exp(-(x - mean(x))^2 / (2 sigma^2))``.

    The mean is taken per point over the last dimension (the layer's channels). GARF (Chng et al.,
    2022) applies it to its first position layer and to its view-direction embedding.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x - x.mean(dim=-1, keepdim=True))


class Sine(nn.Module):
    """Sine activation ``sin(omega x)`` (SIREN, Sitzmann et al., 2020).

    Use with :func:`siren_init_` on the linear layers; :class:`~gnerf.fields.mlp.CoordinateMLP`
    does this automatically for ``activation="sine"``.
    """

    def __init__(self, omega: float = 30.0) -> None:
        super().__init__()
        self.omega = float(omega)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega * x)

    def extra_repr(self) -> str:
        return f"omega={self.omega}"


class GaborWavelet(nn.Module):
    """Real part of the Gabor wavelet ``cos(omega0 x) * exp(-(s0 x)^2)`` (WIRE, Saragadam et al., 2023)."""

    def __init__(self, omega0: float = 10.0, s0: float = 10.0) -> None:
        super().__init__()
        self.omega0 = float(omega0)
        self.s0 = float(s0)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cos(self.omega0 * x) * torch.exp(-((self.s0 * x) ** 2))

    def extra_repr(self) -> str:
        return f"omega0={self.omega0}, s0={self.s0}"


class PositionalEncoding(nn.Module):
    """Frequency encoding ``[cos(2^k pi x), sin(2^k pi x)]`` for ``k < num_frequencies``.

    Output size is ``in_dim * 2 * num_frequencies`` (plus ``in_dim`` with ``include_input``).
    The features are grouped as all cosines then all sines, each ordered by frequency then
    input coordinate.
    """

    def __init__(self, in_dim: int, num_frequencies: int = 8, include_input: bool = False) -> None:
        super().__init__()
        if num_frequencies < 1:
            raise ValueError(f"positional encoding needs num_frequencies >= 1, got {num_frequencies}")
        self.in_dim = int(in_dim)
        self.num_frequencies = int(num_frequencies)
        self.include_input = bool(include_input)
        freqs = (2.0 ** torch.arange(self.num_frequencies, dtype=torch.float32)) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * 2 * self.num_frequencies + (self.in_dim if self.include_input else 0)

    def forward(self, x: Tensor) -> Tensor:
        scaled = (x[..., None, :] * self.freqs[:, None]).flatten(-2)  # [..., L * in_dim]
        parts = [torch.cos(scaled), torch.sin(scaled)]
        if self.include_input:
            parts.insert(0, x)
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, num_frequencies={self.num_frequencies}, include_input={self.include_input}"


_ACTIVATIONS: Dict[str, Callable[..., nn.Module]] = {
    "gaussian": Gaussian,
    "sine": Sine,
    "wavelet": GaborWavelet,
    "relu": lambda: nn.ReLU(),
}

ACTIVATIONS = tuple(_ACTIVATIONS)
"""Names accepted by :func:`make_activation`."""


def make_activation(name: str, **kwargs: Any) -> nn.Module:
    """Build an activation by name (one of :data:`ACTIVATIONS`) with its hyperparameters.

    >>> make_activation("gaussian", sigma=0.05)
    Gaussian(sigma=0.05)
    """
    key = name.lower().replace("_", "-")
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    try:
        return _ACTIVATIONS[key](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad hyperparameters {kwargs} for activation {name!r}: {err}") from None


@torch.no_grad()
def siren_init_(linear: nn.Linear, omega: float, is_first: bool) -> None:
    """SIREN initialisation (Sitzmann et al., 2020, sec. 3.2) of one linear layer, in place.

    First layer: ``U(-1/n, 1/n)``; later layers: ``U(-sqrt(6/n)/omega, sqrt(6/n)/omega)``,
    with ``n`` the layer's fan-in. Biases keep PyTorch's default initialisation.
    """
    fan_in = linear.weight.shape[1]
    bound = 1.0 / fan_in if is_first else math.sqrt(6.0 / fan_in) / omega
    linear.weight.uniform_(-bound, bound)
