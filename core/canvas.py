"""Crop and canvas: where the subject lands in the finished picture.

A *placement* maps source pixels to canvas pixels by a scale and an offset
(``canvas = source · f + t``, per axis). It is planned once per image from the subject's bounds
(or the whole frame), the margin, the canvas size or aspect, the scale and the alignment, and then
every layer (foreground, alpha, shadow, blurred original) is placed with it, so they stay in
register to the pixel.

Rules (documented for users in docs/finishing.md):
- margins are in pixels of the *output*, or in percent of the output's width (left/right) and
  height (top/bottom);
- with a canvas size (``2000x2000``) the subject is fitted into the canvas minus the margins and
  then multiplied by ``scale``;
- without one the subject keeps its native resolution (no resampling) and the canvas is sized
  around it: subject / scale + margins, widened to the aspect (``1:1``) if one is given.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from maskd.core.errors import InputError
from maskd.core.limits import check_option
from maskd.plugins.maskd_client import Bounds

BOUNDS_THRESHOLD = 0.05  # alpha above this counts as subject for the bounding box
MAX_CANVAS_SIDE = 30000  # refuse canvases that would need tens of GB


@dataclass(frozen=True)
class Margin:
    """Space around the subject: top, right, bottom, left; ``percent`` or pixels."""

    top: float = 0.0
    right: float = 0.0
    bottom: float = 0.0
    left: float = 0.0
    percent: bool = False

    def pixels(self, width: float, height: float) -> tuple[float, float, float, float]:
        """(top, right, bottom, left) in output pixels for an output of ``width``×``height``."""
        if not self.percent:
            return self.top, self.right, self.bottom, self.left
        return (
            self.top / 100 * height,
            self.right / 100 * width,
            self.bottom / 100 * height,
            self.left / 100 * width,
        )

    def validate(self) -> Margin:
        """Each side ≥ 0 and bounded: under 50% of the output, or at most ``MAX_CANVAS_SIDE`` pixels."""
        sides = (self.top, self.right, self.bottom, self.left)
        for v in sides:
            if self.percent:
                if not (math.isfinite(v) and 0 <= v < 50):
                    raise InputError(f"margin {self.describe()}: each side must be 0 to under 50%")
            else:
                check_option("margin_pixels", v, f"margin {self.describe()}: a side of")
        if self.percent and (self.top + self.bottom >= 100 or self.left + self.right >= 100):
            raise InputError(f"margin {self.describe()}: opposite margins add up to 100% or more")
        return self

    def describe(self) -> str:
        unit = "%" if self.percent else "px"
        return ",".join(f"{v:g}{unit}" for v in (self.top, self.right, self.bottom, self.left))


@dataclass(frozen=True)
class CanvasSpec:
    """A fixed output size (``size`` = (w, h)) or an aspect ratio (``aspect`` = w / h), or neither."""

    size: tuple[int, int] | None = None
    aspect: float | None = None

    def validate(self) -> CanvasSpec:
        if self.size is not None:
            w, h = self.size
            if not all(isinstance(v, int) and 1 <= v <= MAX_CANVAS_SIDE for v in (w, h)):
                raise InputError(f"canvas {w}x{h}: sides must be whole numbers, 1..{MAX_CANVAS_SIDE} pixels")
        if self.aspect is not None and not (math.isfinite(self.aspect) and 1e-3 <= self.aspect <= 1e3):
            raise InputError(f"canvas aspect {self.aspect}: give a ratio such as 1:1 or 4:5")
        return self

    def describe(self) -> str:
        if self.size:
            return f"{self.size[0]}x{self.size[1]}"
        return f"aspect {self.aspect:g}" if self.aspect else "fit"


@dataclass(frozen=True)
class Placement:
    """Source → canvas mapping: canvas_x = source_x · fx + tx (continuous pixel-edge coordinates)."""

    width: int  # canvas size
    height: int
    fx: float
    fy: float
    tx: float
    ty: float
    box: Bounds  # where the planned source rectangle lands on the canvas
    source_box: Bounds  # the planned source rectangle

    @property
    def identity(self) -> bool:
        return (
            self.fx == 1.0 and self.fy == 1.0 and float(self.tx).is_integer() and float(self.ty).is_integer()
        )

    def to_canvas(self, box) -> Bounds:
        """A source rectangle (x, y, w, h; may be fractional) in canvas pixels, rounded outwards,
        clipped to the canvas."""
        x, y, w, h = box
        x0 = math.floor(x * self.fx + self.tx + 1e-6)
        y0 = math.floor(y * self.fy + self.ty + 1e-6)
        x1 = math.ceil((x + w) * self.fx + self.tx - 1e-6)
        y1 = math.ceil((y + h) * self.fy + self.ty - 1e-6)
        return Bounds.from_corners(max(0, x0), max(0, y0), min(self.width, x1), min(self.height, y1))


# ---------------------------------------------------------------------------------------------
# Parsing user values (all raise InputError with the value and an example)

ALIGN_NAMES = {
    "center": (0.5, 0.5),
    "centre": (0.5, 0.5),
    "middle": (0.5, 0.5),
    "top": (0.5, 0.0),
    "bottom": (0.5, 1.0),
    "left": (0.0, 0.5),
    "right": (1.0, 0.5),
    "top-left": (0.0, 0.0),
    "top-right": (1.0, 0.0),
    "bottom-left": (0.0, 1.0),
    "bottom-right": (1.0, 1.0),
}


def parse_margin(text: str) -> Margin:
    """``5%``, ``40`` / ``40px``, or CSS-like 2 or 4 values: ``5%,10%`` (vertical, horizontal),
    ``10,20,30,40`` (top, right, bottom, left). All values share one unit."""
    parts = [p.strip().lower() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    if len(parts) not in (1, 2, 4):
        raise InputError(f"margin {text!r}: give 1, 2 or 4 values, e.g. 5% or 40px or 5%,10%")
    units = {p.endswith("%") for p in parts}
    if len(units) > 1:
        raise InputError(f"margin {text!r}: mix of % and pixels; use one unit for all sides")
    percent = units.pop()
    values = []
    for p in parts:
        number = p.rstrip("%").removesuffix("px")
        try:
            v = float(number)
        except ValueError:
            raise InputError(f"margin {text!r}: {p!r} is not a number (e.g. 5% or 40px)") from None
        if not math.isfinite(v) or v < 0:
            raise InputError(f"margin {text!r}: margins must be ≥ 0")
        values.append(v)
    if percent and (len(values) == 1 and values[0] >= 50 or sum(values[:2]) >= 100):
        raise InputError(f"margin {text!r}: opposite margins must leave room for the subject (< 50% each)")
    if len(values) == 1:
        values = values * 4
    elif len(values) == 2:
        values = [values[0], values[1], values[0], values[1]]
    if percent and (values[0] + values[2] >= 100 or values[1] + values[3] >= 100):
        raise InputError(f"margin {text!r}: opposite margins add up to 100% or more")
    return Margin(*values, percent=percent).validate()


def parse_canvas(text: str) -> CanvasSpec:
    """``2000x2000`` (pixels), ``1:1`` / ``4:5`` (aspect, size from the subject), or ``fit``."""
    t = str(text).strip().lower()
    if t in ("fit", "none", "auto"):
        return CanvasSpec()
    if t in ("square",):
        return CanvasSpec(aspect=1.0)
    m = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", t)
    if m:
        w, h = int(m.group(1)), int(m.group(2))
        if not (1 <= w <= MAX_CANVAS_SIDE and 1 <= h <= MAX_CANVAS_SIDE):
            raise InputError(f"canvas {text!r}: sides must be 1..{MAX_CANVAS_SIDE} pixels")
        return CanvasSpec(size=(w, h))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)", t)
    if m and float(m.group(1)) > 0 and float(m.group(2)) > 0:
        return CanvasSpec(aspect=float(m.group(1)) / float(m.group(2))).validate()
    raise InputError(f"canvas {text!r}: give a size WIDTHxHEIGHT (2000x2000) or an aspect W:H (1:1, 4:5)")


def parse_scale(text: str) -> float:
    """``80%`` or ``0.8``: how much of the space inside the margins the subject fills."""
    t = str(text).strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and 0.01 <= v <= 10):
        raise InputError(f"scale {text!r}: give a percentage such as 80% (or a factor 0.8)")
    return v


def parse_align(text: str) -> tuple[float, float]:
    """A name (center, bottom, top-left, …) or ``X%,Y%`` (0%,0% = top-left, 100%,100% = bottom-right)."""
    t = str(text).strip().lower().replace("_", "-").replace(" ", "-")
    alias = {
        "left-top": "top-left",
        "right-top": "top-right",
        "left-bottom": "bottom-left",
        "right-bottom": "bottom-right",
    }
    t = alias.get(t, t)
    if t in ALIGN_NAMES:
        return ALIGN_NAMES[t]
    parts = [p.strip() for p in t.split(",")]
    if len(parts) == 2:
        try:
            vals = tuple(float(p.rstrip("%")) / (100 if p.endswith("%") else 1) for p in parts)
        except ValueError:
            vals = None
        if vals and all(0 <= v <= 1 for v in vals):
            return vals
    raise InputError(
        f"align {text!r}: give center, top, bottom, left, right, top-left, … or X%,Y% (e.g. 50%,100%)"
    )


# ---------------------------------------------------------------------------------------------
# Bounds and planning


def subject_bounds(alpha: np.ndarray, threshold: float = BOUNDS_THRESHOLD) -> Bounds | None:
    """The subject's bounding box where alpha > ``threshold``; None when it is empty."""
    solid = np.asarray(alpha) > threshold
    rows = np.flatnonzero(solid.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(solid[rows[0] : rows[-1] + 1].any(axis=0))
    return Bounds(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def union_box(a, b) -> Bounds | None:
    """The smallest rectangle holding both (either may be None: nothing)."""
    if a is None:
        return None if b is None else Bounds(*b)
    return Bounds(*a).union(b)


def plan(
    image_hw: tuple[int, int],
    region: tuple[int, int, int, int] | None,
    *,
    margin: Margin = Margin(),
    canvas: CanvasSpec | None = None,
    scale: float = 1.0,
    align: tuple[float, float] = (0.5, 0.5),
) -> Placement:
    """Plan where ``region`` (x, y, w, h in source pixels; None = the whole frame) lands."""
    h_img, w_img = image_hw
    canvas = canvas or CanvasSpec()
    rx, ry, rw, rh = region if region is not None else (0, 0, w_img, h_img)
    rw, rh = max(1, rw), max(1, rh)
    ax, ay = align
    if canvas.size:
        cw, ch = canvas.size
        mt, mr, mb, ml = margin.pixels(cw, ch)
        box_w, box_h = cw - ml - mr, ch - mt - mb
        if box_w < 1 or box_h < 1:
            raise InputError(f"margin {margin.describe()} leaves no room on a {cw}x{ch} canvas")
        f = min(box_w / rw, box_h / rh) * scale
        tw, th = max(1, round(rw * f)), max(1, round(rh * f))
    else:
        tw, th = max(1, round(rw * scale)), max(1, round(rh * scale))
        # the content box the subject fills `scale` of, at native resolution
        inner_w, inner_h = rw / scale if scale < 1 else tw, rh / scale if scale < 1 else th
        if margin.percent:
            cw = inner_w / (1 - (margin.left + margin.right) / 100)
            ch = inner_h / (1 - (margin.top + margin.bottom) / 100)
        else:
            cw, ch = inner_w + margin.left + margin.right, inner_h + margin.top + margin.bottom
        cw, ch = math.ceil(cw - 1e-6), math.ceil(ch - 1e-6)
        if canvas.aspect:
            if cw / ch < canvas.aspect:
                cw = math.ceil(ch * canvas.aspect - 1e-6)
            else:
                ch = math.ceil(cw / canvas.aspect - 1e-6)
        if max(cw, ch) > MAX_CANVAS_SIDE:
            raise InputError(
                f"the output would be {cw}x{ch} pixels (over {MAX_CANVAS_SIDE}); "
                "use a smaller margin or a fixed --canvas size"
            )
        mt, mr, mb, ml = margin.pixels(cw, ch)
        box_w, box_h = cw - ml - mr, ch - mt - mb
        f = tw / rw
    ox = round(ml + (box_w - tw) * ax)
    oy = round(mt + (box_h - th) * ay)
    fx, fy = tw / rw, th / rh
    return Placement(
        width=int(cw),
        height=int(ch),
        fx=fx,
        fy=fy,
        tx=ox - rx * fx,
        ty=oy - ry * fy,
        box=Bounds(int(ox), int(oy), int(tw), int(th)),
        source_box=Bounds(rx, ry, rw, rh),
    )


def place(
    src: np.ndarray,
    p: Placement,
    *,
    fill: float = 0.0,
    out: np.ndarray | None = None,
    within: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """``src`` (H×W or H×W×C float32) on the canvas; area outside the source gets ``fill``.

    At scale 1 with an integer offset this is a plain copy (pixel-exact) — or a view of ``src``
    when the canvas lies inside it, so callers must not write into the result; otherwise the
    visible part of the source is resampled (area averaging when shrinking, bilinear when enlarging).
    ``within`` (x, y, w, h in source pixels) limits the work to that part of the source (the rest
    of the canvas gets ``fill``): the subject's reach, when only it matters.
    """
    import cv2

    h, w = src.shape[:2]
    shape = (p.height, p.width) + src.shape[2:]
    if out is None and p.identity:
        x0, y0 = int(-p.tx), int(-p.ty)
        if x0 >= 0 and y0 >= 0 and x0 + p.width <= w and y0 + p.height <= h:
            return src[y0 : y0 + p.height, x0 : x0 + p.width]  # a view: the canvas lies inside the source
    if out is None:
        out = np.empty(shape, np.float32)
        out[...] = fill
    vx0 = max(0, math.floor(-p.tx / p.fx))
    vy0 = max(0, math.floor(-p.ty / p.fy))
    vx1 = min(w, math.ceil((p.width - p.tx) / p.fx))
    vy1 = min(h, math.ceil((p.height - p.ty) / p.fy))
    if within is not None:
        wx, wy, ww, wh = within
        vx0, vy0 = max(vx0, wx - 1), max(vy0, wy - 1)  # a pixel of context for the resampling
        vx1, vy1 = min(vx1, wx + ww + 1), min(vy1, wy + wh + 1)
    if vx1 <= vx0 or vy1 <= vy0:
        return out
    part = src[vy0:vy1, vx0:vx1]
    if p.identity:
        dx, dy = int(vx0 + p.tx), int(vy0 + p.ty)
    else:
        nw = max(1, round((vx1 - vx0) * p.fx))
        nh = max(1, round((vy1 - vy0) * p.fy))
        shrink = p.fx < 1 and p.fy < 1
        if part.strides[-1] != part.itemsize:  # OpenCV takes row-strided views, not strided pixels
            part = np.ascontiguousarray(part)
        part = cv2.resize(part, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if part.ndim < len(shape):
            part = part[..., None]
        dx, dy = round(vx0 * p.fx + p.tx), round(vy0 * p.fy + p.ty)
    # clip the paste to the canvas
    sx0, sy0 = max(0, -dx), max(0, -dy)
    x0, y0 = max(0, dx), max(0, dy)
    x1 = min(p.width, dx + part.shape[1])
    y1 = min(p.height, dy + part.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = part[sy0 : sy0 + (y1 - y0), sx0 : sx0 + (x1 - x0)]
    return out
