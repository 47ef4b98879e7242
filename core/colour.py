"""Colour facts for arrays: the sRGB transfer curve and colour names, one definition for all of maskd.

The facts themselves (the curve's constants, the colour table, the parser) live in the plugins'
standard-library client (``plugins/maskd_client.py``), because the GIMP and Krita plugins carry only
that file; this module adds what core needs on top: the curve over numpy arrays (float32, exact)
and over torch tensors, and the parser raising ``InputError``.
``tests/test_facts.py`` holds every sRGB conversion and every colour parser in maskd to these.
"""

from __future__ import annotations

import numpy as np
from maskd.core.errors import InputError
from maskd.plugins.maskd_client import (
    COLOUR_FORMS,
    LINEAR_LINEAR_BELOW,
    NAMED_COLOURS,
    SRGB_GAMMA,
    SRGB_LINEAR_BELOW,
    SRGB_OFFSET,
    SRGB_SLOPE,
    colour_hex,
)
from maskd.plugins.maskd_client import parse_colour as _parse_colour

__all__ = [
    "NAMED_COLOURS",
    "parse_colour",
    "colour_hex",
    "srgb_to_linear",
    "linear_to_srgb",
    "srgb_to_linear_torch",
    "linear_to_srgb_torch",
]


def parse_colour(text) -> tuple[float, float, float, float]:
    """A colour as the user writes it (see ``maskd_client.parse_colour``) → (r, g, b, a) sRGB floats
    in [0, 1]; ``InputError`` (a message for the user) when it is none."""
    try:
        return _parse_colour(text)
    except ValueError:
        raise InputError(f"colour {text!r}: use {COLOUR_FORMS}") from None


# ---------------------------------------------------------------------------------------------
# the curve over numpy arrays (float32; OpenCV's pow is several times faster than numpy's)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded → linear light, float32, clipped to [0, 1] first (the exact IEC 61966-2-1 curve)."""
    import cv2

    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    y = np.ascontiguousarray(x) + np.float32(SRGB_OFFSET)
    y *= np.float32(1.0 / (1 + SRGB_OFFSET))
    y = cv2.pow(y, SRGB_GAMMA).reshape(x.shape)
    low = x <= SRGB_LINEAR_BELOW
    y[low] = x[low] * np.float32(1.0 / SRGB_SLOPE)
    return y


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light → sRGB-encoded, float32, clipped to [0, 1] first (see ``srgb_to_linear``)."""
    import cv2

    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    y = cv2.pow(np.ascontiguousarray(x), 1.0 / SRGB_GAMMA).reshape(x.shape)
    y *= np.float32(1 + SRGB_OFFSET)
    y -= np.float32(SRGB_OFFSET)
    low = x <= LINEAR_LINEAR_BELOW
    y[low] = x[low] * np.float32(SRGB_SLOPE)
    return y


# ---------------------------------------------------------------------------------------------
# the curve over torch tensors (the refinement on a GPU); torch is imported by the caller already


def srgb_to_linear_torch(x):
    """sRGB-encoded tensor in [0, 1] → linear light (same curve; no clipping)."""
    import torch

    return torch.where(
        x <= SRGB_LINEAR_BELOW, x / SRGB_SLOPE, ((x + SRGB_OFFSET) / (1 + SRGB_OFFSET)).pow(SRGB_GAMMA)
    )


def linear_to_srgb_torch(x):
    """Linear-light tensor in [0, 1] → sRGB-encoded (same curve; no clipping)."""
    import torch

    return torch.where(
        x <= LINEAR_LINEAR_BELOW,
        x * SRGB_SLOPE,
        (1 + SRGB_OFFSET) * x.pow(1.0 / SRGB_GAMMA) - SRGB_OFFSET,
    )
