"""The Krita plugin's pixel conversion (``plugins/krita/maskd/pixels.py``), outside Krita.

The module is loaded from its file: the package's ``__init__`` needs Krita's PyQt5.
"""

from __future__ import annotations

import importlib.util
import struct

import numpy as np
import pytest

from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location("maskd_krita_pixels", REPO / "plugins/krita/maskd/pixels.py")
px = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(px)


def _pixels(layout, dtype, rgba):
    """rgba: float (H, W, 4) in [0, 1] -> Krita's bytes for layout/dtype."""
    r, g, b, a = (rgba[..., i] for i in range(4))
    chans = {"BGRA": [b, g, r, a], "RGBA": [r, g, b, a], "GRAYA": [(r + g + b) / 3, a]}[layout]
    img = np.stack(chans, -1)
    if dtype == "u8":
        return (img * 255 + 0.5).astype(np.uint8).tobytes()
    if dtype == "u16":
        return (img * 65535 + 0.5).astype("<u2").tobytes()
    return img.astype({"f16": "<f2", "f32": "<f4"}[dtype]).tobytes()


@pytest.mark.parametrize(
    "model,depth,layout,dtype",
    [
        ("RGBA", "U8", "BGRA", "u8"),
        ("RGBA", "U16", "BGRA", "u16"),
        ("RGBA", "F16", "RGBA", "f16"),
        ("RGBA", "F32", "RGBA", "f32"),
        ("GRAYA", "U8", "GRAYA", "u8"),
        ("GRAYA", "F32", "GRAYA", "f32"),
    ],
)
def test_layouts_and_alpha(model, depth, layout, dtype):
    fmt = px.PixelFormat(model, depth, "sRGB-elle-V2-g10.icc")
    assert (fmt.layout, fmt.dtype, fmt.transfer) == (layout, dtype, "linear")
    rng = np.random.default_rng(1)
    rgba = rng.random((5, 7, 4)).astype(np.float32)
    rgba[..., 3] = 1.0
    data = _pixels(layout, dtype, rgba)
    assert len(data) == 5 * 7 * fmt.pixel_bytes
    assert px.is_opaque(data, fmt)
    rgba[2, 3, 3] = 0.5
    data = _pixels(layout, dtype, rgba)
    assert not px.is_opaque(data, fmt)
    alpha = np.frombuffer(px.alpha_u8(data, fmt), np.uint8).reshape(5, 7).astype(int)
    assert abs(alpha[2, 3] - 127.5) <= 1 and (np.delete(alpha.ravel(), 2 * 7 + 3) == 255).all()


def test_profiles_and_refusals():
    assert px.PixelFormat("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc").transfer == "srgb"
    assert px.PixelFormat("RGBA", "F32", "scRGB (linear)").transfer == "linear"
    with pytest.raises(px.UnsupportedLayer):
        px.PixelFormat("CMYKA", "U8")
    assert px.CONVERT_DEPTH["F16"] == "F32"


def test_cutout_alpha_is_layer_alpha_times_daemon_alpha():
    a = np.repeat(np.arange(256), 256).astype(np.uint8)
    r = np.tile(np.arange(256), 256).astype(np.uint8)
    fmt = px.PixelFormat("GRAYA", "U8")
    pixels = np.stack([np.full_like(a, 7), a], -1).tobytes()
    out = np.frombuffer(px.cutout_alpha(r.tobytes(), "u8", pixels, fmt), np.uint8).astype(float)
    assert np.abs(out - a.astype(float) * r / 255.0).max() <= 0.5 + 1e-9
    # opaque layer: the daemon's alpha as is, converted to the layer's dtype
    fmt16 = px.PixelFormat("RGBA", "U16")
    opaque = struct.pack("<4H", 1, 2, 3, 65535)
    assert px.cutout_alpha(b"\x80", "u8", opaque, fmt16) == struct.pack("<H", 32896)
    # a float layer at half alpha
    fmt32 = px.PixelFormat("RGBA", "F32")
    half = struct.pack("<4f", 0.1, 0.2, 0.3, 0.5)
    assert struct.unpack("<f", px.cutout_alpha(struct.pack("<f", 0.5), "f32", half, fmt32)) == (0.25,)


