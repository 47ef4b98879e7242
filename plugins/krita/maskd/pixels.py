"""Krita pixel buffers ↔ what the maskd daemon takes, in the standard library only.

Krita hands out ``pixelData`` as tightly packed, row-major, little-endian samples whose order
depends on the colour depth: integer RGBA (U8, U16) is **B,G,R,A**, float RGBA (F16, F32) is
**R,G,B,A**, GRAYA is gray, alpha. The daemon converts any of these itself, so this module only
names the layout, picks out or replaces the alpha channel with slice assignments (fast: a
4000×4000 layer takes tens of milliseconds) and builds the cut-out outputs' pixels. The
transparency mask needs no conversion: it is the daemon's 8-bit alpha as is. No Krita import
here, so it is unit-tested outside Krita.
"""

from __future__ import annotations

import struct
from operator import add

try:  # colour and rectangle facts live in the client the installer copies next to the plugin
    from .maskd_client import Bounds, linear_to_srgb, parse_colour, srgb_to_linear
    from .maskd_client import colour_hex as color_hex  # noqa: F401  (the runner's name)
except ImportError:  # this file loaded on its own outside Krita (its tests): the repository's client
    from maskd.plugins.maskd_client import Bounds, linear_to_srgb, parse_colour, srgb_to_linear
    from maskd.plugins.maskd_client import colour_hex as color_hex  # noqa: F401

# (colour model, depth) -> (daemon layout, daemon dtype)
_LAYOUTS = {
    ("RGBA", "U8"): ("BGRA", "u8"),
    ("RGBA", "U16"): ("BGRA", "u16"),
    ("RGBA", "F16"): ("RGBA", "f16"),
    ("RGBA", "F32"): ("RGBA", "f32"),
    ("GRAYA", "U8"): ("GRAYA", "u8"),
    ("GRAYA", "U16"): ("GRAYA", "u16"),
    ("GRAYA", "F16"): ("GRAYA", "f16"),
    ("GRAYA", "F32"): ("GRAYA", "f32"),
}
CHANNELS = {"BGRA": 4, "RGBA": 4, "GRAYA": 2}
SAMPLE_BYTES = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
_STRUCT = {"u16": "H", "f16": "e", "f32": "f"}
# colour models the plugin converts to RGBA before reading (Krita does the conversion)
CONVERTIBLE_MODELS = ("CMYKA", "LABA", "XYZA", "YCbCrA")
# depth to convert to when the layer's own model cannot be sent
CONVERT_DEPTH = {"U8": "U8", "U16": "U16", "F16": "F32", "F32": "F32"}
SRGB_PROFILE = "sRGB-elle-V2-srgbtrc.icc"


class UnsupportedLayer(Exception):
    """The layer's colour space cannot be sent as is (the caller converts or refuses)."""


class PixelFormat:
    """How one Krita layer's bytes are laid out, and what to tell the daemon about them."""

    __slots__ = ("model", "depth", "layout", "dtype", "transfer")

    def __init__(self, model: str, depth: str, profile: str = ""):
        key = (model, depth)
        if key not in _LAYOUTS:
            raise UnsupportedLayer(f"{model}/{depth}")
        self.model, self.depth = model, depth
        self.layout, self.dtype = _LAYOUTS[key]
        self.transfer = "linear" if is_linear_profile(profile) else "srgb"

    @property
    def channels(self) -> int:
        return CHANNELS[self.layout]

    @property
    def sample_bytes(self) -> int:
        return SAMPLE_BYTES[self.dtype]

    @property
    def pixel_bytes(self) -> int:
        return self.channels * self.sample_bytes

    @property
    def alpha_offset(self) -> int:
        """Byte offset of the alpha sample inside one pixel."""
        return (self.channels - 1) * self.sample_bytes

    def __repr__(self) -> str:
        return f"PixelFormat({self.model}/{self.depth} -> {self.layout} {self.dtype} {self.transfer})"


def is_linear_profile(profile: str) -> bool:
    """Krita's linear-light profiles: the elle ``-g10`` family, "scRGB (linear)", "... linear gamma ..."."""
    name = (profile or "").lower()
    return "g10" in name or "linear" in name


# ----------------------------------------------------------------------------- rectangles


def union(a, b) -> Bounds:
    """The smallest rectangle holding both (x, y, w, h) rectangles."""
    return Bounds(*a).union(b)


def relative_roi(region, selection) -> Bounds | None:
    """The selection's bounding box in the coordinates of ``region`` (both image rectangles); None
    when they do not overlap."""
    overlap = Bounds(*region).intersection(selection)
    if overlap.is_empty:
        return None
    return Bounds(overlap.x - region[0], overlap.y - region[1], overlap.width, overlap.height)


# ----------------------------------------------------------------------------- alpha channel


def _sample_columns(pixels, fmt: PixelFormat):
    """The alpha samples' bytes, one byte-column per byte of the sample (each a bytes object)."""
    step, base = fmt.pixel_bytes, fmt.alpha_offset
    if not isinstance(pixels, (bytes, bytearray)):
        pixels = bytes(pixels)
    return [bytes(pixels[base + i :: step]) for i in range(fmt.sample_bytes)]


def _interleave(columns) -> bytearray:
    n = len(columns)
    out = bytearray(len(columns[0]) * n)
    for i, col in enumerate(columns):
        out[i::n] = col
    return out


_ONE = {"u16": struct.pack("<H", 65535), "f16": struct.pack("<e", 1.0), "f32": struct.pack("<f", 1.0)}


def is_opaque(pixels, fmt: PixelFormat) -> bool:
    """Whether every alpha sample is fully opaque (the common case: a photo layer)."""
    cols = _sample_columns(pixels, fmt)
    if fmt.dtype == "u8":
        return cols[0].count(255) == len(cols[0])
    one = _ONE[fmt.dtype]
    return all(col.count(one[i]) == len(col) for i, col in enumerate(cols))


