"""``maskd remove`` finishing: background, generated shadow, crop and canvas, presets, sidecars.

The finishing step of the batch pipeline (``server.batch``) for ``maskd remove`` and ``maskd finish``:
``finish_item`` turns the alpha + colours into the finished picture (``core.compose.finish``) and
writes a JSON sidecar with the subject's bounding box. The options themselves are declared once,
in ``server.options.add_finishing``; the presets live here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from maskd.core.errors import MaskdError

# Presets fill in whatever the command line leaves unset (explicit options always win).
PRESETS = {
    "marketplace": {
        "about": "white background, subject centred on a 2000×2000 square with 5% margins, soft "
        "shadow, sidecar (what Amazon/eBay/Etsy-style listings ask for)",
        "background": "white",
        "shadow": "soft",
        "crop": "subject",
        "margin": "5%",
        "canvas": "2000x2000",
        "align": "center",
        "sidecar": True,
    },
    "square": {
        "about": "transparent square cut-out, subject centred with 5% margins, native resolution",
        "crop": "subject",
        "margin": "5%",
        "canvas": "1:1",
        "align": "center",
    },
    "studio": {
        "about": "light grey backdrop, subject standing on the lower part of a 4:5 canvas, drop shadow",
        "background": "#eeeeee",
        "shadow": "drop",
        "crop": "subject",
        "margin": "8%",
        "canvas": "1600x2000",
        "align": "50%,75%",
        "sidecar": True,
    },
}

_FIELDS = ("background", "shadow", "crop", "margin", "canvas", "scale", "align")


def settings(args) -> dict:
    """The finishing values after the preset (text, as typed), plus ``active`` and ``sidecar``."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    values = {}
    for name in _FIELDS:
        value = getattr(args, name, None)
        values[name] = value if value is not None else preset.get(name)
    values["alpha"] = getattr(args, "finish_alpha", None)
    sidecar = getattr(args, "sidecar", None)
    values["sidecar"] = bool(preset.get("sidecar", False) if sidecar is None else sidecar)
    values["active"] = any(values[n] is not None for n in _FIELDS) or values["alpha"] is not None
    return values


def options(args):
    """``core.compose.FinishOptions`` for the command line (parsed once per run), or None."""
    cached = getattr(args, "_finish_options", False)
    if cached is not False:
        return cached
    from maskd.core import canvas, compose, shadow

    v = settings(args)
    opts = None
    if v["active"]:
        placing = any(v[n] is not None for n in ("margin", "canvas", "scale", "align"))
        opts = compose.FinishOptions(
            background=compose.parse_background(v["background"]) if v["background"] else None,
            shadow=shadow.parse_shadow(v["shadow"]) if v["shadow"] else None,
            crop=v["crop"] or ("subject" if placing else "none"),
            margin=canvas.parse_margin(v["margin"]) if v["margin"] else canvas.Margin(),
            canvas=canvas.parse_canvas(v["canvas"]) if v["canvas"] else None,
            scale=canvas.parse_scale(v["scale"]) if v["scale"] else 1.0,
            align=canvas.parse_align(v["align"]) if v["align"] else (0.5, 0.5),
            alpha=v["alpha"],
        ).validate()
        mode = getattr(args, "mode", "cutout")
        if mode == "mask" and (opts.background is not None or opts.shadow is not None):
            raise MaskdError(
                "--mode mask writes the alpha alone: --background and --shadow do not "
                "apply (drop them, or use --mode cutout)"
            )
    args._finish_options = opts
    return opts


def background_file(args) -> Path | None:
    """The picture ``--background`` (or the preset) names, if any: an input the batch must not replace."""
    text = settings(args)["background"]
    if not text:
        return None
    from maskd.core import compose

    spec = compose.parse_background(text)
    return Path(spec.image) if spec is not None and spec.kind == "image" else None


def side_files(args, dst: Path) -> list[Path]:
    """The files written beside ``dst`` (sidecar, ``--save-layers``), for the batch's clash check."""
    out = [sidecar_path(dst)] if settings(args)["sidecar"] else []
    if getattr(args, "save_layers", False):
        out += list(layer_paths(dst).values())
    return out


def opaque_output(args) -> bool:
    """Whether the finished pictures need no alpha channel (so JPEG can hold them): an opaque
    background or ``--no-alpha``. Image backgrounds count as opaque; a transparent one is then
    reported per file when it is written."""
    opts = options(args)
    if opts is None:
        return False
    if opts.alpha is False:
        return True
    return opts.background is not None and (opts.background.opaque or opts.background.kind == "image")