def test_cutout_replaces_alpha_and_colours_in_krita_order():
    fmt = px.PixelFormat("RGBA", "U8")
    data = bytes([10, 20, 30, 255, 40, 50, 60, 255])  # B,G,R,A ×2
    fg = bytes([1, 2, 3, 4, 5, 6])  # R,G,B ×2 from the daemon
    out = px.cutout_pixels(data, fmt, b"\x80\x00", fg, "u8")
    assert bytes(out) == bytes([3, 2, 1, 128, 6, 5, 4, 0])
    fmt32 = px.PixelFormat("RGBA", "F32", "sRGB-elle-V2-g10.icc")
    data = struct.pack("<8f", 0.1, 0.2, 0.3, 1.0, 0.4, 0.5, 0.6, 1.0)
    alpha = struct.pack("<2f", 0.25, 0.75)
    out = struct.unpack("<8f", px.cutout_pixels(data, fmt32, alpha))
    assert out[3] == 0.25 and out[7] == 0.75 and out[:3] == struct.unpack("<3f", data[:12])
    assert px.convert_alpha(b"\x00\xff", "u8", "u16") == struct.pack("<2H", 0, 65535)


def test_roi_relative_to_layer():
    assert px.relative_roi((5, 3, 80, 64), (30, 20, 40, 30)) == (25, 17, 40, 30)
    assert px.relative_roi((-16, 40, 96, 64), (0, 0, 10, 50)) == (16, 0, 10, 10)
    assert px.relative_roi((0, 0, 10, 10), (20, 20, 5, 5)) is None


def test_solid_pixels_for_shadow_and_background_layers():
    assert px.parse_color("#3366cc") == (0x33 / 255, 0x66 / 255, 0xCC / 255)
    assert px.parse_color("fff") == (1.0, 1.0, 1.0) and px.parse_color("Black") == (0.0, 0.0, 0.0)
    assert px.color_hex(px.parse_color("#AbC")) == "#aabbcc"
    with pytest.raises(ValueError):
        px.parse_color("#12345")
    blue = px.parse_color("#3366cc")
    srgb8 = px.PixelFormat("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")
    assert px.solid_pixel(blue, srgb8) == bytes([204, 102, 51, 255]), "8-bit RGBA is B,G,R,A"
    # linear profiles get linear light; float RGBA is R,G,B,A
    linear32 = px.PixelFormat("RGBA", "F32", "sRGB-elle-V2-g10.icc")
    r, g, b, a = struct.unpack("<4f", px.solid_pixel(blue, linear32))
    assert abs(r - ((0.2 + 0.055) / 1.055) ** 2.4) < 1e-6 and abs(b - ((0.8 + 0.055) / 1.055) ** 2.4) < 1e-6
    assert a == 1.0
    white16 = px.solid_pixel((1.0, 1.0, 1.0), px.PixelFormat("RGBA", "U16"))
    assert struct.unpack("<4H", white16) == (65535,) * 4
    # grayscale: luminance, in the layer's transfer
    gray8 = px.PixelFormat("GRAYA", "U8", "Gray-D50-elle-V2-srgbtrc.icc")
    gray, alpha = px.solid_pixel((1.0, 0.0, 0.0), gray8)
    assert alpha == 255 and abs(gray - 255 * (1.055 * 0.2126 ** (1 / 2.4) - 0.055)) <= 0.5
    half = px.solid_pixel((0.5, 0.5, 0.5), px.PixelFormat("GRAYA", "F16", "g10"))
    gray16, alpha16 = struct.unpack("<2e", half)
    assert abs(gray16 - 0.2140) < 1e-3 and alpha16 == 1.0  # 50% sRGB grey is 21.4% linear
