"""Guided filtering (He, Sun & Tang 2010/2013) and guided joint upsampling of a low-resolution matte.

The filter fits, in every window of radius ``r``, a local linear model ``q = aᵀ·I + b`` from the
guide ``I`` to the input ``p``; averaged coefficients are then applied to the guide. With a colour
guide the edges of ``q`` follow colour edges of the image, which is what carries a 1024² matte's
edges onto a 4000² photo's hair.

All box sums use ``cv2.boxFilter`` in float32 (O(N), independent of ``r``). ``eps`` is in guide
units² with the guide in [0, 1].

Joint upsampling (the fast guided filter of He & Sun 2015 used as in Wu et al.'s Deep Guided
Filter): solve ``a`` at the matte's resolution against the image downsampled to that size,
average it there, and apply the bilinearly upsampled coefficients to the full-resolution guide,
plus the interpolated per-pixel offset (see ``joint_coefficients``).
Only the last step touches full-resolution pixels, and ``apply_coefficients_at`` does it for a
list of pixels (the uncertain band) instead of the whole image.
"""

from __future__ import annotations

import cv2
import numpy as np


def box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window, edges mirrored (``BORDER_REFLECT_101``). float32 in, float32 out."""
    k = 2 * int(r) + 1
    return cv2.boxFilter(x, -1, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT_101)


def solve_sym3(s11, s12, s13, s22, s23, s33, c1, c2, c3):
    """Per-pixel ``Σ⁻¹·c`` for a symmetric positive definite 3×3 ``Σ`` (planes in, three planes out).

    By Cholesky factorisation (``Σ = L·Lᵀ``), which stays accurate in float32 where ``Σ + εU`` is
    nearly singular — colour varying along one direction only (a gray layer's three equal
    channels, neutral greys, one hue). The adjugate formula loses everything there: its
    determinant's terms cancel ~10⁴-fold (a gray layer's alpha came out ~10× worse). Works on
    numpy arrays and torch tensors alike.
    """
    l11 = s11**0.5
    l21 = s12 / l11
    l31 = s13 / l11
    l22 = (s22 - l21 * l21) ** 0.5
    l32 = (s23 - l31 * l21) / l22
    l33 = (s33 - l31 * l31 - l32 * l32) ** 0.5
    y1 = c1 / l11  # L·y = c
    y2 = (c2 - l21 * y1) / l22
    y3 = (c3 - l31 * y1 - l32 * y2) / l33
    a3 = y3 / l33  # Lᵀ·a = y
    a2 = (y2 - l32 * a3) / l22
    a1 = (y1 - l21 * a2 - l31 * a3) / l11
    return a1, a2, a3


# the six (i, j) channel pairs of a 3×3 symmetric colour covariance, in solve_sym3's order
PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def guided_coefficients(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Window-averaged coefficients ``(mean a_R, mean a_G, mean a_B, mean b)`` as an H×W×4 array.

    ``guide``: H×W×3 float32 in [0, 1] (or H×W for a gray guide, then H×W×2 is returned);
    ``src``: H×W float32 (the matte). ``q = Σ_c coef[..., c]·guide[..., c] + coef[..., -1]``.
    """
    guide = np.ascontiguousarray(guide, dtype=np.float32)
    p = np.ascontiguousarray(src, dtype=np.float32)
    mean_p = box_mean(p, r)
    if guide.ndim == 2:
        mean_i = box_mean(guide, r)
        var = box_mean(guide * guide, r) - mean_i * mean_i
        a = (box_mean(guide * p, r) - mean_i * mean_p) / (var + np.float32(eps))
        b = mean_p - a * mean_i
        return np.dstack([box_mean(a, r), box_mean(b, r)])
    ch = [guide[..., c] for c in range(3)]
    mean_i = [box_mean(c, r) for c in ch]
    cov_ip = [box_mean(c * p, r) - m * mean_p for c, m in zip(ch, mean_i)]
    second = [box_mean(ch[i] * ch[j], r) for i, j in PAIRS]
    return _window_lines(mean_i, mean_p, cov_ip, second, eps, r)


