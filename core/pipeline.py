"""Image → model matte → full-resolution alpha (+ decontaminated foreground colours).

Why: BiRefNet sees 1024² (2048² for HR); layers are 4000² and more. Stretching the small matte
(Lanczos, as rembg does) turns hair into mush at full size. Here the matte is carried to the
layer's own resolution with the layer's own colours:

0. **Confident levels** (``core.trimap.calibrate``): a network's matte says "sure" with its own
   levels (ISNet's interior is 254/255, others' 0.97; the background carries a haze). The most
   frequent level near 0 and near 1 are stretched to exactly 0 and 1 (an affine map: real
   translucency between keeps its value), before anything else, on every path.
1. **Guided joint upsampling** (``core.guided_filter``): a colour guided filter (r = 1, ε = 1e-5)
   is solved on the model's grid against the image downsampled to that grid; its per-pixel
   linear colour→alpha coefficients (and the offset that makes them reproduce the matte there)
   are interpolated to full resolution and applied to the full-resolution pixels, so edges
   follow the photo's colour edges, and fall back to smooth interpolation where colour is flat.
2. **Trimap** (``core.trimap``): the uncertain band (0.05 < matte < 0.95 and hard steps) on the model's
   grid, widened by a radius in *model* pixels. Outside the band alpha is exactly 0 or 1, and
   no full-resolution work is done there: the band is processed in tiles, spread over the cores.
3. **Back-projection and sharpening** (band only): a soft matte is read as the area average of
   the true alpha over each model pixel, so the full-resolution alpha is corrected until its
   area average matches the matte again (iterative back-projection, as in super-resolution).
   Each model pixel's residual goes to its *soft* pixels, in proportion to ``α(1 − α)``: pixels
   at 0 or 1 keep their value, so the gaps between strands stay clear while the strands take
   back what upsampling dimmed. Between rounds a colour guided filter at full resolution
   (r = 2 px) re-fits alpha to the photo's own colour lines. A hard (binary) mask is no area
   average of anything soft — every real edge would leave intermediate values — so it is
   neither back-projected nor sharpened. No pixel moves more than ``BP_MAX_SHARE`` times its
   cells' residual per step, and a band pixel left far from its 3×3 median *and* from the
   matte is put back to that median (``_drop_isolated``): a refinement must not create holes or
   specks the matte does not carry. A matte of the image's own size is not back-projected
   (nothing to reconstruct) but still sharpened. A network's matte (not ``core.trimap.is_exact``)
   is sharpened *after* each round's back-projection, so the photo's colours, not the matte's
   blurred cells, have the last word; each window's colour line is fitted mostly to the pixels
   the alpha is sure of (weight ``(2α − 1)⁴ + 0.05``: its blurred, shifted soft ramps are the
   least reliable part of it, so what it knows on either side of an edge is carried across the
   ramp along the photo's colours), in 5×5 windows where they hold sure pixels and in 17×17 ones
   where they hold none (a broad area the network was unsure of); what is left within the
   trimap's certainty level (0.05) of 0 or 1 becomes 0 or 1. On ISNet's mattes of the 18
   evaluation photos this took band SAD from 0.93× to 0.90× Lanczos at the matte's own size and
   from 0.83× to 0.80× from a quarter. A matte whose confident areas are exactly 0 and 1
   (``core.trimap.is_exact``: ground truth or its area average, never a network's estimate) is
   trusted as exact: band from 0.01/0.99, residuals given in full, no lone-pixel pass, the plain
   filter between back-projections (its soft values are real coverage), the half-level snap.
4. **Foreground colours** (``core.foreground``): blur-fusion, large blurs on the model's grid,
   the per-pixel step at full resolution in the band; where α is large enough, unmixing against
   the nearest background colour (searched far on the grid, near at full resolution); elsewhere
   F = I.
5. **User options** (``core.mask_ops``): fill holes, grow/shrink, threshold (anti-aliased),
   feather, invert; then pixels the input already had fully transparent are forced to 0.

Device: with ``CutoutOptions.device`` a CUDA or MPS device (the daemon passes its model's), steps
1–4 run in ``core.refine_torch`` as whole-image tensors with the same arithmetic; the user options
(5) stay here. A device that runs out of memory hands the job back to this CPU path.

Transfer: the model and the guide see sRGB-encoded values (a linear input is encoded first,
after averaging in linear light). Foreground colours are solved and returned in the input's
own encoding (sRGB values for sRGB input, linear for ``linear=True``): that is where the
compositing equation ``I = αF + (1 − α)B`` is applied, matching how editors blend the layer.

Modes: ``fast`` (band radius 1, no back-projection), ``default`` (radius 2, 3 back-projection
steps, one sharpening, 3 steps more; a network's matte: 3 steps, then the sharpening),
``quality`` (radius 3, two sharpening rounds); the
foreground's small fusion pass runs at full resolution except in ``fast``. Back-projection
makes the most of a sharp matte (the benchmark's area-averaged masks: band SAD 0.32× → 0.25×
Lanczos); a matte that is itself blurred is followed in its blur (about 2 % more error than one
plain step there, measured with the masks blurred by σ = 0.7 and 1.5 model pixels).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from maskd.core import foreground as fgmod
from maskd.core import guided_filter as gf
from maskd.core import imageio, limits, mask_ops
from maskd.core import trimap as trimapmod
from maskd.core.errors import InputError

QUALITIES = ("fast", "default", "quality")
GUIDE_RADIUS = 1  # model pixels
GUIDE_EPS = 1e-5  # guide units² (guide in [0, 1])
TILE = 256  # full-resolution tile edge for band work
REFINE_GRID = 1024  # refine(): a mask larger than this (longer side) is worked on at this size
REFINE_MIN_FACTOR = 2  # refine(): a hard mask on a grid at most half the image's size (room to follow edges)
HARD_MASK_SIGMA = 0.5  # model pixels of smoothing for a binary mask's stair-steps
SHARPEN_RADIUS = 2  # full-resolution pixels: the colour-line model of single strands
SHARPEN_EPS = 3e-5  # guide units² (as good as 1e-5 on the benchmark, calmer in flat colour)
SHARPEN_CONFIDENCE_FLOOR = 0.05  # a network matte's 0.5 weighs this much in a window's colour fit (1 at 0/1)
SHARPEN_WIDE_RADIUS = (
    8  # full-resolution pixels: a network matte's colour fit where a small window holds no sure pixel
)
BP_FLOOR = np.float32(1e-3)  # back-projection weight of pixels at 0 or 1 (keeps the division finite)
BP_MAX_SHARE = 1.0  # a pixel moves at most this multiple of its model pixels' residual per step
EXACT_BAND = (0.01, 0.99)  # an exact matte's uncertain band: its 0.95…0.99 are real coverage, not dips
ISOLATED_LEVEL = 60.0 / 255.0  # a pixel this far from its 3×3 median *and* from the matte is an artefact
SNAP = 1.0 / 510.0  # alpha within half an 8-bit step of 0 or 1 becomes exactly 0 or 1
# A network's matte: what the refinement leaves within the trimap's own certainty level of 0 or 1
# is 0 or 1 (its dips and haze are that size: no coverage it can vouch for; faint fit noise of the
# colour models in the band is too). Band SAD on its mattes 0.81 → 0.80× Lanczos from a quarter.
NETWORK_SNAP = trimapmod.UNKNOWN_LOW

_MODES = {
    #   band radius, back-projection steps (per round), sharpening rounds, full-resolution small fusion pass
    "fast": (1, 0, 0, False),
    "default": (2, 3, 1, True),
    "quality": (3, 3, 2, True),
}

Progress = Callable[[str, float], None]


@dataclass
class CutoutOptions:
    """What the user asked for. Defaults are what a plain "remove background" should do."""

    refine: bool = True  # False: plain bilinear upsampling of the matte (no guide, no band work)
    quality: str = "default"  # "fast" | "default" | "quality"
    decontaminate: bool = True  # estimate foreground colours (else ``Cutout.foreground`` is None)
    threshold: float | None = None  # in (0, 1): hard mask at this level, anti-aliased edge
    grow: int = 0  # pixels; negative shrinks
    feather: float = 0.0  # pixels of Gaussian softening (σ = feather / 2)
    fill_holes: bool = False
    invert: bool = False
    roi: tuple[int, int, int, int] | None = None  # (x, y, w, h) in image pixels; alpha 0 outside
    linear: bool = False  # the input is linear light (else sRGB-encoded)
    band_radius: int | None = None  # model pixels; None = the mode's
    roi_margin: float = 0.1  # context around the ROI for the model, × the ROI's longer side
    device: str = "cpu"  # where refinement runs: "cpu" (OpenCV tiles) or a torch device ("cuda", "mps")

    def validate(self) -> CutoutOptions:
        limits.check_cutout_options(self)  # every numeric option within its bounds (core/limits.py)
        if self.quality not in QUALITIES:
            raise InputError(f"quality {self.quality!r} is not one of {', '.join(QUALITIES)}")
        if self.threshold is not None and not 0.0 < float(self.threshold) < 1.0:
            raise InputError(f"threshold {self.threshold} must lie strictly between 0 and 1 (e.g. 0.5)")
        if self.feather < 0 or not math.isfinite(self.feather):
            raise InputError(f"feather {self.feather} must be a number of pixels ≥ 0")
        if self.band_radius is not None and self.band_radius < 0:
            raise InputError(f"band radius {self.band_radius} must be ≥ 0 model pixels")
        if not str(self.device).startswith(("cpu", "cuda", "mps")):
            raise InputError(f"device {self.device!r} is not one of cpu, cuda, cuda:N, mps")
        if self.roi is not None:
            if len(self.roi) != 4 or self.roi[2] <= 0 or self.roi[3] <= 0:
                raise InputError(f"roi {self.roi} must be (x, y, width, height) with a positive size")
        return self


@dataclass
class Cutout:
    alpha: np.ndarray  # float32 H×W in [0, 1], full resolution
    foreground: np.ndarray | None  # float32 H×W×3 straight colours in [0, 1], input's transfer
    timings: dict = field(default_factory=dict)  # stage -> seconds
    device: str = "cpu"  # where the refinement ran (the CPU when a GPU ran out of memory)


class _Clock:
    def __init__(self, progress: Progress | None):
        self.timings: dict[str, float] = {}
        self.progress = progress
        self._t = time.perf_counter()

    def report(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(stage, float(fraction))

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self._t)
        self._t = now


# ---------------------------------------------------------------------------------------------
# Public entry points


def cutout(
    image: np.ndarray,
    matte_fn: Callable[[np.ndarray], np.ndarray],
    options: CutoutOptions | None = None,
    progress: Progress | None = None,
) -> Cutout:
    """Run the model (``matte_fn(rgb_uint8) -> matte at model size``) and refine to full resolution."""
    opts = (options or CutoutOptions()).validate()
    clock = _Clock(progress)
    image = _native(image)
    colour, _ = imageio.split_channels(image)
    crop, paste = _roi_boxes(opts, colour.shape[:2])
    sub = image[crop[1] : crop[3], crop[0] : crop[2]] if crop else image
    clock.report("model", 0.0)
    matte = _check_matte(matte_fn(_model_input(sub, opts.linear)))
    clock.lap("model")
    clock.report("model", 1.0)
    return _finish(image, sub, matte, crop, paste, opts, clock)


def refine(
    image: np.ndarray,
    mask: np.ndarray,
    options: CutoutOptions | None = None,
    progress: Progress | None = None,
) -> Cutout:
    """Refine a rough mask of any size (uint8/uint16/float, resized to the image) — no model.

    The mask is worked on at its own size (at most the image's), but at most ``REFINE_GRID`` on
    its longer side (area average). A hard (binary) mask is also brought to at most half the
    image's size: a full-size rough selection is refined like a model's matte, with room to move
    its edges onto the photo's. A soft matte keeps its size: shrinking a network's matte that is
    about the image's size only throws away the detail it delivered (issue 14). With an ROI the
    mask covers the whole image and is cropped like the image.
    """
    opts = (options or CutoutOptions()).validate()
    clock = _Clock(progress)
    image = _native(image)
    colour, _ = imageio.split_channels(image)
    m = imageio.mask_float(mask)
    height, width = colour.shape[:2]
    crop, paste = _roi_boxes(opts, (height, width))
    if crop:
        mh, mw = m.shape
        x0, y0, x1, y1 = crop
        cy0, cy1 = int(y0 * mh / height), max(int(y0 * mh / height) + 1, math.ceil(y1 * mh / height))
        cx0, cx1 = int(x0 * mw / width), max(int(x0 * mw / width) + 1, math.ceil(x1 * mw / width))
        m = m[cy0:cy1, cx0:cx1]
        sub = image[y0:y1, x0:x1]
    else:
        sub = image
    sh, sw = sub.shape[:2]
    scale = min(1.0, REFINE_GRID / max(m.shape))
    # A soft matte (a network's) keeps all its detail; a hard selection gets room to move its edges.
    selection = not trimapmod.is_area_average(m)
    factor = REFINE_MIN_FACTOR if selection else 1
    gh = min(max(1, sh // factor), max(1, round(m.shape[0] * scale)))
    gw = min(max(1, sw // factor), max(1, round(m.shape[1] * scale)))
    if (gh, gw) != m.shape:
        m = cv2.resize(m, (gw, gh), interpolation=cv2.INTER_AREA)
    clock.lap("mask")
    return _finish(image, sub, m, crop, paste, opts, clock, lone_check=not selection)


# ---------------------------------------------------------------------------------------------
# Internals


def _native(image) -> np.ndarray:
    """uint8/uint16/float32 as given (no copy); other floats (float16, float64) become float32."""
    image = np.asarray(image)
    if image.dtype.kind == "f" and image.dtype != np.float32:
        image = image.astype(np.float32)
    return image


def _check_matte(matte) -> np.ndarray:
    m = np.asarray(matte)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.ndim != 2 or m.size == 0:
        raise InputError(f"the model returned a matte of shape {m.shape}; expected H×W")
    return imageio.to_float(m)


def _roi_boxes(opts: CutoutOptions, hw):
    """(crop, paste) boxes (x0, y0, x1, y1): the ROI plus margin to process, and the ROI itself."""
    if opts.roi is None:
        return None, None
    height, width = hw
    x, y, w, h = (int(round(v)) for v in opts.roi)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"roi {opts.roi} lies outside the {width}×{height} image")
    margin = int(round(max(16, opts.roi_margin * max(x1 - x0, y1 - y0))))
    crop = (max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin))
    return crop, (x0, y0, x1, y1)


def _composited_float(colour_part: np.ndarray, alpha_part, linear: bool) -> np.ndarray:
    """sRGB float colours; transparent pixels composited over mid-gray (as the model sees them)."""
    rgb = imageio.colour_float(colour_part, linear=linear)
    if alpha_part is not None:
        a = imageio.to_float(alpha_part)[..., None]
        if a.min() < 1.0:
            rgb = rgb * a + np.float32(0.5) * (1.0 - a)
    return rgb


def _model_input(sub: np.ndarray, linear: bool) -> np.ndarray:
    colour, alpha = imageio.split_channels(sub)
    opaque = alpha is None or alpha.min() == imageio.value_scale(alpha.dtype)
    if colour.dtype == np.uint8 and colour.shape[2] == 3 and not linear and opaque:
        return np.ascontiguousarray(colour)
    return imageio.to_uint8(_composited_float(colour, alpha, linear))


def _downsample(x: np.ndarray, hw) -> np.ndarray:
    h, w = hw
    if x.shape[:2] == (h, w):
        return x
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)


def _low_guides(sub: np.ndarray, grid_hw, linear: bool):
    """(guide in sRGB, colours in the blend space) on the model grid, float32 [0, 1]."""
    colour, alpha = imageio.split_channels(sub)
    if alpha is not None and alpha.min() < imageio.value_scale(alpha.dtype):
        # Composite over mid-gray *after* averaging: area(C·a) + 0.5·(1 − area(a)) is exactly the
        # area average of the composite, without a full-resolution float copy of the image.
        scale = 1.0 / imageio.value_scale(colour.dtype) / imageio.value_scale(alpha.dtype)
        a3 = alpha if colour.shape[2] == 1 else cv2.merge([alpha] * 3)
        premultiplied = cv2.multiply(np.ascontiguousarray(colour), a3, scale=scale, dtype=cv2.CV_32F)
        a_low = imageio.to_float(_downsample(np.ascontiguousarray(alpha), grid_hw))
        small = _downsample(premultiplied, grid_hw).reshape(grid_hw + (-1,))
        small = small + (0.5 * (1.0 - a_low))[..., None]
    else:
        small = imageio.to_float(_downsample(np.ascontiguousarray(colour), grid_hw))
    if small.ndim == 2:
        small = small[..., None]
    if small.shape[2] == 1:
        small = np.repeat(small, 3, axis=2)
    blend = np.clip(small, 0.0, 1.0)
    guide = imageio.linear_to_srgb(small) if linear else small
    return np.ascontiguousarray(guide), np.ascontiguousarray(blend)


_BYTE_LEVELS = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)  # imageio.to_float's uint8 values


def _to_float(x: np.ndarray) -> np.ndarray:
    """``imageio.to_float``; an 8-bit image through a lookup table (OpenCV, on every core): the same
    values, a fifth of the time on a 4000² layer's full-size colour copy."""
    if x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] in (1, 3, 4):
        return cv2.LUT(np.ascontiguousarray(x), _BYTE_LEVELS).reshape(x.shape)
    return imageio.to_float(x)


def _tile_pixels(sub: np.ndarray, y0, y1, x0, x1, linear: bool):
    """Full-resolution tile as (guide sRGB float, blend-space float), composited like the model input."""
    colour, alpha = imageio.split_channels(sub)
    t = colour[y0:y1, x0:x1]
    a = None if alpha is None else alpha[y0:y1, x0:x1]
    blend = imageio.to_float(t)
    if blend.shape[2] == 1:
        blend = np.repeat(blend, 3, axis=2)
    if a is not None and a.min() < imageio.value_scale(a.dtype):
        af = imageio.to_float(a)[..., None]
        blend = blend * af + np.float32(0.5) * (1.0 - af)
    guide = imageio.linear_to_srgb(blend) if linear else blend
    return guide, blend


def _warp(low: np.ndarray, box, full_hw, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Bilinear samples of a low-grid array at the full-resolution pixels of ``box`` (as cv2.resize)."""
    y0, y1, x0, x1 = box
    height, width = full_hw
    h, w = low.shape[:2]
    sy, sx = h / height, w / width
    reach = 4 if interpolation != cv2.INTER_LINEAR else 1  # source pixels each side the kernel reads
    ly0 = max(0, int(math.floor((y0 + 0.5) * sy - 0.5)) - reach)
    ly1 = min(h, int(math.ceil((y1 - 0.5) * sy - 0.5)) + reach + 1)
    lx0 = max(0, int(math.floor((x0 + 0.5) * sx - 0.5)) - reach)
    lx1 = min(w, int(math.ceil((x1 - 0.5) * sx - 0.5)) + reach + 1)
    src = np.ascontiguousarray(low[ly0:ly1, lx0:lx1])
    matrix = np.array([[sx, 0.0, (x0 + 0.5) * sx - 0.5 - lx0], [0.0, sy, (y0 + 0.5) * sy - 0.5 - ly0]])
    out = cv2.warpAffine(
        src,
        matrix,
        (x1 - x0, y1 - y0),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if low.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out


def _band_tiles(band_full: np.ndarray):
    height, width = band_full.shape
    tiles = []
    for y0 in range(0, height, TILE):
        for x0 in range(0, width, TILE):
            y1, x1 = min(height, y0 + TILE), min(width, x0 + TILE)
            if band_full[y0:y1, x0:x1].any():
                tiles.append((y0, y1, x0, x1))
    return tiles


def _mode(opts):
    """(band radius, back-projection steps, sharpening rounds, full-resolution small fusion pass)."""
    radius, steps, rounds, full_small_pass = _MODES[opts.quality]
    if opts.band_radius is not None:
        radius = int(opts.band_radius)
    return radius, steps, rounds, full_small_pass


def _refine_alpha(sub, matte, opts, clock, grid_guide, lone_check=True, exact=False):
    """Full-resolution alpha for ``sub`` from ``matte`` (on its own, smaller-or-equal grid).

    ``exact``: the matte is an exact area average (``core.trimap.is_exact``): its band starts at
    ``EXACT_BAND`` and its residuals are given in full (no ``BP_MAX_SHARE`` cap)."""
    height, width = sub.shape[:2]
    h, w = matte.shape
    radius, steps, rounds, _ = _mode(opts)
    hard = not trimapmod.is_area_average(matte)
    if hard:  # a binary mask's staircase: smooth its level set first (anti-aliasing); colour then sharpens
        matte = cv2.GaussianBlur(matte, (0, 0), HARD_MASK_SIGMA, borderType=cv2.BORDER_REPLICATE)
    # The grid's coefficients on a second core while the band is laid out at full resolution.
    if hard:  # box-averaged offsets: the box smoothing is the anti-aliasing where colour is flat
        fit = _alongside(gf.guided_coefficients, grid_guide, matte, GUIDE_RADIUS, GUIDE_EPS)
    else:  # exact offsets: interpolate the soft matte itself where colour says nothing
        fit = _alongside(gf.joint_coefficients, grid_guide, matte, GUIDE_RADIUS, GUIDE_EPS)
    band_low, fg_low = trimapmod.band_from_matte(matte, radius, *(EXACT_BAND if exact else ()))
    # 0/1 resized nearest as float32 directly: the same pixels as ``upscale_nearest``, one full pass less
    alpha = cv2.resize(fg_low.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
    band = trimapmod.upscale_nearest(band_low, (height, width))
    tiles = _band_tiles(band)
    coef = fit.result()
    clock.lap("coefficients")

    def upsample(box):
        y0, y1, x0, x1 = box
        guide, _ = _tile_pixels(sub, y0, y1, x0, x1, opts.linear)
        c = _warp(coef, box, (height, width))
        q = c[..., 0] * guide[..., 0] + c[..., 1] * guide[..., 1] + c[..., 2] * guide[..., 2] + c[..., 3]
        np.copyto(alpha[y0:y1, x0:x1], np.clip(q, 0.0, 1.0, out=q), where=band[y0:y1, x0:x1])

    def report(k):
        if k % 16 == 0:
            clock.report("upsample", k / max(1, len(tiles)))

    _each_tile(upsample, tiles, report)
    clock.lap("upsample")
    if hard:
        steps = rounds = 0  # a hard mask that no alpha averages to
    elif (h, w) == (height, width):
        steps = 0  # nothing to reconstruct; the sharpening still fits the edge to the photo's colours
    state = _BackProjection((height, width), (h, w), tiles) if steps and tiles else None
    if exact:  # back-project, then (sharpen, back-project) per round: the area averages are the truth's
        for rnd in range(rounds + 1):
            if rnd:
                _sharpen(sub, alpha, tiles, band, opts.linear)
            _back_project(alpha, matte, tiles, band, steps, None, state)
            clock.report("back-projection", (rnd + 1) / (rounds + 1))
    else:  # (back-project, sharpen) per round: the photo's colours, not the matte's blurred cells, last
        for rnd in range(max(1, rounds)):
            _back_project(alpha, matte, tiles, band, steps, BP_MAX_SHARE, state)
            if rnd < rounds:
                _sharpen(sub, alpha, tiles, band, opts.linear, weighted=True)
            clock.report("back-projection", (rnd + 1) / max(1, rounds))
    clock.lap("back-projection")
    if lone_check and not hard and not exact:  # a hard mask's staircase is no support; an exact one is sure
        _drop_isolated(alpha, matte, tiles, band)
    snap = _snap(exact, hard, rounds)

    def settle(box):
        y0, y1, x0, x1 = box
        view = alpha[y0:y1, x0:x1]
        view[view < snap] = 0.0
        view[view > 1.0 - snap] = 1.0

    _each_tile(settle, tiles)
    return alpha


def _snap(exact, hard, rounds) -> float:
    """How near 0 or 1 a final alpha becomes 0 or 1: ``NETWORK_SNAP`` after a network matte's
    colour fits (their faint noise, its haze), else half an 8-bit level (``fast`` mode and hard
    masks are not sharpened; an exact matte's faint values are real)."""
    return NETWORK_SNAP if rounds and not exact and not hard else SNAP


def _device_alpha(img, matte, opts, lone_check=True, exact=False) -> np.ndarray:
    """``_refine_alpha`` (or plain bilinear upsampling) on the device; the result back in memory."""
    from maskd.core import refine_torch

    if opts.refine:
        radius, steps, rounds, _ = _mode(opts)
        a = refine_torch.refine_alpha(
            img,
            matte,
            radius=radius,
            steps=steps,
            rounds=rounds,
            guide_radius=GUIDE_RADIUS,
            guide_eps=GUIDE_EPS,
            sharpen_radius=SHARPEN_RADIUS,
            sharpen_eps=SHARPEN_EPS,
            floor=float(BP_FLOOR),
            snap=_snap(exact, not trimapmod.is_area_average(matte), rounds),
            hard_sigma=HARD_MASK_SIGMA,
            max_share=None if exact else BP_MAX_SHARE,
            band_levels=EXACT_BAND if exact else None,
            confidence_floor=None if exact else SHARPEN_CONFIDENCE_FLOOR,
            wide_radius=SHARPEN_WIDE_RADIUS,
            isolated_level=ISOLATED_LEVEL if lone_check and not exact else None,
        )
    else:
        a = img.grid.up(refine_torch.upload(matte, img.device)).clamp(0.0, 1.0)
    return np.ascontiguousarray(a.cpu().numpy())


_AREA_RUN_MIN = 64  # full-resolution pixels: a block row of the area averages is at least this tall


class _AreaAverages:
    """``_downsample`` of full-resolution arrays that change only inside ``tiles``, kept current by blocks.

    Why: back-projection needs the whole alpha's (and its weights') area averages on the matte's
    grid every step; a full INTER_AREA resize of a 4000² image costs about 25 ms, a default
    refinement needs a dozen, and the alpha only changes in the band's tiles. Where the sizes
    share a factor (4000 → 1024: blocks of 125 px ↔ 32 grid px), a block's averages depend on
    that block alone and OpenCV computes them with the same weights in the same order, so
    averaging again only the blocks that hold a tile gives bit for bit what the whole resize
    gives (``tests/test_pipeline.py`` checks it). Integer ratios take OpenCV's fast path, whose
    vector loop does not give the same bits on a part: those (cheap anyway) stay whole.
    """

    def __init__(self, full_hw, low_hw, tiles):
        height, width = full_hw
        h, w = low_hw
        self.low_hw = low_hw
        self.runs = None  # None: every call is one whole resize
        self.cache: dict[str, np.ndarray] = {}
        if (height, width) == (h, w) or (height % h == 0 and width % w == 0):
            return
        gy, gx = math.gcd(height, h), math.gcd(width, w)
        by, bx = height // gy, width // gx  # the smallest block (and its grid cells: h // gy, w // gx)
        ky = max(1, -(-_AREA_RUN_MIN // by))  # base blocks per block row: few, tall runs
        by, ly, lx = by * ky, (h // gy) * ky, w // gx
        rows, cols = -(-height // by), gx
        dirty = np.zeros((rows, cols), dtype=bool)
        for y0, y1, x0, x1 in tiles:
            dirty[y0 // by : (y1 - 1) // by + 1, x0 // bx : (x1 - 1) // bx + 1] = True
        if dirty.mean() > 0.8:
            return
        runs = []
        for i in range(rows):
            j = 0
            while j < cols:
                if not dirty[i, j]:
                    j += 1
                    continue
                k = j
                while k < cols and dirty[i, k]:
                    k += 1
                full_box = (i * by, min(height, (i + 1) * by), j * bx, k * bx)
                low_box = (i * ly, min(h, (i + 1) * ly), j * lx, k * lx)
                runs.append((full_box, low_box))
                j = k
        self.runs = runs

    def of(self, key: str, full: np.ndarray) -> np.ndarray:
        """The area averages of ``full`` (read-only: the next call for ``key`` updates them in place)."""
        low = self.cache.get(key)
        if self.runs is None or low is None:
            low = _downsample(full, self.low_hw)
            if self.runs is not None:
                self.cache[key] = low
            return low

        def average(run):  # each run writes its own grid cells: the runs share the cores
            (y0, y1, x0, x1), (ly0, ly1, lx0, lx1) = run
            low[ly0:ly1, lx0:lx1] = cv2.resize(
                full[y0:y1, x0:x1], (lx1 - lx0, ly1 - ly0), interpolation=cv2.INTER_AREA
            )

        _each_tile(average, self.runs)
        return low


class _BackProjection:
    """What back-projection carries between its rounds: the full-size weights (``BP_FLOOR`` outside
    the tiles, where α is 0 or 1) and the area averages, allocated and averaged whole once."""

    def __init__(self, full_hw, low_hw, tiles):
        self.weight = np.full(full_hw, BP_FLOOR, dtype=np.float32)
        self.averages = _AreaAverages(full_hw, low_hw, tiles)


def _each_tile(fn: Callable, tiles, report: Callable[[int], None] | None = None) -> None:
    """``fn(box)`` for every tile, spread over OpenCV's thread count (the machine's cores).

    Why: a 256² tile is too small for OpenCV to split, so the band's tiles ran on one core; OpenCV
    and numpy release the GIL, and every caller's ``fn`` writes only its own tile and reads what
    no other tile writes, so the result is the same bits in any order. ``report(k)`` is called
    in the caller's thread as tile ``k`` is done, in order (progress callbacks need not be
    thread-safe).
    """
    workers = min(len(tiles), max(1, cv2.getNumThreads()))
    done = map(fn, tiles) if workers <= 1 else _pool(workers).map(fn, tiles)
    for k, _ in enumerate(done):
        if report is not None:
            report(k)


def _alongside(fn: Callable, *args) -> Future:
    """``fn(*args)`` on a second core while the caller goes on (done at once with one OpenCV thread)."""
    workers = max(1, cv2.getNumThreads())
    if workers > 1:
        return _pool(workers).submit(fn, *args)
    done: Future = Future()
    done.set_result(fn(*args))
    return done


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per worker count, per process (a forked child has none of its parent's threads)."""
    key = (os.getpid(), workers)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="maskd-tiles")
    return _POOLS[key]


def _back_project(alpha, matte, tiles, band, steps, max_share=BP_MAX_SHARE, state=None):
    """Correct ``alpha`` in the band until its area average on the matte's grid is the matte.

    The residual of each model pixel is shared among its full-resolution pixels in proportion
    to their uncertainty ``α(1 − α)``: pixels already at 0 or 1 keep their value, soft ones take
    the correction (a uniform share would lift the transparent gaps between strands as much as
    the strands themselves). No pixel moves more than ``BP_MAX_SHARE`` times the (interpolated)
    size of the residual per step: a network's matte is no exact area average (dips, haze, a
    shifted edge), and with one soft pixel left among opaque ones the whole cell's few percent
    would land on it and punch a hole (issue 14: rings of holes and specks). The cap leaves such a
    cell slightly off the matte instead. An exact matte (``core.trimap.is_exact``: ground truth
    shrunk, whose residual is the truth's own) passes ``max_share=None``: no cap, since there one
    soft pixel among opaque ones really does hold its cell's whole residual.

    ``state`` (a ``_BackProjection`` for these tiles): its weights and area averages carried from
    one round to the next, for as long as ``alpha`` changes only inside ``tiles``.
    """
    height, width = alpha.shape
    if not steps or not tiles:
        return
    state = state or _BackProjection(alpha.shape, matte.shape, tiles)
    weight = state.weight

    def weigh(box):
        y0, y1, x0, x1 = box
        view = alpha[y0:y1, x0:x1]
        cv2.multiply(view, cv2.subtract(1.0, view), dst=weight[y0:y1, x0:x1])
        weight[y0:y1, x0:x1] += BP_FLOOR

    def correct(box):
        y0, y1, x0, x1 = box
        view = alpha[y0:y1, x0:x1]
        rg = _warp(both, box, (height, width))
        updated = cv2.multiply(rg[..., 0], weight[y0:y1, x0:x1])
        if max_share is not None:
            limit = cv2.multiply(rg[..., 1], max_share)
            np.clip(updated, -limit, limit, out=updated)
        cv2.add(updated, view, dst=updated)
        np.copyto(view, np.clip(updated, 0.0, 1.0, out=updated), where=band[y0:y1, x0:x1])

    for _ in range(steps):
        _each_tile(weigh, tiles)
        residual = cv2.subtract(matte, state.averages.of("alpha", alpha))
        both = cv2.merge([cv2.divide(residual, state.averages.of("weight", weight)), np.abs(residual)])
        _each_tile(correct, tiles)


def _drop_isolated(alpha, matte, tiles, band):
    """Put back to its 3×3 median every band pixel the matte does not support as a lone value.

    A pixel more than ``ISOLATED_LEVEL`` from the median of its 3×3 neighbourhood *and* from
    the matte's own (bilinear) value there is a hole or a speck that the refinement made — a
    colour-guided fit following texture, a residual landing on one pixel — not detail the
    network delivered: thin strands that the matte carries keep their value. Read from a copy,
    so the tiles give what one whole-image pass gives (``core.refine_torch`` does that).
    """
    if not tiles:
        return
    height, width = alpha.shape
    src = alpha.copy()
    level = np.float32(ISOLATED_LEVEL)

    def drop(box):
        y0, y1, x0, x1 = box
        hy0, hy1 = max(0, y0 - 1), min(height, y1 + 1)
        hx0, hx1 = max(0, x0 - 1), min(width, x1 + 1)
        med = _median3(src[hy0:hy1, hx0:hx1])[y0 - hy0 : y1 - hy0, x0 - hx0 : x1 - hx0]
        view = alpha[y0:y1, x0:x1]
        base = _warp(matte, box, (height, width))
        lone = (np.abs(view - med) > level) & (np.abs(view - base) > level) & band[y0:y1, x0:x1]
        np.copyto(view, med, where=lone)

    _each_tile(drop, tiles)


def _median3(x: np.ndarray) -> np.ndarray:
    """3×3 median with replicated borders (``cv2.medianBlur``), for any size of float32 array."""
    if min(x.shape) >= 3:
        return cv2.medianBlur(np.ascontiguousarray(x), 3)
    padded = np.pad(x, 1, mode="edge")
    h, w = x.shape
    stack = np.stack([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    return np.median(stack, axis=0).astype(np.float32)


def _sharpen(sub, alpha, tiles, band, linear, weighted=False):
    """A full-resolution colour guided filter of ``alpha`` in the band (tiles with a halo).

    ``weighted`` (a network's matte; an exact matte's soft values are real coverage and keep the
    plain filter): each window's colour model is fitted mostly to the pixels the alpha is sure of
    (``core.guided_filter.weighted_guided_coefficients`` with ``confidence_weight``, floor
    ``SHARPEN_CONFIDENCE_FLOOR``), at two scales: the small windows' fit (``SHARPEN_RADIUS``)
    where they hold sure pixels, the wide windows' (``SHARPEN_WIDE_RADIUS``) where they hold none
    (a broad area the network was unsure of), blended by the small windows' mean confidence.
    """
    height, width = alpha.shape
    r, eps = SHARPEN_RADIUS, SHARPEN_EPS
    reach = max(r, SHARPEN_WIDE_RADIUS) if weighted else r
    halo = 2 * reach  # the filter reads r around each pixel, its averaged coefficients r more
    src = alpha.copy()

    def sharpen(box):
        y0, y1, x0, x1 = box
        hy0, hy1 = max(0, y0 - halo), min(height, y1 + halo)
        hx0, hx1 = max(0, x0 - halo), min(width, x1 + halo)
        guide, _ = _tile_pixels(sub, hy0, hy1, hx0, hx1, linear)
        p = src[hy0:hy1, hx0:hx1]
        if weighted:
            w = gf.confidence_weight(p, SHARPEN_CONFIDENCE_FLOOR)
            q = gf.apply_coefficients(guide, gf.weighted_guided_coefficients(guide, p, w, r, eps))
            wide = gf.weighted_guided_coefficients(guide, p, w, SHARPEN_WIDE_RADIUS, eps)
            near = gf.sure_share(w, r, SHARPEN_CONFIDENCE_FLOOR)
            q = near * q + (1.0 - near) * gf.apply_coefficients(guide, wide)
        else:
            q = gf.guided_filter(guide, p, r, eps)
        q = q[y0 - hy0 : y1 - hy0, x0 - hx0 : x1 - hx0]
        np.copyto(alpha[y0:y1, x0:x1], q, where=band[y0:y1, x0:x1])

    _each_tile(sharpen, tiles)


def _straight_colours(sub) -> np.ndarray:
    """The image's colours as float32 H×W×3 (grey repeated), the starting point of the foreground."""
    colour, _ = imageio.split_channels(sub)
    fg = _to_float(colour)
    return np.repeat(fg, 3, axis=2) if fg.shape[2] == 1 else fg


def _with_halo(box, halo: int, hw) -> tuple[int, int, int, int]:
    """``box`` (y0, y1, x0, x1) grown by ``halo`` pixels on each side, within an image of size ``hw``."""
    y0, y1, x0, x1 = box
    return max(0, y0 - halo), min(hw[0], y1 + halo), max(0, x0 - halo), min(hw[1], x1 + halo)


def _foreground(sub, alpha, grid_blend, opts, clock):
    """Decontaminated straight colours for ``sub`` (input's transfer), float32 H×W×3.

    Estimated where the final alpha is soft (0 < α < 1), tile by tile; elsewhere the colour is
    the image's own (exact where α = 1, irrelevant where α = 0).
    """
    height, width = alpha.shape
    h, w = grid_blend.shape[:2]
    full_small_pass = _mode(opts)[3]
    fg = _straight_colours(sub)
    soft = (alpha > 0.0) & (alpha < 1.0)
    tiles = _band_tiles(soft)
    if not tiles:
        return fg
    long_side = max(height, width)
    r_large, r_small = fgmod.radii(long_side)
    scale = max(h / height, w / width)
    alpha_low = _downsample(alpha, (h, w))
    rl, rs = max(1, round(r_large * scale)), max(1, round(r_small * scale))
    # The nearest background colour on the grid (far reach); tiles refine it at full resolution.
    # It does not depend on the blurred means: it runs on a second core while they are computed.
    reach_low = max(1, round(fgmod.FILL_COARSE * long_side * scale))
    search = _alongside(
        fgmod.nearest_background,
        grid_blend,
        fgmod.background_weight(alpha_low),
        fgmod.fill_radii(reach_low),
    )
    if full_small_pass:
        f_mean1, b_mean1 = fgmod._weighted_means(grid_blend, grid_blend, alpha_low, rl)
    else:
        f_mean, b_mean = fgmod.fusion_means(grid_blend, alpha_low, rl, rs)
    bg_low, found = search.result()
    fallback = b_mean1 if full_small_pass else b_mean  # no background anywhere near: blur-fusion's B̄
    bg_low[~found] = fallback[~found]
    fine = max(1, round(fgmod.FILL_FINE * long_side))
    halo = max(r_small, fine) if full_small_pass else 0
    clock.lap("foreground-grid")

    def decontaminate(box):
        y0, y1, x0, x1 = box
        # The tile plus a halo: the small blur-fusion pass and the fine background search read it.
        hbox = hy0, hy1, hx0, hx1 = _with_halo(box, halo, (height, width))
        _, blend = _tile_pixels(sub, hy0, hy1, hx0, hx1, False)
        centre = (slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0))
        a_tile = alpha[y0:y1, x0:x1]
        background = _warp(bg_low, box, (height, width))
        if full_small_pass:
            a_halo = alpha[hy0:hy1, hx0:hx1]
            f = fgmod.small_pass(
                blend,
                a_halo,
                _warp(f_mean1, hbox, (height, width)),
                _warp(b_mean1, hbox, (height, width)),
                r_small,
                centre,
            )
            needed = np.zeros(a_halo.shape, dtype=bool)
            needed[centre] = soft[y0:y1, x0:x1]
            near, near_found = fgmod.nearest_background(
                blend, fgmod.background_weight(a_halo), fgmod.fill_radii(fine), needed
            )
            np.copyto(background, near[centre], where=near_found[centre][..., None])
        else:
            f = fgmod.fuse(
                blend, a_tile, _warp(f_mean, box, (height, width)), _warp(b_mean, box, (height, width))
            )
        f = fgmod.unmix(np.ascontiguousarray(blend[centre]), a_tile, background, f)
        np.copyto(fg[y0:y1, x0:x1], f, where=soft[y0:y1, x0:x1, None])

    def report(k):
        if k % 16 == 0:
            clock.report("foreground", k / len(tiles))

    _each_tile(decontaminate, tiles, report)
    clock.lap("foreground")
    return fg


def _finish(image, sub, matte, crop, paste, opts: CutoutOptions, clock: _Clock, lone_check=True) -> Cutout:
    """Steps 1–5 on ``matte``. ``lone_check``: drop lone pixels the matte does not support (a hard
    selection shrunk to a grid is no support to judge the strands its refinement finds by)."""
    if opts.device != "cpu":
        try:
            return _finish_on(image, sub, matte, crop, paste, opts, clock, lone_check)
        except RuntimeError as exc:  # the GPU is full (another app, a huge layer): the CPU does it
            if not _out_of_memory(exc):
                raise
            from maskd.core import refine_torch

            refine_torch.release(opts.device)
            opts = dataclasses.replace(opts, device="cpu")
    return _finish_on(image, sub, matte, crop, paste, opts, clock, lone_check)


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(exc).lower()


def _finish_on(image, sub, matte, crop, paste, opts: CutoutOptions, clock: _Clock, lone_check) -> Cutout:
    height, width = sub.shape[:2]
    h, w = matte.shape
    if h > height or w > width:  # a model grid finer than a small image: work at the image's size
        matte = cv2.resize(matte, (min(w, width), min(h, height)), interpolation=cv2.INTER_AREA)
        h, w = matte.shape
    exact = trimapmod.is_exact(matte)  # ground truth or its area average, not a network's estimate
    matte = trimapmod.calibrate(matte)  # what the network is sure of becomes 0 and 1
    on_device = opts.device != "cpu"
    if on_device:  # the same steps as whole-image tensors on a GPU (core.refine_torch)
        from maskd.core import refine_torch

        img = refine_torch.DeviceImage(sub, (h, w), opts.linear, opts.device)
        clock.lap("guide")
        alpha = _device_alpha(img, matte, opts, lone_check, exact)
        clock.lap("upsample")
    else:
        grid_guide, grid_blend = _low_guides(sub, (h, w), opts.linear)
        clock.lap("guide")
        if opts.refine:
            alpha = _refine_alpha(sub, matte, opts, clock, grid_guide, lone_check, exact)
        else:
            alpha = np.clip(cv2.resize(matte, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
            clock.lap("upsample")
    alpha = mask_ops.apply_options(
        alpha,
        threshold_level=opts.threshold,
        grow_px=opts.grow,
        feather_px=opts.feather,
        fill=opts.fill_holes,
        inverted=opts.invert,
    )
    if crop:  # alpha 0 outside the ROI proper (the margin was context for the model)
        x0, y0, x1, y1 = paste
        keep = np.zeros_like(alpha, dtype=bool)
        keep[y0 - crop[1] : y1 - crop[1], x0 - crop[0] : x1 - crop[0]] = True
        alpha[~keep] = 0.0
    sub_alpha = imageio.split_channels(sub)[1]
    if sub_alpha is not None:
        alpha[sub_alpha == 0] = 0.0  # what was transparent stays transparent
    clock.lap("options")
    # Colours last, for the final alpha: grown or feathered edges get decontaminated colours too.
    clock.report("foreground", 0.0)
    fg = None
    if opts.decontaminate and on_device:
        on_gpu = refine_torch.upload(alpha, img.device)
        f = refine_torch.foreground(img, on_gpu, full_small_pass=_mode(opts)[3])
        fg = np.ascontiguousarray(f.permute(1, 2, 0).cpu().numpy())
        clock.lap("foreground")
    elif opts.decontaminate:
        fg = _foreground(sub, alpha, grid_blend, opts, clock)
    if crop:
        full_h, full_w = image.shape[:2]
        out = np.zeros((full_h, full_w), dtype=np.float32)
        out[crop[1] : crop[3], crop[0] : crop[2]] = alpha
        alpha = out
        if fg is not None:
            full_fg = imageio.colour_float(image, to_srgb=False)
            full_fg[crop[1] : crop[3], crop[0] : crop[2]] = fg
            fg = full_fg
        clock.lap("paste")
    clock.report("done", 1.0)
    return Cutout(
        alpha=np.ascontiguousarray(alpha, dtype=np.float32),
        foreground=fg,
        timings=clock.timings,
        device=opts.device,
    )
