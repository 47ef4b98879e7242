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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from maskd.core import imageio
from maskd.core.canvas import CanvasSpec, Margin, Placement, place, plan, subject_bounds, union_box
from maskd.core.errors import InputError
from maskd.core.shadow import ShadowField, ShadowSpec, generate

EPS_ALPHA = 1.0 / 131072.0  # alpha within this of 0 or 1 is treated as exactly 0 or 1 (< ½ 16-bit step)
BLUR_DEFAULT = 0.02  # blurred-original background: σ as a fraction of the canvas's longer side
BLUR_GRID = 320  # the blurred background is computed with the canvas's longer side at this size
CROPS = ("none", "subject", "subject+shadow")
FITS = ("cover", "contain", "stretch")

NAMED_COLOURS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "lightgray": (211, 211, 211),
    "lightgrey": (211, 211, 211),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
}


# ---------------------------------------------------------------------------------------------
# sRGB transfer (float32, exact piecewise curve) with table shortcuts for integer inputs


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded → linear light, float32 (the exact IEC 61966-2-1 curve; fewer passes than
    ``imageio.srgb_to_linear``, same values to float precision)."""
    import cv2

    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    y = np.ascontiguousarray(x) + np.float32(0.055)
    y *= np.float32(1.0 / 1.055)
    y = cv2.pow(y, 2.4).reshape(x.shape)
    low = x <= 0.04045
    y[low] = x[low] * np.float32(1.0 / 12.92)
    return y


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light → sRGB-encoded, float32 (exact curve, see ``srgb_to_linear``)."""
    import cv2

    x = np.ascontiguousarray(np.clip(np.asarray(x, np.float32), 0.0, 1.0))
    y = cv2.pow(x, 1.0 / 2.4).reshape(x.shape)
    y *= np.float32(1.055)
    y -= np.float32(0.055)
    low = x <= 0.0031308
    y[low] = x[low] * np.float32(12.92)
    return y


_LUT8 = None


def _linear_from_uint8(x: np.ndarray) -> np.ndarray:
    import cv2

    global _LUT8
    if _LUT8 is None:
        _LUT8 = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)
    return cv2.LUT(x, _LUT8)


# ---------------------------------------------------------------------------------------------
# Options


def parse_colour(text: str) -> tuple[float, float, float, float]:
    """``white``, ``#rgb``, ``#rrggbb``, ``#rrggbbaa``, ``r,g,b`` or ``r,g,b,a`` (0..255; a may be
    0..1) or ``transparent`` → (r, g, b, a) sRGB floats in [0, 1]."""
    t = str(text).strip().lower()
    if t in ("transparent", "none"):
        return (0.0, 0.0, 0.0, 0.0)
    if t in NAMED_COLOURS:
        return tuple(v / 255 for v in NAMED_COLOURS[t]) + (1.0,)
    if t.startswith("#"):
        h = t[1:]
        if len(h) in (3, 4):
            h = "".join(c * 2 for c in h)
        if len(h) in (6, 8) and re.fullmatch(r"[0-9a-f]+", h):
            vals = [int(h[i : i + 2], 16) / 255 for i in range(0, len(h), 2)]
            return tuple(vals) + ((1.0,) if len(vals) == 3 else ())
    parts = [p.strip() for p in t.replace("rgba(", "").replace("rgb(", "").rstrip(")").split(",")]
    if len(parts) in (3, 4):
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            vals = None
        if vals and all(0 <= v <= 255 for v in vals[:3]):
            rgb = tuple(v / 255 for v in vals[:3])
            if len(vals) == 3:
                return rgb + (1.0,)
            a = vals[3] / 255 if vals[3] > 1 else vals[3]
            if 0 <= a <= 1:
                return rgb + (a,)
    raise InputError(f"colour {text!r}: use a name (white, black, …), #rrggbb, #rrggbbaa, r,g,b or r,g,b,a")


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
    subject_box: tuple[int, int, int, int] | None  # the subject on the output (x, y, w, h)
    source_box: tuple[int, int, int, int] | None  # the subject in the input
    shadow_box: tuple[int, int, int, int] | None  # the visible shadow on the output
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


