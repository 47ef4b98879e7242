"""core.foreground: blur-fusion recovers the subject's colour in soft pixels, exact where opaque."""

from __future__ import annotations

import numpy as np
from maskd.core import foreground


def _scene(h=64, w=96):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    alpha = np.clip((48 - xx) / 5, 0, 1)  # opaque left, a soft edge 5 px wide, transparent right
    fg = np.dstack([np.full((h, w), 0.9), np.full((h, w), 0.3), np.full((h, w), 0.2)]).astype(np.float32)
    bg = np.dstack([0.1 + 0.1 * np.sin(yy / 5), np.full((h, w), 0.8), 0.5 + 0.2 * np.cos(xx / 7)]).astype(
        np.float32
    )
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return image, alpha, fg


def test_blur_fusion_removes_the_old_background():
    image, alpha, fg = _scene()
    est = foreground.blur_fusion(image, alpha)
    soft = (alpha > 0.05) & (alpha < 0.95)
    raw_err = np.abs(image - fg)[soft].mean()
    est_err = np.abs(est - fg)[soft].mean()
    assert est_err < 0.25 * raw_err
    assert est.dtype == np.float32 and est.min() >= 0 and est.max() <= 1


def test_opaque_pixels_keep_their_colour_exactly():
    image, alpha, _ = _scene()
    est = foreground.blur_fusion(image, alpha)
    assert np.array_equal(est[alpha == 1], image[alpha == 1])


def test_fuse_works_on_pixel_lists_and_radii_scale():
    image, alpha, _ = _scene()
    fm, bm = foreground.fusion_means(image, alpha, 9, 2)
    grid = foreground.fuse(image, alpha, fm, bm)
    listed = foreground.fuse(image.reshape(-1, 3), alpha.ravel(), fm.reshape(-1, 3), bm.reshape(-1, 3))
    assert np.allclose(grid.reshape(-1, 3), listed)
    assert foreground.radii(1000) == (90, 6)
    assert foreground.radii(4000) == (360, 24)
    assert foreground.radii(1) == (1, 1)


def test_degenerate_alphas():
    image, _, _ = _scene(8, 8)
    for value in (0.0, 1.0):
        est = foreground.blur_fusion(image, np.full((8, 8), value, np.float32))
        assert np.isfinite(est).all()
    assert np.array_equal(foreground.blur_fusion(image, np.ones((8, 8), np.float32)), image)
    one = foreground.blur_fusion(np.full((1, 1, 3), 0.5, np.float32), np.full((1, 1), 0.5, np.float32))
    assert one.shape == (1, 1, 3) and np.isfinite(one).all()


def test_nearest_background_takes_the_closest_samples_and_says_where_it_found_none():
    h, w = 8, 64
    image = np.zeros((h, w, 3), np.float32)
    image[:, :8] = (0.2, 0.4, 0.6)  # background samples on the far left
    image[:, 8:] = (0.9, 0.9, 0.9)  # not background (weight 0): must never leak in
    weight = np.zeros((h, w), np.float32)
    weight[:, :8] = 1.0
    est, found = foreground.nearest_background(image, weight, foreground.fill_radii(16))
    assert found[:, :20].all() and not found[:, 40:].any()
    assert np.allclose(est[found], (0.2, 0.4, 0.6), atol=1e-5)
    assert np.array_equal(est[~found], np.zeros_like(est[~found]))
    none, nowhere = foreground.nearest_background(image, np.zeros((h, w), np.float32), [1, 2])
    assert not nowhere.any() and not none.any()
    assert foreground.fill_radii(40) == [1, 2, 4, 8, 16, 32, 40] and foreground.fill_radii(1) == [1]
    assert np.allclose(foreground.background_weight(np.array([0.0, 0.1, 0.5, 1.0])), [1.0, 0.9, 0.0, 0.0])


def test_unmix_recovers_a_textured_subject_where_blur_fusion_smooths_it():
    """Soft pixels of a detailed subject (hair strands of different colours) over a known background:
    F = (I − (1 − α)·B)/α gives back each pixel's own colour; blur-fusion returns the local mean."""
    rng = np.random.default_rng(0)
    h, w = 32, 32
    fg = rng.uniform(0.0, 1.0, (h, w, 3)).astype(np.float32)
    alpha = rng.uniform(0.05, 0.95, (h, w)).astype(np.float32)
    bg = np.full((h, w, 3), (0.1, 0.5, 0.2), np.float32)
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    smooth = foreground.blur_fusion(image, alpha)
    est = foreground.unmix(image, alpha, bg, smooth)
    trusted = alpha >= foreground.UNMIX_FULL
    assert np.abs(est - fg)[trusted].max() < 1e-4
    assert np.abs(est - fg)[trusted].mean() < 0.1 * np.abs(smooth - fg)[trusted].mean()
    faint = alpha < 0.1  # fades towards the smooth colour where 1/α would amplify noise
    share = (alpha[faint] / foreground.UNMIX_FULL)[:, None]  # the unmixed colour's weight there
    assert (np.abs(est[faint] - smooth[faint]) <= share + 1e-5).all()
    assert est.dtype == np.float32 and est.min() >= 0 and est.max() <= 1


def test_unmix_keeps_the_raw_colour_where_no_real_colour_fits():
    """An unmixed colour outside [0, 1]³ means the background estimate (or α) is wrong at that
    pixel: the result then stays near the raw pixel instead of clipping to a saturated colour."""
    image = np.array([[0.5, 0.5, 0.5], [0.3, 0.6, 0.2]], np.float32)
    background = np.array([[0.9, 0.9, 0.9], [0.1, 0.5, 0.2]], np.float32)
    alpha = np.array([0.5, 0.5], np.float32)
    smooth = np.zeros((2, 3), np.float32)
    est = foreground.unmix(image, alpha, background, smooth)
    # pixel 0: (0.5 − 0.5·0.9)/0.5 = 0.1 (in gamut, exact); pixel 1: (0.3 − 0.05)/0.5 = 0.5 etc.
    assert np.allclose(est, [[0.1, 0.1, 0.1], [0.5, 0.7, 0.2]], atol=1e-6)
    # α = 0.2 over a light background: (0.5 − 0.8·0.9)/0.2 = −1.1, 1.1 outside the cube
    est = foreground.unmix(image[:1], np.array([0.2], np.float32), background[:1], smooth[:1])
    trust = foreground.GAMUT_TOLERANCE / (foreground.GAMUT_TOLERANCE + 1.1)
    assert np.allclose(est, 0.5 - 0.5 * trust, atol=1e-5)
    assert np.abs(est - 0.5).max() < 0.01  # the raw pixel's colour, not black
