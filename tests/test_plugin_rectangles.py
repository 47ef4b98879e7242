"""The shared plugin client's rectangle helpers (``plugins/maskd_client.py``), used by both plugins."""

from __future__ import annotations

import pytest
from maskd.plugins import maskd_client as mc


def test_crop_and_place_pixels_round_trip():
    """The plugins' rectangle helpers: a layer placed in a wider region (a shadow's canvas) and the
    layer's part cut back out of the reply are the same bytes; any bytes per pixel; bad rects refused."""
    region, rect = (-3, -2, 10, 7), (1, 1, 4, 3)
    for pixel_bytes in (1, 2, 4, 8):
        data = bytes((7 * i + 3) % 251 for i in range(rect[2] * rect[3] * pixel_bytes))
        wide = mc.place_pixels(data, rect, region, pixel_bytes)
        assert len(wide) == region[2] * region[3] * pixel_bytes
        assert wide.count(0) >= (region[2] * region[3] - rect[2] * rect[3]) * pixel_bytes
        assert mc.crop_pixels(wide, region, rect) == data
        assert mc.crop_pixels(wide, region, rect, pixel_bytes) == data
        assert mc.crop_pixels(wide, region, region) == wide
    # one row of a 3×2 u8 image: the second row's middle pixel
    assert mc.crop_pixels(bytes(range(6)), (0, 0, 3, 2), (1, 1, 1, 1)) == bytes([4])
    for bad in ((5, 1, 4, 3), (-4, 0, 2, 2)):
        with pytest.raises(ValueError):
            mc.crop_pixels(bytes(70), region, bad)
        with pytest.raises(ValueError):
            mc.place_pixels(bytes(8), bad, region, 1)
