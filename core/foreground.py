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

Blur-fusion pulls every soft pixel towards the smooth mean colour F̄ (its residual is scaled by
α), which also erases the pixel's own detail. Where α is large enough to trust, we instead
**unmix** against the nearest background: ``B̂`` is the colour of the closest pixels that are
(almost) pure background (normalised box blurs of those samples at growing radii, each pixel
taking the smallest radius that has samples), and ``F = (I − (1 − α)·B̂) / α``. Below
``UNMIX_FULL`` the result fades to the blur-fusion colour, so faint pixels (where ``1/α`` would
amplify noise) keep a smooth colour. Where the unmixed colour falls outside the colour cube the
estimate cannot be right (no real colour mixes with ``B̂`` into ``I`` at that α) and the pixel
keeps most of its raw colour (``GAMUT_TOLERANCE``). On the quality benchmark
(tests/bench/bench_refine.py) the default pipeline's colour error is 0.495× that of the raw
pixels where the subject's soft pixels carry detail of their own (blur-fusion alone: 1.28×), and
0.38× where the subject's colour is smooth (blur-fusion alone: 0.71×).

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
BACKGROUND_ALPHA = 0.1  # pixels at or below this alpha are background samples for B̂
UNMIX_FULL = 0.1  # from this alpha up a soft pixel's colour is the unmixed one in full
GAMUT_TOLERANCE = 0.02  # unmixed colour this far outside [0, 1] keeps half of the raw pixel's colour
FILL_FINE = 0.01  # × the longer side: reach of the nearest-background search at full resolution
FILL_COARSE = 0.16  # × the longer side: reach of the search on the coarse grid
_FILL_MIN_WEIGHT = 0.003  # sample weight share of a box above which its mean counts (the nearest samples win)
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


def small_pass(
    image: np.ndarray,
    alpha: np.ndarray,
    f_mean1: np.ndarray,
    b_mean1: np.ndarray,
    r_small: int,
    centre: tuple[slice, slice],
) -> np.ndarray:
    """Pass 1's per-pixel step and all of pass 2 on one tile with a halo ≥ ``r_small``.

    ``f_mean1, b_mean1``: pass 1's blurred colours sampled on the tile (they come from a coarse
    grid: the large blur is smooth). Returns the final colours of the ``centre`` (halo removed).
    This runs on every soft tile at full resolution, so it is written with OpenCV's in-place
    arithmetic on same-shape float32 arrays (about 2.5× faster than numpy broadcasting).
    """
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    a = cv2.cvtColor(alpha, cv2.COLOR_GRAY2RGB)
    f1 = _fuse3(image, a, f_mean1, b_mean1)
    cv2.multiply(f1, a, dst=f1)  # F·α for pass 2's foreground mean
    b_w = cv2.multiply(b_mean1, 1.0 - a)
    # one plane blurred, then repeated: OpenCV blurs each channel alike, so the same bits for a third
    blur_a = cv2.cvtColor(_blur(alpha, r_small), cv2.COLOR_GRAY2RGB)[centre]
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


def blur_fusion(
    image: np.ndarray, alpha: np.ndarray, r_large: int | None = None, r_small: int | None = None
) -> np.ndarray:
    """Whole-image two-pass blur-fusion (BiRefNet's ``refine_foreground`` recipe), float32 H×W×3."""
    image = np.asarray(image, dtype=np.float32)
    alpha = np.asarray(alpha, dtype=np.float32)
    default_large, default_small = radii(max(alpha.shape))
    f_mean, b_mean = fusion_means(image, alpha, r_large or default_large, r_small or default_small)
    return fuse(image, alpha, f_mean, b_mean)


def fill_radii(reach: int) -> list[int]:
    """Box radii 1, 2, 4, … up to ``reach`` (inclusive, ``reach`` itself last)."""
    out, r = [], 1
    while r < reach:
        out.append(r)
        r *= 2
    out.append(max(1, int(reach)))
    return out


def background_weight(alpha: np.ndarray) -> np.ndarray:
    """Weight of each pixel as a background sample: ``1 − α`` where α ≤ ``BACKGROUND_ALPHA``, else 0."""
    alpha = np.asarray(alpha, dtype=np.float32)
    return np.where(alpha <= BACKGROUND_ALPHA, 1.0 - alpha, 0.0).astype(np.float32)