def alpha_u8(pixels, fmt: PixelFormat) -> bytes:
    """The layer's alpha as one byte per pixel (U16 keeps the high byte; floats are clamped)."""
    cols = _sample_columns(pixels, fmt)
    if fmt.dtype == "u8":
        return cols[0]
    if fmt.dtype == "u16":
        return cols[1]
    values = struct.unpack(f"<{len(cols[0])}{_STRUCT[fmt.dtype]}", _interleave(cols))
    return bytes(0 if not v > 0 else 255 if v >= 1 else int(v * 255 + 0.5) for v in values)


# PRODUCT[(a << 8) | r] = round(a * r / 255): the layer's own alpha times the subject's alpha
_PRODUCT = bytes((a * r + 127) // 255 for a in range(256) for r in range(256))
_SHIFT8 = [a << 8 for a in range(256)]


def _decode(samples: bytes, dtype: str) -> list:
    """Samples as floats in [0, 1] (slow path: only layers with partial transparency)."""
    if dtype == "u8":
        return [v / 255.0 for v in samples]
    values = struct.unpack(f"<{len(samples) // SAMPLE_BYTES[dtype]}{_STRUCT[dtype]}", samples)
    if dtype == "u16":
        return [v / 65535.0 for v in values]
    return [min(1.0, max(0.0, v)) if v == v else 0.0 for v in values]


def _encode(values, dtype: str) -> bytes:
    if dtype == "u8":
        return bytes(min(255, max(0, int(v * 255 + 0.5))) for v in values)
    if dtype == "u16":
        return struct.pack(f"<{len(values)}H", *(min(65535, max(0, int(v * 65535 + 0.5))) for v in values))
    return struct.pack(f"<{len(values)}{_STRUCT[dtype]}", *values)


def cutout_alpha(result_alpha: bytes, result_dtype: str, pixels, fmt: PixelFormat) -> bytes:
    """Alpha for the cut-out outputs, in the layer's dtype: the layer's own alpha × the daemon's.

    The daemon's alpha is the subject's coverage (only fully transparent pixels are forced to 0),
    so the cut-out shows exactly what the layer with the transparency mask shows.
    """
    if is_opaque(pixels, fmt):
        return convert_alpha(result_alpha, result_dtype, fmt.dtype)
    if fmt.dtype == "u8" and result_dtype == "u8":
        layer = _sample_columns(pixels, fmt)[0]
        return bytes(map(_PRODUCT.__getitem__, map(add, map(_SHIFT8.__getitem__, layer), result_alpha)))
    layer = _decode(bytes(_interleave(_sample_columns(pixels, fmt))), fmt.dtype)
    result = _decode(result_alpha, result_dtype)
    return _encode([a * r for a, r in zip(layer, result)], fmt.dtype)


def convert_alpha(alpha: bytes, src_dtype: str, dst_dtype: str) -> bytes:
    """Samples from one dtype to another (only for the cut-out outputs, not the mask)."""
    if src_dtype == dst_dtype:
        return bytes(alpha)
    return _encode(_decode(alpha, src_dtype), dst_dtype)


def cutout_pixels(
    pixels,
    fmt: PixelFormat,
    alpha: bytes,
    foreground: bytes | None = None,
    foreground_dtype: str | None = None,
) -> bytearray:
    """The layer's pixels with their alpha replaced by ``alpha`` (``fmt.dtype`` samples) and, when
    ``foreground`` (W×H×3 straight R,G,B from the daemon) is given, the colours replaced too."""
    out = bytearray(pixels)
    step, size = fmt.pixel_bytes, fmt.sample_bytes
    base = fmt.alpha_offset
    for i in range(size):
        out[base + i :: step] = alpha[i::size]
    if foreground is not None:
        fg = foreground
        if (foreground_dtype or fmt.dtype) != fmt.dtype:
            fg = convert_alpha(fg, foreground_dtype, fmt.dtype)  # same per-sample conversion
        fstep = 3 * size
        if fmt.layout == "GRAYA":
            # gray layers keep one channel: the decontaminated green is the closest single value
            for i in range(size):
                out[i::step] = fg[size + i :: fstep]
        else:
            order = (2, 1, 0) if fmt.layout == "BGRA" else (0, 1, 2)  # slot -> R,G,B index
            for slot, rgb_index in enumerate(order):
                for i in range(size):
                    out[slot * size + i :: step] = fg[rgb_index * size + i :: fstep]
    return out


# ----------------------------------------------------------------------------- solid colours
# (the shadow and background layers: one colour, written in the new layer's own format)


def parse_color(text) -> tuple:
    """A colour as ``maskd remove --background`` takes it (``#rrggbb``, ``#rgb``, a name …) ->
    sRGB (r, g, b) in 0..1; ``ValueError`` with the forms it takes otherwise."""
    return parse_colour(text)[:3]


def solid_pixel(rgb, fmt: PixelFormat) -> bytes:
    """One opaque pixel of the sRGB colour ``rgb`` in ``fmt``'s byte layout.

    Linear-light profiles get the colour decoded to linear; grayscale layers get its luminance
    (Rec. 709 weights, computed in linear light) in their own transfer.
    """
    linear = [srgb_to_linear(c) for c in rgb]
    if fmt.layout == "GRAYA":
        y = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
        values = [y if fmt.transfer == "linear" else linear_to_srgb(y)]
    else:
        values = list(linear if fmt.transfer == "linear" else rgb)
        if fmt.layout == "BGRA":
            values.reverse()
    values.append(1.0)
    return bytes(_encode(values, fmt.dtype))