def finish_item(args, item) -> None:
    """remove's per-image step: compose the finished picture into ``item.output``; write the sidecar."""
    from maskd.core import compose, imageio
    from maskd.core.canvas import place

    opts = options(args)
    want_sidecar = settings(args)["sidecar"]
    if opts is None and not want_sidecar:
        return
    mode = getattr(args, "mode", "cutout")
    if opts is None:
        opts = compose.FinishOptions(alpha=None)
        if mode == "mask":
            opts = None
    colours = (
        item.foreground
        if (mode != "rgba" and item.foreground is not None)
        else imageio.colour_float(item.image)
    )
    if opts is None:  # sidecar only, mask mode: bounds of the untouched alpha
        from maskd.core.canvas import plan, subject_bounds

        bounds = subject_bounds(item.alpha)
        p = plan(item.alpha.shape, None)
        result = None
        record = _record(item, p, bounds, bounds, None, None)
    elif mode == "mask":
        from maskd.core.canvas import plan, subject_bounds

        bounds = subject_bounds(item.alpha)
        region = None if opts.crop == "none" else bounds
        p = plan(
            item.alpha.shape,
            region,
            margin=opts.margin,
            canvas=opts.canvas,
            scale=opts.scale,
            align=opts.align,
        )
        item.output = place(np.asarray(item.alpha, np.float32), p)[..., None]
        result = None
        record = _record(item, p, p.to_canvas(bounds) if bounds else None, bounds, None, opts)
    else:
        layers = bool(getattr(args, "save_layers", False))
        result = compose.finish(item.image, item.alpha, colours, opts, layers=layers)
        item.output = result.image
        if layers:
            _write_layers(item, result)
        record = _record(
            item, result.placement, result.subject_box, result.source_box, result.shadow_box, opts
        )
    if record["subject"] is None:
        item.notes.append("no subject found (the matte is empty): framed the whole photo")
    if want_sidecar:
        _write_json(sidecar_path(item.dst), record)


def layer_paths(dst: Path) -> dict:
    dst = Path(dst)
    return {name: dst.with_name(f"{dst.stem}.{name}.png") for name in ("subject", "shadow", "background")}


def _write_layers(item, result) -> None:
    """The finished picture's layers as separate PNGs (same size, in register; 16-bit for 16-bit input)."""
    from maskd.core import imageio

    def write(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.write_image(path, imageio.to_uint16(arr) if item.bit_depth == 16 else imageio.to_uint8(arr))

    paths = layer_paths(item.dst)
    write(paths["subject"], result.subject)
    if result.shadow is not None:
        rgba = np.empty(result.shadow.shape + (4,), np.float32)
        rgba[..., :3] = result.shadow_colour
        rgba[..., 3] = result.shadow
        write(paths["shadow"], rgba)
    if result.background is not None and result.background[..., 3].max() > 0:
        bg = result.background
        write(paths["background"], bg[..., :3] if bg[..., 3].min() >= 1.0 else bg)


def sidecar_path(dst: Path) -> Path:
    return Path(dst).with_suffix(".json")


def _box(b):
    if b is None:
        return None
    x, y, w, h = (int(v) for v in b)
    return {"x": x, "y": y, "width": w, "height": h}


def _record(item, placement, subject_box, source_box, shadow_box, opts) -> dict:
    from maskd.core import compose
    from maskd.server import __version__

    h, w = item.alpha.shape
    return {
        "source": str(item.src),
        "output": str(item.dst),
        "source_size": {"width": int(w), "height": int(h)},
        "output_size": {"width": placement.width, "height": placement.height},
        "subject": _box(subject_box),  # on the output, in output pixels
        "subject_in_source": _box(source_box),
        "shadow": _box(shadow_box),
        "scale": round(float(placement.fx), 6),
        "options": compose.describe_options(opts) if opts is not None else None,
        "maskd_version": __version__,
    }


def _write_json(path: Path, record: dict) -> None:
    from maskd.core.atomicfile import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise MaskdError(f"cannot write the sidecar {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# For the daemon (plugins' "Add shadow layer"): see docs/finishing.md, "Editors"


def shadow_reply(alpha, spec_text: str) -> tuple[dict, np.ndarray]:
    """The shadow of a segment/refine result, for a request carrying ``"shadow": "<--shadow syntax>"``.

    Returns (the result's ``shadow`` field, the shadow's alpha as float32 H×W at the image's size,
    darkness included). Raises ``InputError`` (→ ``bad_request``) for a bad spec. The daemon appends
    the alpha, encoded like the result's alpha, as the last buffer and puts its index in ``buffer``.
    """
    from maskd.core import compose
    from maskd.core.imageio import to_float
    from maskd.core.shadow import parse_shadow

    spec = parse_shadow(str(spec_text)) if spec_text else None
    a = to_float(np.asarray(alpha))
    if a.ndim == 3:
        a = a[..., 0]
    layer = compose.shadow_layer(a, spec) if spec is not None else np.zeros(a.shape, np.float32)
    colour = spec.color if spec is not None else (0.0, 0.0, 0.0)
    field = {
        "color": "#" + "".join(f"{round(c * 255):02x}" for c in colour),
        "style": str(spec_text),
        "buffer": None,
    }
    return field, layer
