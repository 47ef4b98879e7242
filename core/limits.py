"""Limits on what maskd decodes and on the numbers it accepts: one place, used on every path.

Why: files and requests can be hostile. A 2 MB PNG can declare 16000×16000 16-bit pixels (4 GB
once decoded), a zip member of a few MB can inflate to gigabytes, and a ``grow`` of 3000 pixels
keeps a worker busy for minutes. So every reader checks what a file *declares* (header sizes, zip
members' uncompressed sizes) against these limits before it decodes or allocates anything, and
every option is checked against one table of bounds — the command line, the daemon's request
parsing and the batch engines all call the same functions, so no path is left unguarded.

Limits (docs/limits.md explains them for users):

- ``max_pixels()``: the largest image or layer decoded, default ``DEFAULT_MAX_PIXELS`` (120 MP:
  above every camera in common use, ~100 MP, under the 256 MP of a 16000² bomb). The environment
  variable ``MASKD_MAX_PIXELS`` changes it for machines with the memory for more.
- ``max_decoded_bytes()``: ``max_pixels() × BYTES_PER_PIXEL`` (16: RGBA at 32-bit float). What a
  decoder may allocate for one image's pixels; it also bounds a zip member's inflated size and the
  size of a layered file read into memory.
- ``MAX_XML_BYTES``: a layered file's ``stack.xml`` / ``maindoc.xml`` (real ones are kilobytes).
- ``OPTION_BOUNDS``: every numeric option's range, with its unit (``check_option``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass

from maskd.core.errors import InputError

DEFAULT_MAX_PIXELS = 120_000_000
BYTES_PER_PIXEL = 16  # the decoded-bytes budget per allowed pixel: RGBA at 32-bit float
MAX_XML_BYTES = 64 * 2**20
ENV_MAX_PIXELS = "MASKD_MAX_PIXELS"
LIMIT_WORDS = "over maskd's limit"  # in every refusal below (layer notes are recognised by it)


class ImageTooLarge(InputError):
    """A file declares more pixels or bytes than maskd decodes (checked before decoding)."""


def max_pixels() -> int:
    """The pixel limit now (``MASKD_MAX_PIXELS`` when set to a positive integer, else the default)."""
    text = os.environ.get(ENV_MAX_PIXELS, "").strip().replace("_", "")
    if text:
        try:
            value = int(float(text))
        except ValueError:
            value = 0
        if value <= 0:
            raise InputError(f"{ENV_MAX_PIXELS}={text!r}: give a positive number of pixels (e.g. 200000000)")
        return value
    return DEFAULT_MAX_PIXELS


def max_decoded_bytes() -> int:
    return max_pixels() * BYTES_PER_PIXEL


def _mp(pixels: float) -> str:
    mp = pixels / 1e6
    return f"{mp:,.0f} MP" if mp >= 10 else f"{mp:.3g} MP"


def _advice() -> str:
    return (
        f"shrink it first, or raise the limit with {ENV_MAX_PIXELS}=N (pixels) if this machine has the memory"
    )


def check_pixels(what, width: int, height: int, bytes_per_pixel: int = 4) -> None:
    """Raise ``ImageTooLarge`` when ``what`` (a file name, "layer 'x' of f.kra") declares a size over
    the limits: ``width × height`` pixels, or ``width × height × bytes_per_pixel`` decoded bytes."""
    width, height = int(width), int(height)
    if width < 0 or height < 0:
        raise ImageTooLarge(f"{what} declares a negative size ({width}×{height}); the file is damaged")
    pixels = width * height
    limit = max_pixels()
    if pixels > limit:
        raise ImageTooLarge(
            f"{what} declares {width}×{height} pixels ({_mp(pixels)}), over maskd's limit of "
            f"{_mp(limit)}; {_advice()}"
        )
    nbytes = pixels * max(1, int(bytes_per_pixel))
    if nbytes > max_decoded_bytes():
        raise ImageTooLarge(
            f"{what} declares {width}×{height} pixels of {bytes_per_pixel} bytes "
            f"({nbytes / 2**30:.1f} GiB decoded), over maskd's limit of "
            f"{max_decoded_bytes() / 2**30:.1f} GiB; {_advice()}"
        )


def check_bytes(what, nbytes: int, limit: int | None = None) -> None:
    """Raise ``ImageTooLarge`` when ``what`` (a zip member, a whole file) would take more than
    ``limit`` bytes (default ``max_decoded_bytes()``) in memory."""
    limit = max_decoded_bytes() if limit is None else limit
    if nbytes > limit:
        raise ImageTooLarge(
            f"{what} is {nbytes / 2**20:,.0f} MiB once read, over maskd's limit of "
            f"{limit / 2**20:,.0f} MiB; {_advice()}"
        )


def check_member(archive, info, limit: int | None = None) -> None:
    """A zip member's *declared* uncompressed size against ``limit`` (before inflating it).

    Python's zipfile never inflates past the declared size (a member that inflates to more fails
    its CRC check), so checking the declaration bounds the memory a read can take.
    """
    check_bytes(f"{archive}: the member {info.filename!r}", info.file_size, limit)


# ---- image headers ------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def png_header(data: bytes) -> tuple[int, int, int]:
    """(width, height, decoded bytes per pixel) from the first 26 bytes of a PNG; ``InputError`` if
    it is not one. Bytes per pixel are at least 4: maskd decodes layer PNGs to RGBA."""
    if len(data) < 26 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise InputError("not a PNG image")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    channels = _PNG_CHANNELS.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        raise InputError(f"a PNG with an unknown pixel format (depth {depth}, colour type {colour})")
    return width, height, max(channels * (2 if depth == 16 else 1), 4)


def png_max_file_bytes(width: int, height: int, bytes_per_pixel: int) -> int:
    """The most bytes a real PNG of this size can take: its raw rows (a stored, uncompressed deflate
    stream), a little framing per block, and 16 MiB for metadata chunks (ICC profiles, text)."""
    raw = height * (1 + width * bytes_per_pixel)
    return raw + raw // 1000 + 16 * 2**20


def _bytes_per_pixel_pil(im) -> int:
    """Decoded bytes per pixel of a lazily opened Pillow image, from its bands and raw sample size."""
    bands = len(im.getbands())
    raw = " ".join(str(t[3]) for t in (im.tile or [])[:1]) + " " + im.mode
    size = 1
    if "16" in raw:
        size = 2
    if "32" in raw or im.mode in ("I", "F"):
        size = 4
    if "64" in raw:
        size = 8
    return max(bands * size, 1)


def check_image_file(path) -> None:
    """Check an image file's declared size from its header (Pillow reads only the header here).

    Files Pillow cannot identify are left to the decoder that follows (OpenCV, which maskd gives the
    same pixel limit through ``OPENCV_IO_MAX_IMAGE_PIXELS``).
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # maskd's own check follows
            with Image.open(path) as im:  # lazy: reads the header, decodes nothing
                width, height = im.size
                bpp = _bytes_per_pixel_pil(im)
    except Image.DecompressionBombError as exc:  # Pillow's own check came first (twice its setting)
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{_mp(int(found.group(1)))}" if found else f"over {_mp(2 * Image.MAX_IMAGE_PIXELS)}"
        raise ImageTooLarge(
            f"{path} declares {size} of pixels, over maskd's limit of {_mp(max_pixels())}; {_advice()}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return
    check_pixels(path, width, height, bpp)


def configure_decoders() -> None:
    """Keep Pillow's and OpenCV's own bomb checks on, as a second line behind maskd's.

    Pillow: ``MAX_IMAGE_PIXELS`` at 4× maskd's limit (it warns above it and refuses at twice it), so
    maskd's check — whose message names the sizes — normally speaks first. OpenCV:
    ``OPENCV_IO_MAX_IMAGE_PIXELS`` (read once, at its first decode) for the formats Pillow cannot
    identify, never below the default limit (a lowered limit must not stick to the whole process).
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = 4 * max_pixels()
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max(max_pixels(), DEFAULT_MAX_PIXELS)))


# ---- option bounds ------------------------------------------------------------------------------


def _num(v: float) -> str:
    """A number as a user typed it: whole numbers without a decimal point or exponent."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e12 else f"{v:g}"


@dataclass(frozen=True)
class Bound:
    """An option's allowed range: ``low``..``high`` (open ends where ``open_low``/``open_high``)."""

    low: float
    high: float
    unit: str
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def describe(self) -> str:
        lo = "more than " if self.open_low else ""
        hi = "less than " if self.open_high else ""
        return f"{lo}{_num(self.low)} to {hi}{_num(self.high)} {self.unit}".rstrip()

    def contains(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below


# Why these numbers: ``grow`` dilates with a disc whose cost grows with the radius squared (measured:
# 9 s at 50 px, ~170 s at 200 px on a 12 MP photo, 2 shared cores), and a 100-pixel grow or feather
# already swallows the edge detail of any subject; useful values are a few pixels. Band radii are in
# model pixels (the quality modes use 1..3). Shadow lengths are fractions of the subject's height;
# pixel lengths and margins cannot usefully exceed the largest canvas (``canvas.MAX_CANVAS_SIDE``).
OPTION_BOUNDS = {
    "grow": Bound(-100, 100, "pixels (negative shrinks)", integer=True),
    "feather": Bound(0, 100, "pixels"),
    "band_radius": Bound(0, 32, "model pixels", integer=True),
    "roi_margin": Bound(0, 2, "× the region's longer side"),
    "threshold": Bound(0, 1, "", open_low=True, open_high=True),
    "shadow_fraction": Bound(0, 10, "× the subject's height"),
    "shadow_pixels": Bound(0, 30000, "pixels"),
    "margin_pixels": Bound(0, 30000, "pixels"),
    "roi_side": Bound(1, 1_000_000, "pixels", integer=True),
    "roi_position": Bound(-1_000_000, 1_000_000, "pixels", integer=True),
}


def check_option(name: str, value, label: str | None = None, bound: str | None = None):
    """``value`` as a number within ``OPTION_BOUNDS[bound or name]``, or ``InputError`` naming it."""
    b = OPTION_BOUNDS[bound or name]
    label = label or name.replace("_", " ")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(str(value).strip())
        except ValueError:
            raise InputError(f"{label} {value!r} is not a number; give {b.describe()}") from None
    if not math.isfinite(value):
        raise InputError(f"{label} {value!r} is not a finite number; give {b.describe()}")
    if b.integer and value != int(value):
        raise InputError(f"{label} {value!r} must be a whole number of {b.unit.split(' ')[0]}")
    if not b.contains(value):
        raise InputError(f"{label} {_num(value)} is out of range: give {b.describe()}")
    return int(value) if b.integer else value


def check_cutout_options(opts) -> None:
    """The numeric fields of a ``CutoutOptions`` (``pipeline.CutoutOptions.validate`` calls this)."""
    check_option("grow", opts.grow)
    check_option("feather", opts.feather)
    check_option("roi_margin", opts.roi_margin, "roi margin")
    if opts.threshold is not None:
        check_option("threshold", opts.threshold)
    if opts.band_radius is not None:
        check_option("band_radius", opts.band_radius, "band radius")
    if opts.roi is not None:
        if not isinstance(opts.roi, (tuple, list)) or len(opts.roi) != 4:
            raise InputError(f"roi {opts.roi!r} must be (x, y, width, height)")
        for part, v in zip(("x", "y"), opts.roi[:2]):
            check_option("roi_position", v, f"roi {part}")
        for part, v in zip(("width", "height"), opts.roi[2:]):
            check_option("roi_side", v, f"roi {part}")


def option_type(name: str, label: str | None = None):
    """An argparse ``type=`` that parses and checks option ``name`` (the same bounds as the daemon)."""
    b = OPTION_BOUNDS[name]

    def convert(text: str):
        try:
            value = int(text) if b.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole ' if b.integer else ''}number; give {b.describe()}"
            ) from None
        try:
            return check_option(name, value, label)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert
