"""Finishing a cut-out: background replacement, generated shadow, crop and canvas.

``finish(image, alpha, foreground, FinishOptions(...))`` returns the finished picture (float32,
straight alpha when it has one) plus what a sidecar or an editor needs: where the subject landed,
the shadow as its own alpha, the background as its own layer.

Blending happens in linear light and with premultiplied colours (Porter–Duff "over"): subject
over shadow over background. Inputs may be 8-bit, 16-bit or float; nothing is quantised to 8 bits
on the way (the result is float32 and the writer chooses the file's depth). Pixels where the
subject is opaque are copied and pixels of bare background are filled directly, so only edge and
shadow pixels pay for the linear-light arithmetic — that keeps a 3000×3000 photo well under a second.

Input colours are sRGB-encoded unless ``FinishOptions.linear`` says they are linear light (then
the output is linear too); colours given by the user (``#rrggbb``) are always sRGB.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from maskd.core import imageio
from maskd.core.canvas import CanvasSpec, Margin, Placement, place, plan, subject_bounds, union_box
from maskd.core.colour import linear_to_srgb, parse_colour, srgb_to_linear
from maskd.core.errors import InputError
from maskd.core.shadow import ShadowField, ShadowSpec, generate
from maskd.plugins.maskd_client import Bounds

EPS_ALPHA = 1.0 / 131072.0  # alpha within this of 0 or 1 is treated as exactly 0 or 1 (< ½ 16-bit step)
BLUR_DEFAULT = 0.02  # blurred-original background: σ as a fraction of the canvas's longer side
BLUR_GRID = 320  # the blurred background is computed with the canvas's longer side at this size
CROPS = ("none", "subject", "subject+shadow")
FITS = ("cover", "contain", "stretch")

# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class BackgroundSpec:
    """What goes behind the subject: ``color`` (r, g, b, a sRGB), an image file, or the blurred original."""

    kind: str = "color"  # color | image | blur
    color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    image: str | None = None
    fit: str = "cover"  # cover | contain | stretch (image backgrounds)
    blur: float = BLUR_DEFAULT  # blur: σ / canvas's longer side

    @property
    def opaque(self) -> bool:
        return self.kind == "blur" or (self.kind == "color" and self.color[3] >= 1.0)

    def describe(self) -> str:
        if self.kind == "color":
            return "#" + "".join(f"{round(v * 255):02x}" for v in self.color)
        if self.kind == "blur":
            return f"blur:{self.blur * 100:g}%"
        return f"{self.image}:{self.fit}"


def parse_background(text: str) -> BackgroundSpec | None:
    """A colour (see ``parse_colour``), ``blur`` / ``blur:3%`` (the original photo, blurred), or an
    image file with an optional fit: ``studio.jpg``, ``studio.jpg:contain`` (cover | contain |
    stretch). ``none`` keeps the transparency."""
    t = str(text).strip()
    low = t.lower()
    if low in ("none", "off"):
        return None
    if low == "blur" or low.startswith("blur:"):
        amount = BLUR_DEFAULT
        if ":" in low:
            v = low.split(":", 1)[1].strip()
            try:
                amount = float(v[:-1]) / 100 if v.endswith("%") else float(v)
            except ValueError:
                amount = -1
            if not 0 < amount <= 0.5:
                raise InputError(
                    f"background {text!r}: give the blur as a percentage of the picture's "
                    "longer side, e.g. blur:2%"
                )
        return BackgroundSpec(kind="blur", blur=amount)
    try:  # a colour first (a file called "white" in the current folder does not shadow it)
        return BackgroundSpec(kind="color", color=parse_colour(t))
    except InputError:
        pass
    path, fit = t, "cover"
    head, sep, tail = t.rpartition(":")
    if sep and tail.lower() in FITS:
        path, fit = head, tail.lower()
    if Path(path).is_file():
        return BackgroundSpec(kind="image", image=str(Path(path).resolve()), fit=fit)
    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"):
        raise InputError(f"background image not found: {path}")
    raise InputError(
        f"background {text!r}: give a colour (white, #rrggbb, #rrggbbaa, r,g,b), "
        "blur, or an existing image file (photo.jpg, photo.jpg:contain)"
    )


@dataclass
class FinishOptions:
    background: BackgroundSpec | None = None  # None: keep transparency
    shadow: ShadowSpec | None = None
    crop: str = "none"  # none | subject | subject+shadow
    margin: Margin = field(default_factory=Margin)
    canvas: CanvasSpec | None = None
    scale: float = 1.0
    align: tuple[float, float] = (0.5, 0.5)
    alpha: bool | None = None  # output an alpha channel: None = when the result has transparency
    matte: tuple[float, float, float] = (1.0, 1.0, 1.0)  # what alpha=False flattens onto (sRGB)
    linear: bool = False  # inputs are linear light (output too)

    def validate(self) -> FinishOptions:
        """Names and numbers within bounds, however the options were built (parsed text, the daemon,
        code): the parsers check the same ranges with friendlier wording."""
        if self.crop not in CROPS:
            raise InputError(f"crop {self.crop!r}: use one of {', '.join(CROPS)}")
        if self.background is not None and self.background.fit not in FITS:
            raise InputError(f"background fit {self.background.fit!r}: use one of {', '.join(FITS)}")
        if self.background is not None and self.background.kind == "blur":
            if not (math.isfinite(self.background.blur) and 0 < self.background.blur <= 0.5):
                raise InputError(f"background blur {self.background.blur}: give 0..50% of the longer side")
        if self.shadow is not None:
            self.shadow.validate()
        self.margin.validate()
        if self.canvas is not None:
            self.canvas.validate()
        if not (math.isfinite(self.scale) and 0.01 <= self.scale <= 10):
            raise InputError(f"scale {self.scale}: give 1% to 1000%")
        if len(self.align) != 2 or not all(math.isfinite(v) and 0 <= v <= 1 for v in self.align):
            raise InputError(f"align {self.align}: give two fractions between 0 and 1")
        return self


@dataclass
class Finished:
    image: np.ndarray  # float32 H×W×3 or ×4 (straight alpha), sRGB unless options.linear
    placement: Placement
    subject_box: Bounds | None  # the subject on the output
    source_box: Bounds | None  # the subject in the input
    shadow_box: Bounds | None  # the visible shadow on the output
    shadow: np.ndarray | None = None  # layers=True: the shadow's alpha on the canvas (darkness included)
    shadow_colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
    background: np.ndarray | None = None  # layers=True: the background layer, H×W×4 straight
    subject: np.ndarray | None = None  # layers=True: the subject layer, H×W×4 straight
    timings: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Blending


def over_linear(fg_lin, a, bg_lin, bg_a, shadow_lin, s):
    """Subject over shadow over background, linear premultiplied maths on flat arrays.

    fg_lin/bg_lin: N×3 linear straight colours; a, bg_a, s: N alphas (bg_a may be a scalar);
    shadow_lin: the shadow colour (3,). Returns (N×3 linear straight colour, N alpha).
    """
    a = a[:, None]
    s = s[:, None]
    bg_a = np.asarray(bg_a, np.float32)
    bg_a = bg_a[:, None] if bg_a.ndim == 1 else bg_a
    under_a = s + bg_a * (1.0 - s)
    under_p = shadow_lin[None, :] * s + bg_lin * (bg_a * (1.0 - s))
    out_a = a + under_a * (1.0 - a)
    out_p = fg_lin * a + under_p * (1.0 - a)
    colour = np.where(out_a > 0, out_p / np.maximum(out_a, 1e-12), fg_lin)
    return colour.astype(np.float32), out_a[:, 0].astype(np.float32)


def composite_reference(fg, a, bg, bg_a, shadow_colour, s, *, linear=False):
    """The whole-image reference (slow, for tests): same result as ``finish``'s fast paths."""
    to_lin = (lambda x: np.asarray(x, np.float32)) if linear else srgb_to_linear
    from_lin = (lambda x: np.clip(x, 0, 1)) if linear else linear_to_srgb
    h, w = a.shape
    n = h * w
    bg_a = np.broadcast_to(np.asarray(bg_a, np.float32), (h, w)).reshape(n)
    col, out_a = over_linear(
        to_lin(fg).reshape(n, 3),
        a.reshape(n),
        to_lin(bg).reshape(n, 3),
        bg_a,
        to_lin(np.asarray(shadow_colour, np.float32)),
        s.reshape(n),
    )
    return from_lin(col).reshape(h, w, 3), out_a.reshape(h, w)