def _window_lines(mean_i, mean_p, cov_ip, second, eps: float, r: int) -> np.ndarray:
    """Each window's colour → alpha line from its (weighted) moments — colour means ``mean_i``,
    alpha mean ``mean_p``, colour–alpha covariances ``cov_ip``, second colour moments ``second``
    (``PAIRS`` order) — regularised by ``eps``, then box-averaged: H×W×4 (a_r, a_g, a_b, b)."""
    e = np.float32(eps)
    s = [
        (m - mean_i[i] * mean_i[j] + e) if i == j else (m - mean_i[i] * mean_i[j])
        for m, (i, j) in zip(second, PAIRS)
    ]
    a_r, a_g, a_b = solve_sym3(*s, *cov_ip)
    b = mean_p - a_r * mean_i[0] - a_g * mean_i[1] - a_b * mean_i[2]
    out = np.empty(mean_p.shape + (4,), dtype=np.float32)
    for k, plane in enumerate((a_r, a_g, a_b, b)):
        out[..., k] = box_mean(plane, r)
    return out


def confidence_weight(alpha, floor: float):
    """``(2α − 1)⁴ + floor``: how much a pixel's alpha is trusted when a window's colour model is fitted.

    Near 0 or 1 (the matte is sure) the weight is about 1; at 0.5 it is ``floor`` only. Works on
    numpy arrays and torch tensors alike.
    """
    d = 2.0 * alpha - 1.0
    d = d * d
    return d * d + floor


def sure_share(weight, r: int, floor: float):
    """How sure a (2r+1)² window is, 0 … 1: its mean ``confidence_weight`` less ``floor``, over
    ``1 − floor``, clipped (0: every pixel at 0.5; 1: nearly all at 0 or 1)."""
    return np.clip((box_mean(weight, r) - np.float32(floor)) * np.float32(1.0 / (1.0 - floor)), 0.0, 1.0)


def weighted_guided_coefficients(
    guide: np.ndarray, src: np.ndarray, weight: np.ndarray, r: int, eps: float
) -> np.ndarray:
    """``guided_coefficients`` with every pixel's term in its window's fit weighted by ``weight``.

    Why: a network's matte is blurred and shifted at its edges; its soft values there are the
    least reliable part of it. Fitting each window's colour → alpha line mostly to the pixels the
    matte is sure of (weights from ``confidence_weight``) carries what the network knows on each
    side of an edge across the soft ramp along the photo's own colours, as a matting solve with
    known pixels does locally, instead of reproducing the ramp. Weighted means, covariances and
    ``b``; the coefficients are then box-averaged as usual. H×W×3 guide only; H×W×4 out.
    """
    guide = np.ascontiguousarray(guide, dtype=np.float32)
    p = np.ascontiguousarray(src, dtype=np.float32)
    w = np.ascontiguousarray(weight, dtype=np.float32)
    inv = np.float32(1.0) / box_mean(w, r)
    ch = [guide[..., c] for c in range(3)]
    wch = [w * c for c in ch]
    mean_i = [box_mean(c, r) * inv for c in wch]
    mean_p = box_mean(w * p, r) * inv
    cov_ip = [box_mean(c * p, r) * inv - m * mean_p for c, m in zip(wch, mean_i)]
    second = [box_mean(wch[i] * ch[j], r) * inv for i, j in PAIRS]
    return _window_lines(mean_i, mean_p, cov_ip, second, eps, r)


