"""Mask operations users expect from a selection tool, on float32 alpha in [0, 1].

Order in the pipeline (``apply_options``): fill holes → grow/shrink → threshold → feather →
invert. Every operation keeps soft edges soft unless it is asked to make them hard, and the
hard edges it makes are anti-aliased (no stair-steps).
"""

from __future__ import annotations

import cv2
import numpy as np


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
    """Grow (pixels > 0) or shrink (pixels < 0) the mask by a disc of that radius; soft edges stay soft."""
    a = np.asarray(alpha, dtype=np.float32)
    if pixels == 0:
        return a
    kernel = _ellipse(abs(int(pixels)))
    if pixels > 0:
        return cv2.dilate(a, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.erode(a, kernel, borderType=cv2.BORDER_REPLICATE)


def feather(alpha: np.ndarray, radius: float) -> np.ndarray:
    """Soften edges with a Gaussian blur; ``radius`` in pixels (σ = radius / 2, GIMP-like reach)."""
    a = np.asarray(alpha, dtype=np.float32)
    if radius <= 0:
        return a
    out = cv2.GaussianBlur(a, (0, 0), sigmaX=radius / 2.0, borderType=cv2.BORDER_REPLICATE)
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