def nearest_background(
    image: np.ndarray, weight: np.ndarray, radii, needed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(B̂, found)``: each pixel's nearest background colour and whether one was within reach.

    ``B̂`` is the weighted mean of the samples in the smallest box (radius from ``radii``) whose
    sample weight is at least ``_FILL_MIN_WEIGHT`` of the box; pixels with none in reach are
    ``found = False`` (their ``B̂`` is 0: the caller supplies a coarser estimate). ``needed``
    (a boolean mask) stops the search once those pixels are found.
    """
    # OpenCV arithmetic and masked copies throughout: this runs on every soft tile.
    image = np.ascontiguousarray(image, dtype=np.float32)
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    out = np.zeros(image.shape, dtype=np.float32)
    found = np.zeros(weight.shape, dtype=np.uint8)  # 0 / 255
    if not cv2.countNonZero(weight):
        return out, found > 0
    weighted = cv2.multiply(image, cv2.merge([weight, weight, weight]))
    todo = None if needed is None else np.where(needed, 255, 0).astype(np.uint8)
    for r in radii:
        den = _blur(weight, r)
        ok = cv2.compare(den, _FILL_MIN_WEIGHT, cv2.CMP_GT)
        cv2.bitwise_and(ok, cv2.bitwise_not(found), dst=ok)
        if cv2.countNonZero(ok):
            num = _blur(weighted, r)
            cv2.divide(num, cv2.merge([den, den, den]), dst=num)
            cv2.copyTo(num, ok, out)
            cv2.bitwise_or(found, ok, dst=found)
            if todo is not None:
                cv2.bitwise_and(todo, cv2.bitwise_not(ok), dst=todo)
                if not cv2.countNonZero(todo):
                    break
        if cv2.countNonZero(found) == found.size:
            break
    return out, found > 0


def unmix(image: np.ndarray, alpha: np.ndarray, background: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """``F = (I − (1 − α)·B̂) / α``, faded to ``smooth`` below ``UNMIX_FULL``; float32 H×W×3.

    Where ``F`` falls outside the colour cube, no real colour mixes with ``B̂`` into ``I`` at
    this α: the background estimate (or α) is wrong there. The result is then pulled back to the
    raw pixel ``I`` — by ``t / (t + overshoot)`` toward ``F`` clipped, ``t = GAMUT_TOLERANCE`` —
    rather than clipped into a saturated colour the photo never had.
    """
    # OpenCV arithmetic on same-shape float32 planes: this runs on every soft tile.
    image = np.ascontiguousarray(image, dtype=np.float32)
    a = np.ascontiguousarray(alpha, dtype=np.float32)
    shape = a.shape
    a2 = a.reshape(-1, 1) if a.ndim == 1 else a  # N pixels: OpenCV sees an N×1 plane
    a3 = cv2.merge([a2, a2, a2])
    img = image.reshape(a2.shape[:2] + (3,))
    bg = np.ascontiguousarray(background, dtype=np.float32).reshape(img.shape)
    sm = np.ascontiguousarray(smooth, dtype=np.float32).reshape(img.shape)
    raw = cv2.multiply(bg, cv2.subtract(1.0, a3))
    cv2.subtract(img, raw, dst=raw)
    cv2.divide(raw, cv2.max(a3, 1e-3), dst=raw)  # F before clipping
    f = np.clip(raw, 0.0, 1.0)
    over = cv2.absdiff(raw, f)
    c0, c1, c2 = cv2.split(over)
    overshoot = cv2.max(c0, cv2.max(c1, c2))
    overshoot += GAMUT_TOLERANCE
    trust = cv2.divide(GAMUT_TOLERANCE, overshoot)  # t / (t + overshoot)
    cv2.subtract(f, img, dst=f)
    cv2.multiply(f, cv2.merge([trust, trust, trust]), dst=f)
    cv2.add(f, img, dst=f)  # I + trust·(F − I)
    w = cv2.multiply(a3, 1.0 / UNMIX_FULL)
    np.clip(w, 0.0, 1.0, out=w)
    cv2.subtract(f, sm, dst=f)
    cv2.multiply(f, w, dst=f)
    cv2.add(f, sm, dst=f)  # smooth + w·(F − smooth)
    return f.reshape(shape + (3,))
