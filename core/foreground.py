"""Foreground colour estimation ("decontamination"): the subject's own colour in soft edge pixels.

A half-transparent hair pixel holds ``I = α·F + (1 − α)·B``: part subject, part old background.
Cutting it out with ``I`` as its colour drags the old background along (the dark or coloured
halo users complain about). We estimate ``F`` with blur-fusion (Forte, ICIP 2021,
"Approximate Fast Foreground Colour Estimation"): with box blurs of radius r,

    F̄ = blur(F·α) / blur(α),   B̄ = blur(B·(1 − α)) / blur(1 − α),
    F  = clip(F̄ + α·(I − α·F̄ − (1 − α)·B̄))

first with r large and F = B = I, then with r small, the first pass's F and B̄. Where α = 1 the
result is exactly ``I``. Colours are *straight* (not premultiplied).

The compositing equation is solved in the values given (sRGB-encoded values for sRGB input,
linear values for linear input): the same space the alpha describes and editors blend 8-bit
layers in by default.

Radii are fractions of the image's longer side (Forte's r = 90 and 6 were chosen for ~1000 px
images), so the result does not change character with resolution. ``fusion_means`` computes
the blurred colours on any grid: the pipeline runs the large blurs on the model's grid and only
the final per-pixel step (``fuse``) at full resolution, in the uncertain band.
"""

from __future__ import annotations

import cv2
import numpy as np

LARGE_RADIUS = 0.09  # × the longer image side (Forte: 90 px at ~1000 px)
SMALL_RADIUS = 0.006  # (Forte: 6 px)
_EPS = np.float32(1e-5)


def radii(long_side: int) -> tuple[int, int]:
    """Blur radii in pixels for an image whose longer side is ``long_side``."""
    return max(1, round(LARGE_RADIUS * long_side)), max(1, round(SMALL_RADIUS * long_side))


def _blur(x: np.ndarray, r: int) -> np.ndarray:
    k = 2 * int(r) + 1
    return cv2.blur(x, (k, k), borderType=cv2.BORDER_REFLECT_101)


def _weighted_means(fg_src, bg_src, alpha, r):
    a = alpha[..., None]
    blur_a = _blur(alpha, r)[..., None]
    f_mean = _blur(fg_src * a, r) / (blur_a + _EPS)
    b_mean = _blur(bg_src * (1.0 - a), r) / ((1.0 - blur_a) + _EPS)
    return f_mean, b_mean


def fuse(image: np.ndarray, alpha: np.ndarray, f_mean: np.ndarray, b_mean: np.ndarray) -> np.ndarray:
    """The per-pixel blur-fusion step (any shape: H×W×3 with H×W alpha, or N×3 with N)."""
    a = alpha[..., None]
    out = f_mean + a * (image - a * f_mean - (1.0 - a) * b_mean)
    return np.clip(out, 0.0, 1.0, out=out)


def fusion_means(image: np.ndarray, alpha: np.ndarray, r_large: int, r_small: int):
    """``(F̄, B̄)`` of the second blur-fusion pass, on the grid of ``image`` (float32 H×W×3, H×W)."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    f_mean, b_mean = _weighted_means(image, image, alpha, r_large)
    f1 = fuse(image, alpha, f_mean, b_mean)
    return _weighted_means(f1, b_mean, alpha, r_small)


def small_pass(image: np.ndarray, alpha: np.ndarray, f_mean1: np.ndarray, b_mean1: np.ndarray, r_small: int,
               centre: tuple[slice, slice]) -> np.ndarray:
    """Pass 1's per-pixel step and all of pass 2 on one tile with a halo ≥ ``r_small``.

    ``f_mean1, b_mean1``: pass 1's blurred colours sampled on the tile (they come from a coarse
    grid: the large blur is smooth). Returns the final colours of the ``centre`` (halo removed).
    This runs on every soft tile at full resolution, so it is written with OpenCV's in-place
    arithmetic on same-shape float32 arrays (about 2.5× faster than numpy broadcasting).
    """
    a = cv2.cvtColor(np.ascontiguousarray(alpha, dtype=np.float32), cv2.COLOR_GRAY2RGB)
    f1 = _fuse3(image, a, f_mean1, b_mean1)
    cv2.multiply(f1, a, dst=f1)  # F·α for pass 2's foreground mean
    b_w = cv2.multiply(b_mean1, 1.0 - a)
    blur_a = _blur(a, r_small)[centre]
    f_mean = _blur(f1, r_small)[centre]
    cv2.divide(f_mean, blur_a + _EPS, dst=f_mean)
    b_mean = _blur(b_w, r_small)[centre]
    cv2.divide(b_mean, (1.0 - blur_a) + _EPS, dst=b_mean)
    return _fuse3(np.ascontiguousarray(image[centre]), np.ascontiguousarray(a[centre]), f_mean, b_mean)


def _fuse3(image, a3, f_mean, b_mean):
    """``fuse`` for H×W×3 arrays with a 3-channel alpha: F̄ + α·((I − B̄) − α·(F̄ − B̄)), clipped."""
    out = cv2.subtract(image, b_mean)
    diff = cv2.subtract(f_mean, b_mean)
    cv2.multiply(diff, a3, dst=diff)
    cv2.subtract(out, diff, dst=out)
    cv2.multiply(out, a3, dst=out)
    cv2.add(out, f_mean, dst=out)
    return np.clip(out, 0.0, 1.0, out=out)


def blur_fusion(image: np.ndarray, alpha: np.ndarray, r_large: int | None = None,
                r_small: int | None = None) -> np.ndarray:
    """Whole-image two-pass blur-fusion (BiRefNet's ``refine_foreground`` recipe), float32 H×W×3."""
    image = np.asarray(image, dtype=np.float32)
    alpha = np.asarray(alpha, dtype=np.float32)
    default_large, default_small = radii(max(alpha.shape))
    f_mean, b_mean = fusion_means(image, alpha, r_large or default_large, r_small or default_small)
    return fuse(image, alpha, f_mean, b_mean)
