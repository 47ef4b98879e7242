"""Mask operations users expect from a selection tool, on float32 alpha in [0, 1].

Order in the pipeline (``apply_options``): fill holes → grow/shrink → threshold → feather →
invert. Every operation keeps soft edges soft unless it is asked to make them hard, and the
hard edges it makes are anti-aliased (no stair-steps).
"""

from __future__ import annotations

import cv2
import numpy as np
from maskd.core import cancel


def _ellipse(radius: int) -> np.ndarray:
    k = 2 * int(radius) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def threshold(alpha: np.ndarray, level: float = 0.5, antialias: bool = True) -> np.ndarray:
    """A hard mask: 1 where alpha ≥ ``level``, else 0 — with a one-pixel anti-aliased edge.

    The soft alpha is read as a level set: near the boundary ``(alpha − level) / |∇alpha|``
    is the signed distance to it in pixels, and the edge pixel gets the covered fraction
    ``clip(0.5 + distance)``. Away from edges the result is exactly 0 or 1.
    """
    a = np.asarray(alpha, dtype=np.float32)
    if not 0.0 < level < 1.0:
        raise ValueError(f"threshold {level} is outside (0, 1)")
    hard = (a >= level).astype(np.float32)
    if not antialias or a.shape[0] < 2 or a.shape[1] < 2:
        return hard
    u8 = hard.astype(np.uint8)
    edge = cv2.dilate(u8, _ellipse(1)) != cv2.erode(u8, _ellipse(1))
    if not edge.any():
        return hard
    gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    grad = np.sqrt(gx[edge] ** 2 + gy[edge] ** 2)
    # A flat-but-crossing region (gradient ~0) keeps the hard value.
    dist = np.where(grad > 1e-4, (a[edge] - level) / np.maximum(grad, 1e-4), np.where(hard[edge] > 0, 1, -1))
    hard[edge] = np.clip(0.5 + dist, 0.0, 1.0)
    return hard


def grow(alpha: np.ndarray, pixels: int) -> np.ndarray:
    """Grow (pixels > 0) or shrink (pixels < 0) the mask by a disc of that radius; soft edges stay soft.

    The disc (OpenCV's ellipse element) is taken row by row: a horizontal max (min) over the
    row's width, widened one pixel a step, and the max (min) of those rows shifted by their
    offset — the same result as one ``cv2.dilate`` with the disc in O(radius) array passes
    instead of O(radius²) work per pixel; each pass is a cancel point (``core.cancel``).
    """
    a = np.asarray(alpha, dtype=np.float32)
    if pixels == 0:
        return a
    radius = abs(int(pixels))
    kernel = _ellipse(radius)
    offsets: dict[int, list[int]] = {}  # half-width of a row of the disc -> its row offsets
    for i, row in enumerate(kernel):
        if row.any():
            offsets.setdefault((int(row.sum()) - 1) // 2, []).append(i - radius)
    combine = np.maximum if pixels > 0 else np.minimum  # outside: 0 (grow), the edge (shrink)
    height, width = a.shape[:2]
    out = np.zeros_like(a) if pixels > 0 else np.full_like(a, np.inf)
    cur, wider = a.copy(), np.empty_like(a)
    reach = 0
    for half in sorted(offsets):
        while reach < half:  # cur: the max (min) over [x - reach, x + reach] in each row
            cancel.point()
            if width > 1:
                combine(cur[:, :-2], cur[:, 2:], out=wider[:, 1:-1])
                combine(wider[:, 1:-1], cur[:, 1:-1], out=wider[:, 1:-1])
                combine(cur[:, 0], cur[:, 1], out=wider[:, 0])
                combine(cur[:, -2], cur[:, -1], out=wider[:, -1])
                cur, wider = wider, cur
            reach += 1
        for dy in offsets[half]:  # out[y] takes cur[y + dy]
            cancel.point()
            lo, hi = max(0, -dy), min(height, height - dy)
            if lo < hi:
                combine(out[lo:hi], cur[lo + dy : hi + dy], out=out[lo:hi])
            if pixels < 0 and dy < 0 and lo > 0:  # replicated border: the edge row stands for those beyond
                combine(out[:lo], cur[0], out=out[:lo])
            elif pixels < 0 and dy > 0 and hi < height:
                combine(out[hi:], cur[-1], out=out[hi:])
    return out


def feather(alpha: np.ndarray, radius: float) -> np.ndarray:
    """Soften edges with a Gaussian blur; ``radius`` in pixels (σ = radius / 2, GIMP-like reach).

    Separable passes over bands of rows, then of columns (a cancel point between bands).
    """
    a = np.asarray(alpha, dtype=np.float32)
    if radius <= 0:
        return a
    sigma = radius / 2.0
    ksize = max(3, int(round(sigma * 8 + 1)) | 1)  # what cv2.GaussianBlur picks for float images
    kernel = cv2.getGaussianKernel(ksize, sigma, cv2.CV_32F)
    one = np.ones((1, 1), np.float32)
    tmp = np.empty_like(a)
    out = np.empty_like(a)
    step = max(16, 1 << 22 // max(1, a.shape[1] * ksize // 64))
    for y0 in range(0, a.shape[0], step):
        cancel.point()
        band = a[y0 : y0 + step]
        tmp[y0 : y0 + step] = cv2.sepFilter2D(band, -1, kernel, one, borderType=cv2.BORDER_REPLICATE)
    step = max(16, 1 << 22 // max(1, a.shape[0] * ksize // 64))
    for x0 in range(0, a.shape[1], step):
        cancel.point()
        band = np.ascontiguousarray(tmp[:, x0 : x0 + step])
        out[:, x0 : x0 + step] = cv2.sepFilter2D(band, -1, one, kernel, borderType=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0, out=out)


def fill_holes(alpha: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Make enclosed transparent regions opaque: any region below ``level`` that does not touch
    the image border becomes 1 (soft edges around it keep their values where higher)."""
    a = np.asarray(alpha, dtype=np.float32)
    background = (a < level).astype(np.uint8)
    count, labels = cv2.connectedComponents(background, connectivity=4)
    if count <= 1:
        return a
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.zeros(count, dtype=bool)
    keep[border] = True
    keep[0] = True  # label 0 = not background
    holes = ~keep[labels]
    if not holes.any():
        return a
    out = a.copy()
    out[holes] = 1.0
    return out


def invert(alpha: np.ndarray) -> np.ndarray:
    return 1.0 - np.asarray(alpha, dtype=np.float32)


def apply_options(
    alpha: np.ndarray,
    *,
    threshold_level: float | None = None,
    grow_px: int = 0,
    feather_px: float = 0.0,
    fill: bool = False,
    inverted: bool = False,
) -> np.ndarray:
    """All user mask options in their fixed order (see the module docstring)."""
    a = alpha
    if fill:
        a = fill_holes(a)
    if grow_px:
        a = grow(a, grow_px)
    if threshold_level is not None:
        a = threshold(a, threshold_level)
    if feather_px > 0:
        a = feather(a, feather_px)
    if inverted:
        a = invert(a)
    return a
