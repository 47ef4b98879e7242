"""core.mask_ops: threshold with anti-aliasing, grow/shrink, feather, fill holes, invert, order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from maskd.core import mask_ops


def _soft_disc(size=96, radius=30.0, softness=3.0):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.hypot(yy - size / 2 + 0.3, xx - size / 2 + 0.1) - radius
    return np.clip(0.5 - d / softness, 0, 1).astype(np.float32), d


def test_threshold_is_hard_away_from_the_edge_and_antialiased_on_it():
    alpha, dist = _soft_disc()
    hard = mask_ops.threshold(alpha, 0.5)
    far = np.abs(dist) > 1.5
    assert set(np.unique(hard[far])) <= {0.0, 1.0}
    assert np.array_equal(hard[far], (alpha[far] >= 0.5).astype(np.float32))
    edge = (hard > 0) & (hard < 1)
    assert edge.sum() > 50  # the rim is anti-aliased, not a staircase
    coverage = np.clip(0.5 - dist, 0, 1)  # exact pixel coverage of the disc (to first order)
    assert np.abs(hard - coverage)[np.abs(dist) <= 1.5].mean() < 0.1
    assert (
        np.abs(mask_ops.threshold(alpha, 0.5, antialias=False) - coverage)[np.abs(dist) <= 1.5].mean() > 0.05
    )


def test_threshold_rejects_levels_outside_unit_interval():
    with pytest.raises(ValueError):
        mask_ops.threshold(np.zeros((4, 4), np.float32), 1.0)


def test_grow_and_shrink_by_radius():
    alpha = np.zeros((41, 41), np.float32)
    alpha[20, 20] = 1.0
    grown = mask_ops.grow(alpha, 5)
    assert grown[20, 25] == 1 and grown[20, 26] == 0 and grown[15, 20] == 1
    assert np.array_equal(mask_ops.grow(grown, -5) > 0, alpha > 0)
    assert mask_ops.grow(alpha, 0) is not None and np.array_equal(mask_ops.grow(alpha, 0), alpha)
    full = np.ones((9, 9), np.float32)
    assert mask_ops.grow(full, -2).min() == 1.0  # shrinking does not eat in from the image border


def test_feather_softens_and_keeps_range():
    alpha = np.zeros((40, 40), np.float32)
    alpha[:, 20:] = 1
    f = mask_ops.feather(alpha, 4)
    assert 0 < f[0, 18] < 0.5 < f[0, 21] < 1
    assert f.min() >= 0 and f.max() <= 1
    assert np.array_equal(mask_ops.feather(alpha, 0), alpha)


def test_fill_holes_fills_enclosed_only():
    alpha = np.zeros((30, 30), np.float32)
    cv2.circle(alpha, (15, 15), 10, 1.0, thickness=3)
    filled = mask_ops.fill_holes(alpha)
    assert filled[15, 15] == 1.0 and filled[0, 0] == 0.0
    assert np.array_equal(mask_ops.fill_holes(np.zeros((5, 5), np.float32)), np.zeros((5, 5)))


def test_invert_and_order():
    alpha, _ = _soft_disc()
    assert np.allclose(mask_ops.invert(alpha), 1 - alpha)
    out = mask_ops.apply_options(alpha, threshold_level=0.5, inverted=True)
    assert np.allclose(out, 1 - mask_ops.threshold(alpha, 0.5))
    assert np.array_equal(mask_ops.apply_options(alpha), alpha)


def test_degenerate_shapes():
    for shape in [(1, 1), (1, 7), (7, 1)]:
        a = np.full(shape, 0.7, np.float32)
        out = mask_ops.apply_options(
            a, threshold_level=0.5, grow_px=1, feather_px=1, fill=True, inverted=True
        )
        assert out.shape == shape and np.isfinite(out).all()
