"""Neural fields: activations, positional encoding and the shared coordinate MLP."""

from gnerf.fields.activations import (
    ACTIVATIONS,
    CentredGaussian,
    GaborWavelet,
    Gaussian,
    PositionalEncoding,
    Sine,
    make_activation,
    siren_init_,
)
from gnerf.fields.mlp import CoordinateMLP, count_parameters

__all__ = [
    "ACTIVATIONS",
    "CentredGaussian",
    "CoordinateMLP",
    "GaborWavelet",
    "Gaussian",
    "PositionalEncoding",
    "Sine",
    "count_parameters",
    "make_activation",
    "siren_init_",
]