def finish(
    image: np.ndarray,
    alpha: np.ndarray,
    foreground: np.ndarray | None = None,
    options: FinishOptions | None = None,
    *,
    layers: bool = False,
) -> Finished:
    """Finish one cut-out. ``image``: the input (H×W×C, any supported dtype); ``alpha``: float32
    H×W; ``foreground``: decontaminated straight colours (H×W×3 float32) or None for the image's own."""
    opts = (options or FinishOptions()).validate()
    timings: dict = {}
    t = time.perf_counter()

    def lap(stage):
        nonlocal t
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - t
        t = now

    alpha = np.asarray(alpha, np.float32)
    h, w = alpha.shape
    if image.shape[:2] != (h, w):
        raise InputError(f"alpha is {w}x{h} but the image is {image.shape[1]}x{image.shape[0]}")
    colour = foreground if foreground is not None else imageio.colour_float(image)
    colour = np.asarray(colour, np.float32)
    bounds = subject_bounds(alpha)
    lap("bounds")
    shadow_field: ShadowField | None = None
    if opts.shadow is not None and bounds is not None:
        shadow_field = generate(alpha, opts.shadow, bounds)
    lap("shadow")
    region = None  # crop "none": the whole photo is framed
    if opts.crop != "none":
        region = bounds
        if opts.crop == "subject+shadow" and shadow_field is not None:
            region = union_box(bounds, shadow_field.source_box())
    p = plan((h, w), region, margin=opts.margin, canvas=opts.canvas, scale=opts.scale, align=opts.align)

    # the subject on the canvas (only where its alpha reaches: colours elsewhere do not matter)
    reach = subject_bounds(alpha, EPS_ALPHA)
    keep_all = _colours_kept_outside_alpha(opts)
    fg = place(colour, p) if keep_all else place(colour, p, within=reach or (0, 0, 0, 0))
    a = place(alpha, p, within=reach or (0, 0, 0, 0))
    lap("place")
    bg_spec = opts.background
    hc, wc = p.height, p.width
    to_lin = (lambda x: np.asarray(x, np.float32)) if opts.linear else srgb_to_linear
    from_lin = (lambda x: np.clip(x, 0, 1)) if opts.linear else linear_to_srgb

    def user_out(rgb):  # user colours are sRGB: in the output's transfer
        arr = np.asarray(rgb[:3], np.float32)
        return srgb_to_linear(arr) if opts.linear else arr

    def user_lin(rgb):  # … and in linear light, for blending
        return srgb_to_linear(np.asarray(rgb[:3], np.float32))

    # the background layer: colour/alpha, built straight into the output buffer
    out = np.empty((hc, wc, 3), np.float32)
    bg_alpha: np.ndarray | float
    bg_const = None
    if bg_spec is None:
        bg_alpha = 0.0
        out[...] = fg  # transparent pixels keep the subject's colours (as a plain cut-out does)
        bg_const = np.zeros(3, np.float32)
    elif bg_spec.kind == "color":
        out[...] = user_out(bg_spec.color)
        bg_const = user_lin(bg_spec.color)
        bg_alpha = float(bg_spec.color[3])
    elif bg_spec.kind == "image":
        pic, pic_a = _fitted_image(bg_spec, hc, wc)
        if opts.linear:
            pic = srgb_to_linear(pic)
        out[...] = pic
        bg_alpha = pic_a
    else:
        src_colour = imageio.split_channels(image)[0]
        out[...] = _blurred_original(src_colour, alpha, p, bg_spec.blur, opts.linear)
        bg_alpha = 1.0
    background_layer = None
    if layers:
        ba = np.broadcast_to(np.asarray(bg_alpha, np.float32), (hc, wc))
        background_layer = np.concatenate(
            [out if bg_spec is not None else np.zeros_like(out), ba[..., None]], axis=2
        )
    lap("background")

    # the shadow on the canvas (only its footprint region)
    s_canvas = None
    s_region = None
    shadow_lin = user_lin(opts.shadow.color) if opts.shadow is not None else np.zeros(3, np.float32)
    if shadow_field is not None:
        s_canvas, s_region = shadow_field.render(p)
        if s_canvas.size == 0 or float(s_canvas.max()) <= EPS_ALPHA:
            s_canvas = None
    lap("shadow place")

    # alpha of the output
    scalar_bg_a = not isinstance(bg_alpha, np.ndarray)
    out_alpha = None
    if not (scalar_bg_a and bg_alpha >= 1.0):
        base_a = np.broadcast_to(np.asarray(bg_alpha, np.float32), (hc, wc))
        out_alpha = np.array(base_a, np.float32)

    # 1) shadow over background, dense over the rows the shadow covers (the subject is drawn over
    #    it next, so no mask is needed here)
    if s_canvas is not None:
        x, y, rw, rh = s_region
        s = s_canvas
        under = out[y : y + rh, x : x + rw]
        if bg_spec is None:
            # shadow on transparency: the shadow's colour, its darkness in alpha
            under[...] = np.where((s > EPS_ALPHA)[..., None], from_lin(shadow_lin[None, None, :]), under)
            out_alpha[y : y + rh, x : x + rw] = s
        elif scalar_bg_a and bg_alpha >= 1.0:
            # opaque background: linear = bg + (shadow − bg)·s, per channel
            if bg_const is not None:
                lin = np.empty((rh, rw, 3), np.float32)
                lin[...] = bg_const
            else:
                lin = to_lin(under)
            for c in range(3):
                ch = lin[..., c]
                ch += (shadow_lin[c] - ch) * s
            under[...] = from_lin(lin)
        else:
            n = rh * rw
            bga = bg_alpha if scalar_bg_a else out_alpha[y : y + rh, x : x + rw].reshape(n)
            col, sa = over_linear(
                np.zeros((n, 3), np.float32),
                np.zeros(n, np.float32),
                to_lin(under.reshape(n, 3)),
                bga,
                shadow_lin,
                s.reshape(n),
            )
            under[...] = from_lin(col).reshape(rh, rw, 3)
            out_alpha[y : y + rh, x : x + rw] = sa.reshape(rh, rw)
    lap("shadow blend")

    # 2) the subject: opaque pixels are copied, edge pixels blended in linear light
    import cv2

    box = p.to_canvas(bounds) if bounds is not None else None
    if reach is not None:
        rx, ry, rw, rh = p.to_canvas(reach)
        y0, y1 = max(0, ry - 1), min(hc, ry + rh + 1)  # whole rows: flat indices into contiguous memory
        a_r = a[y0:y1]
        o_r = out[y0:y1]
        f_r = fg[y0:y1]
        opaque = cv2.compare(a_r, 1.0 - EPS_ALPHA, cv2.CMP_GE)  # uint8 0/255
        cv2.copyTo(f_r, opaque, o_r)
        if out_alpha is not None:
            out_alpha[y0:y1][opaque > 0] = 1.0
        edge = np.flatnonzero(cv2.inRange(a_r, EPS_ALPHA * 1.0001, 1.0 - EPS_ALPHA * 1.0001))
        if edge.size:
            o_flat = o_r.reshape(-1, 3)
            if a_r.flags.c_contiguous and f_r.flags.c_contiguous:
                a_e = a_r.reshape(-1)[edge]
                f_e = f_r.reshape(-1, 3)[edge]
            else:  # views into the source (a crop at scale 1): index rows/columns, no region copy
                ey, ex = np.divmod(edge, a_r.shape[1])
                a_e, f_e = a_r[ey, ex], f_r[ey, ex]
            f_lin = to_lin(f_e)
            if out_alpha is None:  # opaque underneath: a plain linear-light mix (the common case)
                if bg_const is not None and s_canvas is None:  # a flat colour: nothing to convert
                    mix = np.empty((edge.size, 3), np.float32)
                    mix[...] = bg_const
                else:
                    mix = to_lin(o_flat[edge])
                mix += (f_lin - mix) * a_e[:, None]
                o_flat[edge] = from_lin(mix)
            else:
                a_flat = out_alpha[y0:y1].reshape(-1)
                col, oa = over_linear(
                    f_lin,
                    a_e,
                    to_lin(o_flat[edge]),
                    a_flat[edge],
                    shadow_lin,
                    np.zeros(edge.size, np.float32),
                )
                o_flat[edge] = from_lin(col)
                a_flat[edge] = oa
    lap("subject blend")

    # 3) the alpha channel, or flattening
    keep_alpha = opts.alpha if opts.alpha is not None else out_alpha is not None
    if keep_alpha:
        oa = out_alpha if out_alpha is not None else np.ones((hc, wc), np.float32)
        result = np.concatenate([out, oa[..., None]], axis=2)
    elif out_alpha is not None:
        matte = user_lin(opts.matte)
        n = hc * wc
        col, _ = over_linear(
            to_lin(out.reshape(n, 3)),
            out_alpha.reshape(n),
            np.broadcast_to(matte, (n, 3)),
            1.0,
            shadow_lin,
            np.zeros(n, np.float32),
        )
        result = from_lin(col).reshape(hc, wc, 3)
    else:
        result = out
    lap("alpha")

    shadow_full = None
    shadow_box = None
    if s_canvas is not None:
        from maskd.core.canvas import subject_bounds as _sb

        sb = _sb(s_canvas, 0.02)
        if sb is not None:
            shadow_box = (sb[0] + s_region[0], sb[1] + s_region[1], sb[2], sb[3])
        if layers:
            shadow_full = np.zeros((hc, wc), np.float32)
            x, y, rw, rh = s_region
            shadow_full[y : y + rh, x : x + rw] = s_canvas
    subject_layer = None
    if layers:
        subject_layer = np.concatenate([fg, a[..., None]], axis=2)
    shadow_colour = tuple(float(v) for v in (opts.shadow.color if opts.shadow else (0, 0, 0)))
    return Finished(
        image=result,
        placement=p,
        subject_box=box,
        source_box=bounds,
        shadow_box=shadow_box,
        shadow=shadow_full,
        shadow_colour=shadow_colour,
        background=background_layer,
        subject=subject_layer,
        timings=timings,
    )


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
