"""Shadows generated from the matte: a contact shadow and a cast shadow, grounded at the base.

Not a blurred copy of the cut-out: the subject is assumed to stand on a floor at its lowest
point (the bottom of its bounding box). Two parts:

- **contact**: a tight, dark band right under the silhouette's bottom edge, strongest where the
  subject actually reaches the floor (columns whose lowest pixel is near the floor line) and
  absent where the outline is lifted (the neck of a bottle lying on its side);
- **cast**: the silhouette projected onto the floor away from the light: each point at height h
  above the floor moves by ``distance · h`` in the image direction ``direction`` (0° right,
  90° up = behind the subject, 180° left, 270° down = towards the viewer). It starts at the base,
  fades with the distance from it (``fade``), and gets softer the farther it falls
  (sharp near the contact point, ``softness`` at the tip), like a real soft shadow.

Everything is computed on a reduced grid (the subject's longer side at ``WORK_SIDE`` pixels; a
shadow is low-frequency) and returned as a ``ShadowField`` that callers place on any canvas.
Sizes are relative to the subject's height so a batch of differently sized photos looks alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
from maskd.core.errors import InputError
from maskd.core.limits import OPTION_BOUNDS, check_option
from maskd.plugins.maskd_client import Bounds

WORK_SIDE = 384  # the subject's longer side on the working grid (pixels)
FLOOR_BAND = 0.04  # columns whose lowest pixel is within this × height of the floor get contact
VISIBLE = 1.0 / 4096.0  # shadow alpha below this is left out (under ¼ of an 8-bit step on white)
MIN_BLUR_PX = 1.5  # the smallest blur σ, in source pixels
MIN_VERTICAL = 0.12  # the floor is seen from a little above: a shadow falling sideways keeps some depth


@dataclass(frozen=True)
class ShadowSpec:
    """Shadow parameters. Lengths are fractions of the subject's height unless ``*_px`` is set."""

    direction: float = 90.0  # degrees in the image plane: 0 right, 90 up (behind), 270 down (front)
    distance: float = 0.25  # cast-shadow length (tip of the subject's top) / subject height
    softness: float = 0.06  # blur σ at the far end / subject height
    opacity: float = 0.45  # cast shadow darkness at the base, 0..1
    contact: float = 0.6  # contact shadow darkness, 0..1 (0: none)
    contact_softness: float = 0.012  # contact blur σ / subject height
    fade: float = 0.85  # how much the cast shadow fades from base (0) to tip (1): 0 none, 1 to zero
    color: tuple[float, float, float] = (0.0, 0.0, 0.0)  # sRGB in [0, 1]
    distance_px: float | None = None  # absolute length in source pixels (overrides distance)
    softness_px: float | None = None  # absolute blur σ in source pixels (overrides softness)

    def validate(self) -> ShadowSpec:
        for name in ("opacity", "contact", "fade"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise InputError(f"shadow {name}={v}: must be between 0 and 1")
        for name in ("distance", "softness", "contact_softness"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 10.0):
                raise InputError(f"shadow {name}={v}: must be between 0 and 10 (× subject height)")
        if not math.isfinite(self.direction):
            raise InputError(f"shadow direction={self.direction}: give degrees (0 right, 90 behind)")
        for name in ("distance_px", "softness_px"):
            if getattr(self, name) is not None:
                check_option("shadow_pixels", getattr(self, name), f"shadow {name.removesuffix('_px')} (px)")
        return self

    @property
    def visible(self) -> bool:
        return self.opacity > 0 or self.contact > 0


SHADOW_PRESETS = {
    # a soft floor shadow right under the subject (peeking out in front of it), for catalogue shots
    "soft": ShadowSpec(
        direction=270.0,
        distance=0.15,
        softness=0.07,
        opacity=0.3,
        contact=0.65,
        contact_softness=0.025,
        fade=0.85,
    ),
    # contact only: grounds the subject without a visible cast shadow
    "contact": ShadowSpec(opacity=0.0, contact=0.7, contact_softness=0.01),
    # a longer cast shadow falling back and to the right, as from a window light
    "drop": ShadowSpec(
        direction=50.0,
        distance=0.6,
        softness=0.05,
        opacity=0.45,
        contact=0.5,
        contact_softness=0.01,
        fade=0.9,
    ),
    # a reflection-like shadow towards the viewer, as on a shiny table under a top-back light
    "front": ShadowSpec(direction=270.0, distance=0.35, softness=0.05, opacity=0.35, contact=0.55, fade=0.9),
}

DIRECTION_NAMES = {
    "right": 0.0,
    "back-right": 45.0,
    "back": 90.0,
    "behind": 90.0,
    "up": 90.0,
    "back-left": 135.0,
    "left": 180.0,
    "front-left": 225.0,
    "front": 270.0,
    "down": 270.0,
    "front-right": 315.0,
}


def _length(key: str, value: str) -> tuple[float, bool]:
    """'0.3', '30%' (of the subject height) or '40px' → (value, is_pixels)."""
    v = value.strip().lower()
    try:
        if v.endswith("px"):
            return float(v[:-2]), True
        if v.endswith("%"):
            return float(v[:-1]) / 100.0, False
        return float(v), False
    except ValueError:
        raise InputError(
            f"shadow {key}={value!r}: give a fraction of the subject height (0.3), "
            "a percentage (30%) or pixels (40px)"
        ) from None


def parse_shadow(text: str) -> ShadowSpec | None:
    """``soft`` | ``contact`` | ``drop`` | ``front`` | ``none``, optionally followed by overrides:
    ``drop,direction=135,distance=40%,softness=20px,opacity=0.3,contact=0.6,color=#203040``."""
    from maskd.core.colour import parse_colour

    parts = [p.strip() for p in re.split(r"[,;]", str(text)) if p.strip()]
    if not parts:
        raise InputError("shadow: empty value; use soft, contact, drop, front or none")
    first = parts[0].lower()
    if first in ("none", "off", "no"):
        if len(parts) > 1:
            raise InputError(f"shadow {text!r}: 'none' takes no parameters")
        return None
    if "=" in first:
        spec, rest = SHADOW_PRESETS["soft"], parts
    elif first in SHADOW_PRESETS:
        spec, rest = SHADOW_PRESETS[first], parts[1:]
    else:
        raise InputError(
            f"shadow {text!r}: unknown style {parts[0]!r}; use "
            f"{', '.join(SHADOW_PRESETS)} or none, optionally with key=value overrides"
        )
    changes: dict = {}
    for part in rest:
        key, sep, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep:
            raise InputError(f"shadow {text!r}: {part!r} should be key=value (e.g. opacity=0.4)")
        if key in ("direction", "angle"):
            name = value.strip().lower()
            if name in DIRECTION_NAMES:
                changes["direction"] = DIRECTION_NAMES[name]
            else:
                try:
                    changes["direction"] = float(name.removesuffix("deg").removesuffix("°"))
                except ValueError:
                    raise InputError(
                        f"shadow direction={value!r}: give degrees (0 right, 90 behind, "
                        f"270 front) or one of {', '.join(DIRECTION_NAMES)}"
                    ) from None
        elif key in ("distance", "length", "softness", "blur", "contact_softness"):
            name = {"length": "distance", "blur": "softness"}.get(key, key)
            v, px = _length(key, value)
            if px and name == "contact_softness":
                raise InputError("shadow contact_softness: give a fraction of the subject height (0.01)")
            if px:
                changes[name + "_px"] = v
            else:
                changes[name] = v
                changes[name + "_px"] = None if name != "contact_softness" else None
        elif key in ("opacity", "contact", "fade"):
            try:
                v = float(value[:-1]) / 100 if value.strip().endswith("%") else float(value)
            except ValueError:
                raise InputError(f"shadow {key}={value!r}: give a number between 0 and 1") from None
            changes[key] = v
        elif key in ("color", "colour"):
            r, g, b, _a = parse_colour(value)
            changes["color"] = (r, g, b)
        else:
            raise InputError(
                f"shadow: unknown parameter {key!r}; use direction, distance, softness, "
                "opacity, contact, contact_softness, fade, color"
            )
    changes.pop("contact_softness_px", None)
    return replace(spec, **changes).validate()


@dataclass
class ShadowField:
    """A shadow's alpha (float32, 0..1, darkness included) on a grid laid over the source image.

    Source pixel-edge coordinate ``x`` ↔ grid column ``(x - x0) / step_x``; the grid may extend
    beyond the image (a shadow can fall outside the photo)."""

    alpha: np.ndarray
    x0: float
    y0: float
    step_x: float
    step_y: float

    def source_box(self, threshold: float = 0.02) -> Bounds | None:
        """Where the shadow is visible (> ``threshold``), in source pixels."""
        from maskd.core.canvas import subject_bounds

        b = subject_bounds(self.alpha, threshold)
        if b is None:
            return None
        return Bounds.from_corners(
            math.floor(self.x0 + b.x * self.step_x),
            math.floor(self.y0 + b.y * self.step_y),
            math.ceil(self.x0 + b.right * self.step_x),
            math.ceil(self.y0 + b.bottom * self.step_y),
        )

    def render(self, placement, region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, tuple]:
        """The shadow on a canvas: (alpha for ``region`` (x, y, w, h; default: where the shadow
        lands), region). Bilinear from the grid; the grid's blur makes that smooth."""
        import cv2

        p = placement
        if region is None:
            region = Bounds(0, 0, 0, 0)
            src = self.source_box(VISIBLE)
            if src is not None:
                x, y, w, h = src
                region = p.to_canvas(
                    (x - 2 * self.step_x, y - 2 * self.step_y, w + 4 * self.step_x, h + 4 * self.step_y)
                )
        rx, ry, rw, rh = region
        if rw <= 0 or rh <= 0:
            return np.zeros((max(0, rh), max(0, rw)), np.float32), region
        # grid centre i  → source x = x0 + (i + 0.5)·step → canvas edge coord · → pixel centre − 0.5
        sx, sy = p.fx * self.step_x, p.fy * self.step_y
        ox = p.fx * (self.x0 + 0.5 * self.step_x) + p.tx - 0.5 - rx
        oy = p.fy * (self.y0 + 0.5 * self.step_y) + p.ty - 0.5 - ry
        m = np.array([[sx, 0.0, ox], [0.0, sy, oy]], np.float64)
        out = cv2.warpAffine(
            self.alpha, m, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
        )
        return out, region

    def full(self, height: int, width: int) -> np.ndarray:
        """The shadow at the source image's own size (for a separate editor layer)."""
        from maskd.core.canvas import Placement

        identity = Placement(width, height, 1.0, 1.0, 0.0, 0.0, (0, 0, width, height), (0, 0, width, height))
        out, _ = self.render(identity, (0, 0, width, height))
        return out


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with zero borders; wide blurs run on a shrunk copy (same result to the eye,
    a fraction of the cost)."""
    import cv2

    if sigma < 0.3:
        return x
    k = int(sigma // 3)
    if k < 2 or min(x.shape[:2]) < 4 * k:
        return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    h, w = x.shape[:2]
    sw, sh = -(-w // k), -(-h // k)
    padded = np.zeros((sh * k, sw * k) + x.shape[2:], np.float32)
    padded[:h, :w] = x
    small = cv2.resize(padded, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(
        small, (0, 0), math.sqrt(max(sigma * sigma - 0.25 * k * k, 1.0)) / k, borderType=cv2.BORDER_CONSTANT
    )
    # cell centres: small pixel j covers [j·k, (j+1)·k) → centre j·k + k/2 − 0.5 in x's pixel units
    m = np.array([[k, 0, k / 2 - 0.5], [0, k, k / 2 - 0.5]], np.float64)
    return cv2.warpAffine(small, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def generate(
    alpha: np.ndarray, spec: ShadowSpec, bounds: tuple[int, int, int, int] | None = None
) -> ShadowField | None:
    """The shadow of the subject in ``alpha`` (H×W float in [0, 1]); None when there is no subject.

    Each separate object (connected part of the silhouette) stands on its own floor line — the
    bottom of that object — so a group of items placed at different depths is grounded item by item.
    """
    import cv2
    from maskd.core.canvas import subject_bounds

    spec = spec.validate()
    bounds = bounds or subject_bounds(alpha)
    if bounds is None or not spec.visible:
        return None
    bx, by, bw, bh = bounds
    step = max(max(bw, bh) / WORK_SIDE, 0.25)
    nw, nh = max(2, round(bw / step)), max(2, round(bh / step))
    step_x, step_y = bw / nw, bh / nh
    sub = np.ascontiguousarray(alpha[by : by + bh, bx : bx + bw], dtype=np.float32)
    interp = cv2.INTER_AREA if step >= 1 else cv2.INTER_LINEAR
    small = np.clip(cv2.resize(sub, (nw, nh), interpolation=interp), 0.0, 1.0)

    parts = []
    for cx, cy, _cw, ch, sil in _objects(small):
        height_src = ch * step_y  # this object's height in source pixels
        dist = spec.distance_px / height_src if spec.distance_px is not None else spec.distance
        sig_far = spec.softness_px / step_y if spec.softness_px is not None else spec.softness * ch
        # a length in pixels is honoured up to the relative bound (10 × the object's height): on a
        # small object a huge pixel length would size the working grid by it, not by the subject
        top = OPTION_BOUNDS["shadow_fraction"].high
        dist, sig_far = min(dist, top), min(sig_far, top * ch)
        # at least ~1.5 source pixels of blur, so small subjects still get a visible contact line
        floor_sigma = max(0.6, MIN_BLUR_PX / step_y)
        fld, ox, oy = _object_shadow(
            sil, spec, dist, max(floor_sigma, sig_far), max(floor_sigma, spec.contact_softness * ch)
        )
        parts.append((fld, cx + ox, cy + oy))
    if not parts:
        return None
    gx0 = min(x for _, x, _ in parts)
    gy0 = min(y for _, _, y in parts)
    gx1 = max(x + f.shape[1] for f, x, _ in parts)
    gy1 = max(y + f.shape[0] for f, _, y in parts)
    total = np.zeros((gy1 - gy0, gx1 - gx0), np.float32)
    for fld, x, y in parts:
        view = total[y - gy0 : y - gy0 + fld.shape[0], x - gx0 : x - gx0 + fld.shape[1]]
        view[...] = 1.0 - (1.0 - view) * (1.0 - fld)  # overlapping shadows do not add up past 1
    return ShadowField(
        np.clip(total, 0.0, 1.0), x0=bx + gx0 * step_x, y0=by + gy0 * step_y, step_x=step_x, step_y=step_y
    )


MAX_OBJECTS = 24
MIN_OBJECT = 0.01  # objects smaller than this × the largest one's area are specks: no own shadow


def _objects(small: np.ndarray):
    """[(x, y, w, h, silhouette)] per separate object on the working grid, largest first; the
    soft edge around each object's solid core goes with it."""
    import cv2

    solid = (small > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count <= 1:
        ys, xs = np.nonzero(small > 0.02)
        if ys.size == 0:
            return []
        return [(0, 0, small.shape[1], small.shape[0], small)]
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas)[:MAX_OBJECTS]
    keep = [i + 1 for i in order if areas[i] >= MIN_OBJECT * areas.max()]
    if len(keep) == 1:
        return [(0, 0, small.shape[1], small.shape[0], small)]
    # soft edge → nearest object: grow each object's label a few cells into the soft edge
    grown = cv2.dilate(labels.astype(np.float32), np.ones((5, 5), np.uint8))  # labels are ≥ 0
    out = []
    h, w = small.shape
    for k in keep:
        x, y, cw, ch = (int(v) for v in stats[k, :4])
        x0, y0 = max(0, x - 2), max(0, y - 2)
        x1, y1 = min(w, x + cw + 2), min(h, y + ch + 2)
        lab = labels[y0:y1, x0:x1]
        mine = (lab == k) | ((lab == 0) & (grown[y0:y1, x0:x1] == k))
        sil = np.where(mine, small[y0:y1, x0:x1], 0.0).astype(np.float32)
        # keep the object's floor at its solid bottom (not the grown rim)
        bottom = y + ch - y0
        out.append((x0, y0, x1 - x0, bottom, np.ascontiguousarray(sil[:bottom])))
    return out


def _object_shadow(sil, spec: ShadowSpec, dist, sig_far, sig_contact):
    """One object's shadow on its own small grid: (field, x offset, y offset) of the grid's
    origin relative to the silhouette's top-left, in working cells. Floor = the silhouette's bottom."""
    nh, nw = sil.shape
    theta = math.radians(spec.direction)
    ux, uy = math.cos(theta), -math.sin(theta)  # image-plane direction (y down)
    sig_near = max(0.6, min(sig_far, 0.25 * sig_far + sig_contact))
    reach = dist * nh
    pad_blur = math.ceil(3.0 * max(sig_far, sig_contact) + 2)
    pad_l = pad_blur + math.ceil(max(0.0, -ux) * reach)
    pad_r = pad_blur + math.ceil(max(0.0, ux) * reach)
    pad_t = pad_blur + math.ceil(max(0.0, -uy) * reach)
    pad_b = pad_blur + math.ceil(max(0.0, uy) * reach)
    gw, gh = nw + pad_l + pad_r, nh + pad_t + pad_b
    floor_y = pad_t + nh
    cast = np.zeros((gh, gw), np.float32)
    if spec.opacity > 0 and dist > 0:
        cast = spec.opacity * _cast(sil, dist, ux, uy, spec.fade, sig_near, sig_far, (gh, gw), pad_l, pad_t)
    elif spec.opacity > 0:
        # no length: the shadow collapses to the footprint line, blurred (a floor glow)
        cast = spec.opacity * _footprint(sil, (gh, gw), pad_l, floor_y, sig_far)
    if spec.contact > 0:
        contact = spec.contact * _contact(sil, (gh, gw), pad_l, floor_y, sig_contact)
        cast = 1.0 - (1.0 - cast) * (1.0 - contact)
    return cast.astype(np.float32), -pad_l, -pad_t


def _cast(small, dist, ux, uy, fade, sig_near, sig_far, grid_hw, pad_l, pad_t) -> np.ndarray:
    """The projected silhouette: fade with height, squash/shear onto the floor, variable blur."""
    import cv2

    nh, nw = small.shape
    gh, gw = grid_hw
    heights = (nh - (np.arange(nh, dtype=np.float32) + 0.5)) / nh  # 0 at the floor, 1 at the top
    weight = np.clip(1.0 - fade * heights, 0.0, 1.0)
    layers = np.stack([small * weight[:, None], small * heights[:, None], small], axis=-1)
    # vertical: height h above the floor lands at distance dist·h·|uy| from it, above (uy < 0)
    # or below (uy > 0, towards the viewer: the silhouette flips)
    k = max(abs(uy), MIN_VERTICAL) * dist
    rows = max(1, round(nh * k))
    squashed = cv2.resize(layers, (nw, rows), interpolation=cv2.INTER_AREA if rows < nh else cv2.INTER_LINEAR)
    if squashed.ndim == 2:
        squashed = squashed[..., None]
    floor_y = pad_t + nh
    shear = ux * dist / k
    if uy <= 0:  # upwards (behind): the squashed rows end at the floor; squashed row j lies
        # rows − j − 0.5 rows above the floor and moves sideways by shear × that
        top = floor_y - rows
        src = squashed
        m = np.array([[1.0, -shear, pad_l + shear * (rows - 0.5)], [0.0, 1.0, top]], np.float64)
    else:  # downwards (front): flipped, starting at the floor
        src = squashed[::-1].copy()
        m = np.array([[1.0, shear, pad_l + shear * 0.5], [0.0, 1.0, floor_y]], np.float64)
    grid = cv2.warpAffine(
        np.ascontiguousarray(src),
        m,
        (gw, gh),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0.0, 0.0, 0.0, 0.0),
    )
    shade, height_sum, cover = grid[..., 0], grid[..., 1], grid[..., 2]
    near = _blur(shade, sig_near)
    far = _blur(shade, sig_far)
    # contact hardening: mix sharp → soft by the (blurred) height the shadow came from
    t = _blur(height_sum, sig_far) / np.maximum(_blur(cover, sig_far), 1e-4)
    t = np.clip(t, 0.0, 1.0)
    return np.clip(near + (far - near) * t, 0.0, 1.0)


