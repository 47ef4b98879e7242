"""Trimaps: where the matte is uncertain, and where it is certainly foreground or background.

The band is found on the *model's* grid (the low-resolution matte), widened by a radius counted
in model pixels, and only then mapped to the image. A radius in output pixels (rembg erodes 10
output pixels) shrinks relative to the subject as layers grow; a radius in model pixels covers
the same part of the subject at every output size.
"""

from __future__ import annotations

import cv2
import numpy as np

UNKNOWN_LOW = 0.05  # matte values inside (LOW, HIGH) are uncertain: a network's shallow dips (0.95…)
UNKNOWN_HIGH = 0.95  # and haze (…0.05) around its confident levels are not (see ``calibrate``)
DEFAULT_RADIUS = 2  # model pixels: covers the strands a 4× downsample smears into neighbours


CONFIDENT_REACH = 0.2  # the matte's confident levels are looked for within this of 0 and of 1
EXACT_NOISE = 0.25 / 255  # mean distance from 0/1 of a confident area that is still exact (a quarter level)


def confident_levels(matte: np.ndarray, reach: float = CONFIDENT_REACH) -> tuple[float, float]:
    """``(low, high)``: the levels a matte gives what it is sure of — background and foreground.

    A network's matte rarely says 0 and 1: ISNet's interior sits at 254/255, other models' at
    0.97, their background carries a haze. The most frequent 8-bit level within ``reach`` of 0
    (of 1) is the matte's own "surely background" ("surely foreground"). Values in between are
    not looked at, so real translucency (glass at 0.5) is no confident level. A matte without
    both kinds of pixels keeps (0, 1): a uniform 0.9 says 0.9.
    """
    m = np.asarray(matte, dtype=np.float32)
    q = np.clip(np.rint(m * 255.0), 0, 255).astype(np.int64)
    hist = np.bincount(q.ravel(), minlength=256)
    cut = int(round(reach * 255))
    if not hist[: cut + 1].any() or not hist[255 - cut :].any():
        return 0.0, 1.0
    low = int(np.argmax(hist[: cut + 1]))
    high = 255 - cut + int(np.argmax(hist[255 - cut :]))
    return low / 255.0, high / 255.0


def calibrate(matte: np.ndarray) -> np.ndarray:
    """The matte with its confident levels (``confident_levels``) stretched to exactly 0 and 1.

    An affine map, so what lies between keeps its order and nearly its value (0.5 stays about
    0.5); what the network is sure of becomes certain and leaves the uncertain band, and its
    small dips and haze no longer feed the back-projection (issue 14's holes and specks).
    """
    low, high = confident_levels(matte)
    if low == 0.0 and high == 1.0:
        return matte
    out = (np.asarray(matte, dtype=np.float32) - np.float32(low)) * np.float32(1.0 / (high - low))
    return np.clip(out, 0.0, 1.0, out=out)


def is_exact(matte: np.ndarray) -> bool:
    """Whether the matte's confident areas sit exactly on 0 and 1, as ground truth or an area
    average of it does, rather than a network's estimate of them.

    Confident areas = pixels within 0.05 of 0 (of 1) whose whole 5×5 neighbourhood is, so edges
    and real translucency are not looked at. Exact when their mean distance from 0 (from 1) is
    under ``EXACT_NOISE``, on each side. A network's matte never is: ISNet's interior is 254/255, BiRefNet's a
    float just under 1, both carry dips and haze. Its cells' residuals are then partly noise, and
    the back-projection caps each pixel's step (``core.pipeline.BP_MAX_SHARE``); an exact matte's
    residual is the truth's own area average and is given in full.
    """
    m = np.asarray(matte, dtype=np.float32)
    k = np.ones((5, 5), np.uint8)
    low = cv2.erode((m < UNKNOWN_LOW).astype(np.uint8), k) > 0
    high = cv2.erode((m > UNKNOWN_HIGH).astype(np.uint8), k) > 0
    if not low.any() and not high.any():
        return False
    return all(float(d.mean(dtype=np.float64)) < EXACT_NOISE for d in (m[low], 1.0 - m[high]) if d.size)


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