# ---------------------------------------------------------------------------------------------
# Backgrounds


_IMAGE_CACHE: dict = {}


def _read_background(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    key = path
    if key not in _IMAGE_CACHE:
        img = imageio.read_image(path)
        colour = imageio.colour_float(img)
        alpha = imageio.alpha_float(img)
        _IMAGE_CACHE.clear()
        _IMAGE_CACHE[key] = (colour, alpha)
    return _IMAGE_CACHE[key]


_FITTED_CACHE: dict = {}


def _fitted_image(spec: BackgroundSpec, h: int, w: int):
    """The background picture fitted to h×w: (colour H×W×3, alpha H×W or a scalar). Cached per size."""
    import cv2

    key = (spec.image, spec.fit, h, w)
    if key in _FITTED_CACHE:
        return _FITTED_CACHE[key]
    colour, alpha = _read_background(spec.image)
    ph, pw = colour.shape[:2]
    layers = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
    if spec.fit == "stretch":
        nw, nh = w, h
    elif spec.fit == "cover":
        f = max(w / pw, h / ph)
        nw, nh = max(w, round(pw * f)), max(h, round(ph * f))
    else:
        f = min(w / pw, h / ph)
        nw, nh = max(1, min(w, round(pw * f))), max(1, min(h, round(ph * f)))
    interp = cv2.INTER_AREA if nw < pw and nh < ph else cv2.INTER_CUBIC
    resized = np.clip(cv2.resize(layers, (nw, nh), interpolation=interp), 0, 1)
    if resized.ndim == 2:
        resized = resized[..., None]
    c = resized.shape[2]
    if spec.fit == "contain":
        out = np.zeros((h, w, c), np.float32)
        y0, x0 = (h - nh) // 2, (w - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = resized
        bg_a = out[..., 3] if c == 4 else np.zeros((h, w), np.float32)
        if c != 4:
            bg_a[y0 : y0 + nh, x0 : x0 + nw] = 1.0
        result = (np.ascontiguousarray(out[..., :3]), bg_a)
    else:
        y0, x0 = (nh - h) // 2, (nw - w) // 2
        crop = resized[y0 : y0 + h, x0 : x0 + w]
        result = (np.ascontiguousarray(crop[..., :3]), np.ascontiguousarray(crop[..., 3]) if c == 4 else 1.0)
    _FITTED_CACHE.clear()
    _FITTED_CACHE[key] = result
    return result


def _blurred_original(
    colour: np.ndarray, alpha: np.ndarray, p: Placement, sigma_frac: float, linear: bool
) -> np.ndarray:
    """The photo without its subject, blurred, on the canvas (edges extended beyond the photo).

    Normalised convolution with weight (1 − alpha) keeps the subject's colours out of the blur.
    Computed on a small grid (it is blurred anyway) and enlarged."""
    import cv2

    h, w = alpha.shape
    cell = max(p.width, p.height) / BLUR_GRID  # canvas pixels per grid cell
    src_cell = cell / p.fx  # source pixels per grid cell
    sw, sh = max(2, round(w / src_cell)), max(2, round(h / src_cell))
    k = int(src_cell // 2)
    if k >= 2:  # an integer-factor shrink first (OpenCV's fast path), in the image's own dtype
        colour = cv2.resize(colour, (max(sw, w // k), max(sh, h // k)), interpolation=cv2.INTER_AREA)
    small_c = imageio.colour_float(cv2.resize(colour, (sw, sh), interpolation=cv2.INTER_AREA))
    small_w = 1.0 - cv2.resize(np.asarray(alpha, np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    lin = small_c if linear else srgb_to_linear(small_c)
    sigma = max(0.5, sigma_frac * BLUR_GRID)
    num = cv2.GaussianBlur(lin * small_w[..., None], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(small_w, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    # where the subject covers everything in reach, fall back to the plain blur
    plain = cv2.GaussianBlur(lin, (0, 0), sigma * 2, borderType=cv2.BORDER_REPLICATE)
    wgt = np.clip(den * 4.0, 0.0, 1.0)[..., None]
    blurred = num / np.maximum(den, 1e-6)[..., None] * wgt + plain * (1 - wgt)
    small = blurred if linear else linear_to_srgb(blurred)
    # grid → canvas: grid pixel centre i ↔ source (i + 0.5)·(w / sw) ↔ canvas edge coordinate
    sx, sy = w / sw * p.fx, h / sh * p.fy
    m = np.array([[sx, 0, 0.5 * sx + p.tx - 0.5], [0, sy, 0.5 * sy + p.ty - 0.5]], np.float64)
    return cv2.warpAffine(
        np.ascontiguousarray(small, dtype=np.float32),
        m,
        (p.width, p.height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


# ---------------------------------------------------------------------------------------------
# The whole job


class _Stopwatch:
    """Seconds per stage of ``finish`` (what ``Finished.timings`` reports)."""

    def __init__(self):
        self.timings: dict = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._t
        self._t = now


@dataclass
class _Canvas:
    """What the steps of ``finish`` share: the plan, the subject on the canvas and the output being
    built (colour in the output's transfer, alpha once anything is transparent)."""

    opts: FinishOptions
    placement: Placement
    fg: np.ndarray  # the subject's straight colours on the canvas
    a: np.ndarray  # the subject's alpha on the canvas
    out: np.ndarray  # H×W×3 output colour
    bg_alpha: np.ndarray | float = 0.0  # the background's alpha (a scalar for a flat colour)
    bg_const: np.ndarray | None = None  # the background's linear colour when it is one flat colour
    out_alpha: np.ndarray | None = None  # None: the output is opaque so far
    shadow_lin: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    s_canvas: np.ndarray | None = None  # the shadow's alpha over ``s_region`` of the canvas
    s_region: Bounds | None = None

    def to_lin(self, x):
        return np.asarray(x, np.float32) if self.opts.linear else srgb_to_linear(x)

    def from_lin(self, x):
        return np.clip(x, 0, 1) if self.opts.linear else linear_to_srgb(x)

    def user_out(self, rgb):
        """A user colour (always sRGB) in the output's transfer."""
        arr = np.asarray(rgb[:3], np.float32)
        return srgb_to_linear(arr) if self.opts.linear else arr

    @property
    def opaque_background(self) -> bool:
        return not isinstance(self.bg_alpha, np.ndarray) and self.bg_alpha >= 1.0


def _user_lin(rgb):
    """A user colour (always sRGB) in linear light, for blending."""
    return srgb_to_linear(np.asarray(rgb[:3], np.float32))


def finish(
    image: np.ndarray,
    alpha: np.ndarray,
    foreground: np.ndarray | None = None,
    options: FinishOptions | None = None,
    *,
    layers: bool = False,
) -> Finished:
    """Finish one cut-out. ``image``: the input (H×W×C, any supported dtype); ``alpha``: float32
    H×W; ``foreground``: decontaminated straight colours (H×W×3 float32) or None for the image's own.

    Steps: frame the subject (bounds, shadow, plan) → place it on the canvas → background →
    shadow over the background → subject over both → alpha channel or flattening."""
    opts = (options or FinishOptions()).validate()
    clock = _Stopwatch()
    alpha = np.asarray(alpha, np.float32)
    if image.shape[:2] != alpha.shape:
        h, w = alpha.shape
        raise InputError(f"alpha is {w}x{h} but the image is {image.shape[1]}x{image.shape[0]}")
    colour = np.asarray(foreground if foreground is not None else imageio.colour_float(image), np.float32)
    bounds, shadow_field, p = _frame(alpha, opts, clock)
    c, reach = _place_subject(colour, alpha, p, opts)
    clock.lap("place")
    background_layer = _fill_background(c, image, alpha, layers)
    clock.lap("background")
    if opts.shadow is not None:
        c.shadow_lin = _user_lin(opts.shadow.color)
    if shadow_field is not None:
        c.s_canvas, c.s_region = shadow_field.render(p)
        if c.s_canvas.size == 0 or float(c.s_canvas.max()) <= EPS_ALPHA:
            c.s_canvas = None
    clock.lap("shadow place")
    if not c.opaque_background:
        base = np.broadcast_to(np.asarray(c.bg_alpha, np.float32), c.out.shape[:2])
        c.out_alpha = np.array(base, np.float32)
    if c.s_canvas is not None:
        _blend_shadow(c)
    clock.lap("shadow blend")
    if reach is not None:
        _blend_subject(c, p.to_canvas(reach))
    clock.lap("subject blend")
    result = _alpha_or_flatten(c)
    clock.lap("alpha")
    shadow_box, shadow_full = _shadow_outputs(c, layers)
    return Finished(
        image=result,
        placement=p,
        subject_box=p.to_canvas(bounds) if bounds is not None else None,
        source_box=bounds,
        shadow_box=shadow_box,
        shadow=shadow_full,
        shadow_colour=tuple(float(v) for v in (opts.shadow.color if opts.shadow else (0, 0, 0))),
        background=background_layer,
        subject=np.concatenate([c.fg, c.a[..., None]], axis=2) if layers else None,
        timings=clock.timings,
    )


def _frame(alpha: np.ndarray, opts: FinishOptions, clock: _Stopwatch):
    """The subject's bounds, its shadow and where both land: (bounds, shadow field, placement)."""
    bounds = subject_bounds(alpha)
    clock.lap("bounds")
    shadow_field: ShadowField | None = None
    if opts.shadow is not None and bounds is not None:
        shadow_field = generate(alpha, opts.shadow, bounds)
    clock.lap("shadow")
    region = None  # crop "none": the whole photo is framed
    if opts.crop != "none":
        region = bounds
        if opts.crop == "subject+shadow" and shadow_field is not None:
            region = union_box(bounds, shadow_field.source_box())
    p = plan(alpha.shape, region, margin=opts.margin, canvas=opts.canvas, scale=opts.scale, align=opts.align)
    return bounds, shadow_field, p


def _place_subject(colour: np.ndarray, alpha: np.ndarray, p: Placement, opts: FinishOptions):
    """The subject on the canvas (only where its alpha reaches: colours elsewhere do not matter),
    with an output buffer; and the subject's reach in the source (None: fully transparent)."""
    reach = subject_bounds(alpha, EPS_ALPHA)
    within = reach or Bounds(0, 0, 0, 0)
    fg = place(colour, p) if _colours_kept_outside_alpha(opts) else place(colour, p, within=within)
    a = place(alpha, p, within=within)
    out = np.empty((p.height, p.width, 3), np.float32)
    return _Canvas(opts=opts, placement=p, fg=fg, a=a, out=out), reach


def _fill_background(c: _Canvas, image: np.ndarray, alpha: np.ndarray, layers: bool):
    """The background, written straight into the output buffer; its own layer when ``layers``."""
    spec = c.opts.background
    hc, wc = c.out.shape[:2]
    if spec is None:
        c.bg_alpha = 0.0
        c.out[...] = c.fg  # transparent pixels keep the subject's colours (as a plain cut-out does)
        c.bg_const = np.zeros(3, np.float32)
    elif spec.kind == "color":
        c.out[...] = c.user_out(spec.color)
        c.bg_const = _user_lin(spec.color)
        c.bg_alpha = float(spec.color[3])
    elif spec.kind == "image":
        pic, pic_a = _fitted_image(spec, hc, wc)
        c.out[...] = srgb_to_linear(pic) if c.opts.linear else pic
        c.bg_alpha = pic_a
    else:
        src_colour = imageio.split_channels(image)[0]
        c.out[...] = _blurred_original(src_colour, alpha, c.placement, spec.blur, c.opts.linear)
        c.bg_alpha = 1.0
    if not layers:
        return None
    ba = np.broadcast_to(np.asarray(c.bg_alpha, np.float32), (hc, wc))
    return np.concatenate([c.out if spec is not None else np.zeros_like(c.out), ba[..., None]], axis=2)


def _blend_shadow(c: _Canvas) -> None:
    """The shadow over the background, dense over the region it covers (the subject is drawn over
    it next, so no mask is needed here)."""
    x, y, rw, rh = c.s_region
    s = c.s_canvas
    under = c.out[y : y + rh, x : x + rw]
    if c.opts.background is None:
        # shadow on transparency: the shadow's colour, its darkness in alpha
        under[...] = np.where((s > EPS_ALPHA)[..., None], c.from_lin(c.shadow_lin[None, None, :]), under)
        c.out_alpha[y : y + rh, x : x + rw] = s
    elif c.opaque_background:
        # opaque background: linear = bg + (shadow − bg)·s, per channel
        if c.bg_const is not None:
            lin = np.empty((rh, rw, 3), np.float32)
            lin[...] = c.bg_const
        else:
            lin = c.to_lin(under)
        for ch in range(3):
            plane = lin[..., ch]
            plane += (c.shadow_lin[ch] - plane) * s
        under[...] = c.from_lin(lin)
    else:
        n = rh * rw
        scalar = not isinstance(c.bg_alpha, np.ndarray)
        bga = c.bg_alpha if scalar else c.out_alpha[y : y + rh, x : x + rw].reshape(n)
        col, sa = over_linear(
            np.zeros((n, 3), np.float32),
            np.zeros(n, np.float32),
            c.to_lin(under.reshape(n, 3)),
            bga,
            c.shadow_lin,
            s.reshape(n),
        )
        under[...] = c.from_lin(col).reshape(rh, rw, 3)
        c.out_alpha[y : y + rh, x : x + rw] = sa.reshape(rh, rw)


def _blend_subject(c: _Canvas, reach: Bounds) -> None:
    """The subject over what is there: opaque pixels are copied, edge pixels blended in linear light.
    ``reach``: where the subject's alpha reaches, on the canvas."""
    import cv2

    y0, y1 = max(0, reach.y - 1), min(c.out.shape[0], reach.bottom + 1)  # whole rows: flat indices
    a_r, o_r, f_r = c.a[y0:y1], c.out[y0:y1], c.fg[y0:y1]
    opaque = cv2.compare(a_r, 1.0 - EPS_ALPHA, cv2.CMP_GE)  # uint8 0/255
    cv2.copyTo(f_r, opaque, o_r)
    if c.out_alpha is not None:
        c.out_alpha[y0:y1][opaque > 0] = 1.0
    edge = np.flatnonzero(cv2.inRange(a_r, EPS_ALPHA * 1.0001, 1.0 - EPS_ALPHA * 1.0001))
    if not edge.size:
        return
    o_flat = o_r.reshape(-1, 3)
    if a_r.flags.c_contiguous and f_r.flags.c_contiguous:
        a_e = a_r.reshape(-1)[edge]
        f_e = f_r.reshape(-1, 3)[edge]
    else:  # views into the source (a crop at scale 1): index rows/columns, no region copy
        ey, ex = np.divmod(edge, a_r.shape[1])
        a_e, f_e = a_r[ey, ex], f_r[ey, ex]
    f_lin = c.to_lin(f_e)
    if c.out_alpha is None:  # opaque underneath: a plain linear-light mix (the common case)
        if c.bg_const is not None and c.s_canvas is None:  # a flat colour: nothing to convert
            mix = np.empty((edge.size, 3), np.float32)
            mix[...] = c.bg_const
        else:
            mix = c.to_lin(o_flat[edge])
        mix += (f_lin - mix) * a_e[:, None]
        o_flat[edge] = c.from_lin(mix)
        return
    a_flat = c.out_alpha[y0:y1].reshape(-1)
    zeros = np.zeros(edge.size, np.float32)
    col, oa = over_linear(f_lin, a_e, c.to_lin(o_flat[edge]), a_flat[edge], c.shadow_lin, zeros)
    o_flat[edge] = c.from_lin(col)
    a_flat[edge] = oa


def _alpha_or_flatten(c: _Canvas) -> np.ndarray:
    """The output picture: with an alpha channel (asked for, or where it has transparency) or
    flattened onto the matte colour."""
    hc, wc = c.out.shape[:2]
    keep_alpha = c.opts.alpha if c.opts.alpha is not None else c.out_alpha is not None
    if keep_alpha:
        oa = c.out_alpha if c.out_alpha is not None else np.ones((hc, wc), np.float32)
        return np.concatenate([c.out, oa[..., None]], axis=2)
    if c.out_alpha is None:
        return c.out
    n = hc * wc
    col, _ = over_linear(
        c.to_lin(c.out.reshape(n, 3)),
        c.out_alpha.reshape(n),
        np.broadcast_to(_user_lin(c.opts.matte), (n, 3)),
        1.0,
        c.shadow_lin,
        np.zeros(n, np.float32),
    )
    return c.from_lin(col).reshape(hc, wc, 3)


def _shadow_outputs(c: _Canvas, layers: bool):
    """(where the shadow is visible on the output, the shadow's alpha over the whole canvas when
    ``layers``); None for what there is not."""
    if c.s_canvas is None:
        return None, None
    x, y, rw, rh = c.s_region
    sb = subject_bounds(c.s_canvas, 0.02)
    shadow_box = Bounds(sb.x + x, sb.y + y, sb.width, sb.height) if sb is not None else None
    shadow_full = None
    if layers:
        shadow_full = np.zeros(c.out.shape[:2], np.float32)
        shadow_full[y : y + rh, x : x + rw] = c.s_canvas
    return shadow_box, shadow_full


def _colours_kept_outside_alpha(opts: FinishOptions) -> bool:
    """Whether the subject's colours matter outside its alpha: only on a transparent output, where
    fully transparent pixels keep them (as a plain cut-out does, for editors that unmask later)."""
    return opts.background is None


def shadow_layer(alpha: np.ndarray, spec: ShadowSpec | str = "soft") -> np.ndarray:
    """The shadow alone at the image's size (float32 H×W, darkness included): an editor's
    "shadow layer" (fill it with the shadow colour and use this as its alpha/mask)."""
    from maskd.core.shadow import parse_shadow

    if isinstance(spec, str):
        spec = parse_shadow(spec)
    h, w = alpha.shape
    if spec is None:
        return np.zeros((h, w), np.float32)
    fld = generate(np.asarray(alpha, np.float32), spec)
    return fld.full(h, w) if fld is not None else np.zeros((h, w), np.float32)


def describe_options(opts: FinishOptions) -> dict:
    """The options in plain JSON terms (for the sidecar)."""
    d = {
        "background": opts.background.describe() if opts.background else None,
        "shadow": None,
        "crop": opts.crop,
        "margin": opts.margin.describe(),
        "canvas": opts.canvas.describe() if opts.canvas else "fit",
        "scale": opts.scale,
        "align": list(opts.align),
    }
    if opts.shadow is not None:
        s = opts.shadow
        d["shadow"] = {
            "direction": s.direction,
            "distance": s.distance_px if s.distance_px is not None else s.distance,
            "distance_unit": "px" if s.distance_px is not None else "height",
            "softness": s.softness_px if s.softness_px is not None else s.softness,
            "opacity": s.opacity,
            "contact": s.contact,
            "fade": s.fade,
            "color": "#" + "".join(f"{round(v * 255):02x}" for v in s.color),
        }
    return d


__all__ = [
    "BackgroundSpec",
    "FinishOptions",
    "Finished",
    "finish",
    "parse_background",
    "parse_colour",
    "shadow_layer",
    "over_linear",
    "composite_reference",
]
