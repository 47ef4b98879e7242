"""core.guided_filter: box means, colour/gray guided filter against a float64 reference, joint upsampling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from maskd.core import guided_filter as gf


def _box_ref(x, r):
    pad = np.pad(x, [(r, r), (r, r)] + [(0, 0)] * (x.ndim - 2), mode="reflect")
    out = np.zeros_like(x, dtype=np.float64)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out += pad[dy : dy + x.shape[0], dx : dx + x.shape[1]]
    return out / (2 * r + 1) ** 2


def _guided_ref(guide, p, r, eps):
    """The textbook colour guided filter in float64 (He et al., Eq. 19-21)."""
    guide = guide.astype(np.float64)
    p = p.astype(np.float64)
    h, w, _ = guide.shape
    mean_i = np.stack([_box_ref(guide[..., c], r) for c in range(3)], -1)
    mean_p = _box_ref(p, r)
    cov_ip = np.stack([_box_ref(guide[..., c] * p, r) for c in range(3)], -1) - mean_i * mean_p[..., None]
    sigma = np.empty((h, w, 3, 3))
    for i in range(3):
        for j in range(3):
            sigma[..., i, j] = _box_ref(guide[..., i] * guide[..., j], r) - mean_i[..., i] * mean_i[..., j]
    a = np.linalg.solve(sigma + eps * np.eye(3), cov_ip[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(-1)
    mean_a = np.stack([_box_ref(a[..., c], r) for c in range(3)], -1)
    return (mean_a * guide).sum(-1) + _box_ref(b, r)


def test_box_mean_matches_reference():
    x = np.random.default_rng(0).random((17, 23)).astype(np.float32)
    assert np.allclose(gf.box_mean(x, 3), _box_ref(x, 3), atol=1e-5)


@pytest.mark.parametrize("r, eps", [(1, 1e-5), (2, 1e-4), (4, 1e-2)])
def test_colour_guided_filter_matches_float64_reference(r, eps):
    rng = np.random.default_rng(r)
    guide = cv2.GaussianBlur(rng.random((40, 50, 3)).astype(np.float32), (0, 0), 1.5)
    p = (guide[..., 0] > 0.5).astype(np.float32)
    ours = gf.guided_filter(guide, p, r, eps)
    ref = np.clip(_guided_ref(guide, p, r, eps), 0, 1)
    assert np.abs(ours - ref).max() < 2e-3


@pytest.mark.parametrize("tint", [0.0, 0.02])
def test_colour_guide_with_one_colour_direction_is_stable(tint):
    """A gray layer seen as RGB (three equal channels), or one hue: Σ + εU is nearly singular and
    the 3×3 solve must not lose the filter to round-off (it once gave a gray layer ~10× the error)."""
    rng = np.random.default_rng(3)
    gray = cv2.GaussianBlur(rng.random((48, 48)).astype(np.float32), (0, 0), 1.0)
    guide = np.dstack([gray, gray * (1 - tint), gray * (1 - 2 * tint)]).astype(np.float32)
    p = (gray > np.median(gray)).astype(np.float32)
    ours = gf.guided_filter(guide, p, 2, 1e-5)
    ref = np.clip(_guided_ref(guide, p, 2, 1e-5), 0, 1)
    assert np.abs(ours - ref).max() < 2e-3


def test_gray_guide_follows_edges():
    guide = np.zeros((20, 20), np.float32)
    guide[:, 10:] = 1.0
    blurry = cv2.GaussianBlur(guide, (0, 0), 1.5)
    sharp = gf.guided_filter(guide, blurry, 4, 1e-4)
    jump = sharp[:, 10] - sharp[:, 9]  # the guide's edge becomes a step in the output
    assert (jump > (blurry[:, 10] - blurry[:, 9]) + 0.2).all()


def test_sample_bilinear_matches_cv2_resize_alignment():
    grid = np.random.default_rng(2).random((6, 8, 4)).astype(np.float32)
    big = cv2.resize(grid, (24, 18), interpolation=cv2.INTER_LINEAR)
    ys, xs = np.mgrid[0:18, 0:24]
    ly, lx = gf.low_to_full_coords(ys.ravel(), xs.ravel(), (18, 24), (6, 8))
    ours = gf.sample_bilinear(grid, ly, lx).reshape(18, 24, 4)
    assert np.abs(ours - big).max() < 1e-4


def test_joint_upsampling_recovers_colour_aligned_edges():
    """A 1/4-size matte of a diagonal colour edge comes back sharper than bilinear, and in [0, 1]."""
    h = w = 128
    yy, xx = np.mgrid[0:h, 0:w]
    truth = (xx + 0.37 * yy > 70).astype(np.float32)
    image = np.dstack([0.2 + 0.6 * truth, 0.7 - 0.5 * truth, np.full_like(truth, 0.4)]).astype(np.float32)
    low = cv2.resize(truth, (32, 32), interpolation=cv2.INTER_AREA)
    up = gf.joint_upsample(image, low, r=1, eps=1e-5)
    bilinear = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    assert up.min() >= 0 and up.max() <= 1
    assert np.abs(up - truth).sum() < 0.3 * np.abs(bilinear - truth).sum()
    ly, lx = np.array([10.0]), np.array([10.0])
    coef = gf.guided_coefficients(cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA), low, 1, 1e-5)
    at = gf.apply_coefficients_at(image[40:41, 40], coef, np.array([40]), np.array([40]), (h, w))
    assert at.shape == (1,) and 0 <= at[0] <= 1 and ly.size == lx.size


def test_degenerate_sizes():
    for shape in [(1, 1), (1, 9), (9, 1)]:
        guide = np.random.default_rng(0).random(shape + (3,)).astype(np.float32)
        out = gf.guided_filter(guide, np.full(shape, 0.5, np.float32), 1, 1e-5)
        assert out.shape == shape and np.allclose(out, 0.5, atol=1e-3)
