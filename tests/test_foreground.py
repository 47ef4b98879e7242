"""core.foreground: blur-fusion recovers the subject's colour in soft pixels, exact where opaque."""

from __future__ import annotations

import numpy as np

from core import foreground


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
