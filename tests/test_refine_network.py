"""Refinement of mattes that behave like a real network's (issue 14), through refine() and cutout().

A network's matte is no area average of a true alpha: its interior sits below 1 (0.97 here) with
shallow dips, its background carries a haze, its edge is blurred. The refinement must treat what
the network is sure of as sure (alpha exactly 1 inside, 0 outside, away from the edge), punch no
holes and leave no specks (pixels far from their 3×3 median), and keep real translucency: a large
area at 0.5 (glass, smoke) stays 0.5.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from maskd.core import guided_filter as gf
from maskd.core import imageio, pipeline
from maskd.core import trimap as trimapmod

SIZE = 256
GRID = 64  # the network's grid: a quarter of the image, as a 1024² matte on a 4096² layer


def _scene(seed=0):
    """A textured orange disc on a textured blue-green background, and its true alpha."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dist = np.hypot(yy - SIZE * 0.5, xx - SIZE * 0.5) - SIZE * 0.3
    alpha = np.clip(0.5 - dist / 1.5, 0, 1).astype(np.float32)
    noise = cv2.GaussianBlur(rng.random((SIZE, SIZE), dtype=np.float32), (0, 0), 1.5)
    fg = np.dstack([0.85 + 0.2 * noise, 0.5 + 0.1 * np.sin(xx / 5), np.full_like(xx, 0.15)])
    bg = np.dstack([0.1 + 0.1 * noise, 0.35 + 0.1 * np.cos(yy / 7), np.full_like(xx, 0.6)])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return imageio.to_uint8(np.clip(image, 0, 1)), alpha


def _network_matte(alpha, grid=GRID, interior=0.97, haze=0.03, seed=1):
    """The truth as a network would give it on its grid: blurred edge, interior at ``interior`` with
    shallow dips (down to about ``interior`` − 0.04), background haze around ``haze`` (0.01–0.05)."""
    rng = np.random.default_rng(seed)
    m = cv2.resize(alpha, (grid, grid), interpolation=cv2.INTER_AREA)
    m = cv2.GaussianBlur(m, (0, 0), 1.0)
    field = cv2.GaussianBlur(rng.standard_normal((grid, grid)).astype(np.float32), (0, 0), 3.0)
    field /= np.abs(field).max()
    dips = np.where(field > 0.4, (field - 0.4) / 0.6 * 0.04, 0.0).astype(np.float32)  # shallow, local
    top = interior - dips
    floor = haze + 0.02 * field  # 0.01 … 0.05
    return np.clip(floor + m * (top - floor), 0, 1).astype(np.float32)


def _isolated(alpha, level=60):
    """Pixels more than ``level`` (of 255) from the median of their 3×3 neighbourhood."""
    a = imageio.to_uint8(alpha)
    return np.abs(a.astype(np.int16) - cv2.medianBlur(a, 3).astype(np.int16)) > level


