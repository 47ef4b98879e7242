"""core.trimap: the uncertain band on the model grid, its radius in model pixels, degenerate mattes."""

from __future__ import annotations

import cv2
import numpy as np
from maskd.core import trimap


def _disc(size, radius_frac=0.3, soft=True):
    yy, xx = np.mgrid[0:size, 0:size]
    d = np.hypot(yy - size / 2, xx - size / 2) - radius_frac * size
    return np.clip(0.5 - d / (size / 64), 0, 1).astype(np.float32) if soft else (d < 0).astype(np.float32)


def test_degenerate_mattes_have_no_band():
    for value in (0.0, 1.0):
        band, fg = trimap.band_from_matte(np.full((16, 16), value, np.float32))
        assert not band.any() and fg.all() == (value == 1.0)


def test_band_covers_soft_values_and_hard_steps():
    soft = _disc(64)
    band, fg = trimap.band_from_matte(soft, radius=0)
    assert np.array_equal(band, (soft > 0.01) & (soft < 0.99) | _step(fg))
    hard = _disc(64, soft=False)
    band, _ = trimap.band_from_matte(hard, radius=0)
    assert band.any() and band[32, 32] == 0 and band[0, 0] == 0
    assert band[32, 32 + int(0.3 * 64)] or band[32, 32 + int(0.3 * 64) - 1]


def _step(fg):
    u8 = fg.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    return cv2.dilate(u8, k) != cv2.erode(u8, k)


def test_radius_is_in_model_pixels_so_the_band_scales_with_the_image():
    matte = _disc(64)
    band, _ = trimap.band_from_matte(matte, radius=2)
    small = trimap.upscale_nearest(band, (256, 256)).mean()
    large = trimap.upscale_nearest(band, (1024, 1024)).mean()
    assert abs(small - large) < 0.01  # same share of the picture at every output size
    wider, _ = trimap.band_from_matte(matte, radius=4)
    assert wider.sum() > band.sum()


def test_trimap_values():
    t = trimap.trimap(_disc(64), radius=1)
    assert set(np.unique(t)) == {0, 128, 255}
    assert t[32, 32] == 255 and t[0, 0] == 0