def apply_coefficients(guide: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``q = Σ a_c·I_c + b`` at the guide's resolution (coefficients already at that size)."""
    if guide.ndim == 2:
        q = coef[..., 0] * guide + coef[..., 1]
    else:
        q = coef[..., 0] * guide[..., 0]
        q += coef[..., 1] * guide[..., 1]
        q += coef[..., 2] * guide[..., 2]
        q += coef[..., 3]
    return np.clip(q, 0.0, 1.0, out=q)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """The plain guided filter at one resolution, clipped to [0, 1]."""
    return apply_coefficients(np.asarray(guide, dtype=np.float32), guided_coefficients(guide, src, r, eps))


def sample_bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of an h×w(×C) grid at float coordinates (pixel centres at integers), edges clamped."""
    h, w = grid.shape[:2]
    ys = np.clip(ys, 0.0, h - 1.0).astype(np.float32)
    xs = np.clip(xs, 0.0, w - 1.0).astype(np.float32)
    y0 = np.minimum(ys.astype(np.int32), h - 2) if h > 1 else np.zeros(ys.shape, np.int32)
    x0 = np.minimum(xs.astype(np.int32), w - 2) if w > 1 else np.zeros(xs.shape, np.int32)
    fy = ys - y0 if h > 1 else np.zeros_like(ys)
    fx = xs - x0 if w > 1 else np.zeros_like(xs)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    if grid.ndim == 3:
        fy = fy[:, None]
        fx = fx[:, None]
    top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
    bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def low_to_full_coords(idx_y: np.ndarray, idx_x: np.ndarray, full_hw, low_hw):
    """Full-resolution pixel indices → low-resolution float coordinates (centres aligned as cv2.resize)."""
    sy = low_hw[0] / full_hw[0]
    sx = low_hw[1] / full_hw[1]
    return (idx_y + 0.5) * sy - 0.5, (idx_x + 0.5) * sx - 0.5


def apply_coefficients_at(
    guide_pixels: np.ndarray, coef_low: np.ndarray, idx_y, idx_x, full_hw
) -> np.ndarray:
    """Joint-upsampled values at selected full-resolution pixels.

    ``guide_pixels``: N×3 (or N) float32 guide values at those pixels; ``coef_low``: the
    low-resolution coefficients from ``guided_coefficients``; ``idx_y, idx_x``: the pixels.
    """
    ly, lx = low_to_full_coords(idx_y, idx_x, full_hw, coef_low.shape[:2])
    c = sample_bilinear(coef_low, ly, lx)
    if guide_pixels.ndim == 1:
        q = c[:, 0] * guide_pixels + c[:, 1]
    else:
        q = (c[:, :3] * guide_pixels).sum(axis=1) + c[:, 3]
    return np.clip(q, 0.0, 1.0)


def joint_coefficients(guide_low: np.ndarray, matte_low: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Coefficients for joint upsampling: ``(mean a_R, mean a_G, mean a_B, offset)``, H×W×4.

    The offset is ``matte − mean(a)ᵀ·guide`` per low-resolution pixel instead of the filter's
    box-averaged ``b``: the upsampled result passes exactly through the matte at the model's pixel
    centres, so where colour explains nothing (flat or transparent subjects, a ≈ 0) it is a plain
    interpolation of the matte rather than a box-blurred one, and where colour explains the edge
    the full-resolution pixels add their detail on top.
    """
    coef = guided_coefficients(guide_low, matte_low, r, eps)
    coef[..., 3] = matte_low - (coef[..., :3] * guide_low).sum(axis=2)
    return coef


def joint_upsample(
    guide_full: np.ndarray, matte_low: np.ndarray, r: int = 1, eps: float = 1e-5
) -> np.ndarray:
    """Whole-image guided joint upsampling of ``matte_low`` to the guide's size (colour guide)."""
    h, w = matte_low.shape
    guide_low = cv2.resize(guide_full, (w, h), interpolation=cv2.INTER_AREA)
    coef = joint_coefficients(guide_low, matte_low, r, eps)
    big = cv2.resize(coef, (guide_full.shape[1], guide_full.shape[0]), interpolation=cv2.INTER_LINEAR)
    return apply_coefficients(guide_full, big)