def _away_from_the_edge(alpha, margin=24):
    """Pixels more than ``margin`` (6 model pixels: the blurred edge and the band) inside / outside."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    inside = cv2.erode((alpha >= 1).astype(np.uint8), kernel) > 0
    outside = cv2.erode((alpha <= 0).astype(np.uint8), kernel) > 0
    return inside, outside


def _runs(image, matte):
    """The matte through both entry points: refine() with it as the mask, cutout() returning it."""
    yield "refine", pipeline.refine(image, matte).alpha
    yield "cutout", pipeline.cutout(image, lambda rgb: matte).alpha


@pytest.mark.parametrize("grid", [GRID, SIZE])  # ×4 upsampling, and a matte of the image's own size
def test_network_matte_gives_no_holes_no_specks_and_certain_alpha_away_from_the_edge(grid):
    image, alpha = _scene()
    matte = _network_matte(alpha, grid)
    inside, outside = _away_from_the_edge(alpha)
    assert inside.sum() > 5000 and outside.sum() > 10000
    for path, out in _runs(image, matte):
        assert np.all(out[inside] == 1.0), (path, out[inside].min())  # no holes, no dips: certain
        assert np.all(out[outside] == 0.0), (path, out[outside].max())  # no haze, no specks
        assert not _isolated(out).any(), (path, int(_isolated(out).sum()))
        err = np.abs(out - alpha).mean()
        plain = np.abs(cv2.resize(matte, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) - alpha).mean()
        assert err < 0.5 * plain, (path, err, plain)  # and closer to the truth than the matte itself


def test_dips_are_not_turned_into_rings_of_holes_by_back_projection():
    """Deeper dips (0.90–0.97 inside) stay inside the band: refinement keeps them smooth and high
    instead of pushing the residual onto the few pixels that are still soft."""
    image, alpha = _scene(3)
    matte = _network_matte(alpha, interior=0.99, seed=4)
    rng = np.random.default_rng(5)
    blobs = cv2.GaussianBlur(rng.standard_normal((GRID, GRID)).astype(np.float32), (0, 0), 2.0)
    core = cv2.resize(alpha, (GRID, GRID), interpolation=cv2.INTER_AREA) >= 1
    matte = np.where(core & (blobs > 0.3), matte - 0.07, matte).astype(np.float32)
    inside, _ = _away_from_the_edge(alpha)
    for path, out in _runs(image, matte):
        assert out[inside].min() > 0.8, (path, out[inside].min())
        assert not _isolated(out).any(), (path, int(_isolated(out).sum()))


@pytest.mark.parametrize("grid", [GRID, SIZE])
def test_real_translucency_keeps_its_level(grid):
    """Glass or smoke: a large area the network gives at 0.5 stays 0.5 (it is no confident level)."""
    image, alpha = _scene(6)
    glass = cv2.erode((alpha >= 1).astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    truth = np.where(glass, np.float32(0.5), alpha)
    matte = _network_matte(truth, grid)
    deep = cv2.erode(glass.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    assert deep.sum() > 2000
    for path, out in _runs(image, matte):
        assert abs(float(out[deep].mean()) - 0.5) < 0.03, (path, out[deep].mean())
        assert np.abs(out[deep] - 0.5).max() < 0.1, (path, np.abs(out[deep] - 0.5).max())


def test_confident_levels_are_the_mattes_own_and_translucency_is_not_one():
    m = np.full((64, 64), 0.03, np.float32)
    m[8:56, 8:56] = 0.97
    m[20:44, 20:44] = 0.5  # a large translucent area
    low, high = trimapmod.confident_levels(m)
    assert abs(low - 0.03) < 1 / 255 and abs(high - 0.97) < 1 / 255
    c = trimapmod.calibrate(m)
    assert c[0, 0] == 0.0 and c[10, 10] == 1.0 and abs(c[32, 32] - 0.5) < 0.01
    # a binary mask and a matte with only one kind of confident pixel are left alone
    binary = (m > 0.5).astype(np.float32)
    assert trimapmod.calibrate(binary) is binary
    uniform = np.full((8, 8), 0.9, np.float32)
    assert trimapmod.confident_levels(uniform) == (0.0, 1.0)
    assert np.array_equal(
        pipeline.refine(np.zeros((32, 32, 3), np.uint8), uniform).alpha, np.full((32, 32), 0.9, np.float32)
    )


def test_only_ground_truth_and_its_area_average_count_as_exact():
    """An exact matte's residuals are given in full (no cap): a network's never is one."""
    _, alpha = _scene()
    shrunk = cv2.resize(alpha, (GRID, GRID), interpolation=cv2.INTER_AREA)
    assert trimapmod.is_exact(alpha) and trimapmod.is_exact(shrunk)
    assert not trimapmod.is_exact(_network_matte(alpha))
    # ISNet's interior at 254/255, and a float interior just under 1, are estimates too
    assert not trimapmod.is_exact(np.where(shrunk > 0.99, np.float32(254 / 255), shrunk))
    assert not trimapmod.is_exact(np.where(shrunk > 0.99, np.float32(0.998), shrunk))


def test_weighted_fit_with_equal_weights_is_the_guided_filter():
    rng = np.random.default_rng(3)
    guide = cv2.GaussianBlur(rng.random((48, 40, 3), dtype=np.float32), (0, 0), 1.0)
    src = cv2.GaussianBlur(rng.random((48, 40), dtype=np.float32), (0, 0), 2.0)
    plain = gf.guided_coefficients(guide, src, 2, 3e-5)
    for level in (1.0, 0.3):
        weighted = gf.weighted_guided_coefficients(guide, src, np.full_like(src, level), 2, 3e-5)
        np.testing.assert_allclose(weighted, plain, atol=2e-3)


def test_confidence_weight_trusts_the_sure_ends_and_not_the_middle():
    w = gf.confidence_weight(np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32), 0.05)
    np.testing.assert_allclose(w, [1.05, 0.1125, 0.05, 0.1125, 1.05], rtol=1e-6)


def test_a_blurred_network_edge_is_pulled_onto_the_photos_colour_edge():
    """A matte of the image's own size whose edge the network blurred (σ = 2 px, levels 0.03/0.97).

    The sharpening fits each window's colour line to the pixels the matte is sure of, so the soft
    ramp follows the photo's sharp colour edge: the error on the edge falls well below the matte's.
    A plain guided filter reproduces most of the ramp (about 0.9× the matte's error here)."""
    image, alpha = _scene()
    matte = np.float32(0.03) + cv2.GaussianBlur(alpha, (0, 0), 2.0) * np.float32(0.94)
    smooth = cv2.GaussianBlur(alpha, (0, 0), 4.0)
    edge = (smooth > 0.01) & (smooth < 0.99)
    given = np.abs(trimapmod.calibrate(matte) - alpha)[edge].mean()
    for path, out in _runs(image, matte):
        err = np.abs(out - alpha)[edge].mean()
        assert err < 0.7 * given, (path, err, given)
