"""Trimaps: where the matte is uncertain, and where it is certainly foreground or background.

The band is found on the *model's* grid (the low-resolution matte), widened by a radius counted
in model pixels, and only then mapped to the image. A radius in output pixels (rembg erodes 10
output pixels) shrinks relative to the subject as layers grow; a radius in model pixels covers
the same part of the subject at every output size.
"""

from __future__ import annotations

import cv2
import numpy as np

UNKNOWN_LOW = 0.01  # matte values inside (LOW, HIGH) are uncertain
UNKNOWN_HIGH = 0.99
DEFAULT_RADIUS = 2  # model pixels: covers the strands a 4× downsample smears into neighbours


def ellipse(radius: int) -> np.ndarray:
    k = 2 * int(radius) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def band_from_matte(
    matte: np.ndarray, radius: int = DEFAULT_RADIUS, low: float = UNKNOWN_LOW, high: float = UNKNOWN_HIGH
) -> tuple[np.ndarray, np.ndarray]:
    """``(band, foreground)`` boolean masks on the matte's own grid.

    ``band``: uncertain pixels (low < matte < high) and every pixel where certain foreground
    meets certain background (a hard step), dilated by ``radius``. ``foreground``: matte ≥ 0.5
    (meaningful outside the band, where it is 0 or 1 with certainty).
    """
    m = np.asarray(matte, dtype=np.float32)
    fg = m >= 0.5
    uncertain = (m > low) & (m < high)
    fg_u8 = fg.astype(np.uint8)
    # Hard steps: a pixel whose 3×3 neighbourhood holds both classes.
    edges = cv2.dilate(fg_u8, ellipse(1)) != cv2.erode(fg_u8, ellipse(1))
    seed = (uncertain | edges).astype(np.uint8)
    band = cv2.dilate(seed, ellipse(radius)) > 0 if radius > 0 else seed > 0
    return band, fg


def is_area_average(matte: np.ndarray, low: float = UNKNOWN_LOW, high: float = UNKNOWN_HIGH) -> bool:
    """Whether the matte's edges are soft, as an area average of a real alpha's edges always is.

    True when a fair share of the pixels around the foreground/background boundary hold
    intermediate values (an area-averaged binary edge leaves one soft pixel per two-pixel step,
    about half; hair far more); a binary selection mask (or a thresholded matte) gives 0.
    """
    m = np.asarray(matte, dtype=np.float32)
    fg = (m >= 0.5).astype(np.uint8)
    edges = cv2.dilate(fg, ellipse(1)) != cv2.erode(fg, ellipse(1))
    if not edges.any():
        return True
    return bool(((m[edges] > low) & (m[edges] < high)).mean() >= 0.2)


def trimap(matte: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """uint8 trimap on the matte's grid: 0 background, 128 unknown, 255 foreground."""
    band, fg = band_from_matte(matte, radius)
    out = np.where(fg, 255, 0).astype(np.uint8)
    out[band] = 128
    return out


def upscale_nearest(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Boolean mask on a low grid → boolean mask of ``size_hw`` (nearest, as cv2.resize aligns pixels)."""
    h, w = size_hw
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