def _base_rows(small: np.ndarray):
    """Per column: the lowest row holding subject (alpha > 0.5), −1 where the column is empty."""
    solid = small > 0.5
    nh = small.shape[0]
    has = solid.any(axis=0)
    lowest = nh - 1 - np.argmax(solid[::-1], axis=0)
    return np.where(has, lowest, -1), has


def _contact(small, grid_hw, pad_l, floor_y, sigma) -> np.ndarray:
    """A tight band under the bottom edge of the columns that reach the floor."""
    gh, gw = grid_hw
    nh, nw = small.shape
    lowest, has = _base_rows(small)
    if not has.any():
        return np.zeros(grid_hw, np.float32)
    base_edge = (floor_y - nh) + lowest + 1.0  # grid y of each column's bottom edge
    lift = floor_y - base_edge  # 0 where the column touches the floor
    strength = np.where(has, np.exp(-np.square(lift / max(1.0, FLOOR_BAND * nh))), 0.0)
    out = np.zeros(grid_hw, np.float32)
    y0 = max(0, int(floor_y - FLOOR_BAND * nh * 3 - 3 * sigma))
    y1 = min(gh, int(math.ceil(floor_y + 4 * sigma)) + 1)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    # a half-Gaussian below the edge (hidden above it by the subject anyway, but visible through
    # glass: keep a short ramp above too)
    d = ys - base_edge[None, :]
    below = np.exp(-0.5 * np.square(np.maximum(d, 0.0) / sigma))
    band = below * np.exp(-np.square(np.minimum(d, 0.0) / sigma))
    out[y0:y1, pad_l : pad_l + nw] = (band * strength[None, :]).astype(np.float32)
    return np.clip(_blur(out, sigma * 0.7), 0.0, 1.0)


def _footprint(small, grid_hw, pad_l, floor_y, sigma) -> np.ndarray:
    """The subject's width at the floor, as a line along the floor, blurred (distance 0)."""
    gh, gw = grid_hw
    nh, nw = small.shape
    lowest, has = _base_rows(small)
    line = np.zeros(grid_hw, np.float32)
    row = min(gh - 1, int(floor_y))
    line[row, pad_l : pad_l + nw] = has.astype(np.float32)
    blurred = _blur(line, sigma)
    peak = float(blurred.max())
    return np.clip(blurred / peak, 0.0, 1.0) if peak > 0 else blurred
