"""``maskd remove`` finishing: background, generated shadow, crop and canvas, presets, sidecars.

Hooked into ``server/commands/remove.py`` through its extension points (``register(hooks)``):
an option group and a per-image finisher that turns the daemon's alpha + decontaminated colours
into the finished picture (``core.compose.finish``) and writes a JSON sidecar with the subject's
bounding box. It replaces remove's plain ``--background`` with a richer one (same syntax plus
``blur``, ``#rrggbbaa``, ``picture.jpg:contain``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from maskd.core.errors import InputError, MaskdError

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


def _typed(parse):
    """An argparse type that shows our InputError message as the usage error."""

    def convert(text):
        try:
            parse(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text  # keep the text: presets merge on text, parsing happens once in options()

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskd.core import canvas, compose, shadow

    # replace remove's plain --background (a superset of its syntax; see module docstring)
    handler = p.conflict_handler
    p.conflict_handler = "resolve"
    try:
        g = p.add_argument_group("finishing (background, shadow, crop and canvas; see docs/finishing.md)")
        g.add_argument(
            "--background",
            dest="finish_background",
            type=_typed(compose.parse_background),
            metavar="COLOUR|IMAGE|blur",
            help="put a background behind the subject: a colour (white, #rrggbb, #rrggbbaa, "
            "r,g,b), an image (studio.jpg, studio.jpg:contain — cover/contain/stretch) or "
            "blur (the original photo, blurred; blur:4%% for more)",
        )
    finally:
        p.conflict_handler = handler
    p.set_defaults(background=None)  # remove's own compositing stays off: the finisher does it
    g.add_argument(
        "--shadow",
        type=_typed(shadow.parse_shadow),
        metavar="STYLE[,KEY=VALUE…]",
        help="generated shadow: soft, contact, drop, front or none, with overrides such as "
        "drop,direction=135,distance=40%%,softness=5%%,opacity=0.4,contact=0.6,color=#203040",
    )
    g.add_argument(
        "--crop",
        choices=list(compose.CROPS),
        help="frame the output on the subject (subject), on subject and shadow "
        "(subject+shadow), or keep the whole photo (none). Default: subject when "
        "--margin/--canvas/--scale/--align is given, else none",
    )
    g.add_argument(
        "--margin",
        type=_typed(canvas.parse_margin),
        metavar="M",
        help="space around the subject: 5%% (of the output's width/height), 40px, or 2/4 "
        "values like CSS (5%%,10%% or 10,20,30,40)",
    )
    g.add_argument(
        "--canvas",
        type=_typed(canvas.parse_canvas),
        metavar="WxH|W:H",
        help="output size (2000x2000: the subject is fitted inside the margins) or aspect "
        "(1:1, 4:5: native resolution, canvas grown to the aspect)",
    )
    g.add_argument(
        "--scale",
        type=_typed(canvas.parse_scale),
        metavar="PCT",
        help="how much of the space inside the margins the subject fills (default 100%%)",
    )
    g.add_argument(
        "--align",
        type=_typed(canvas.parse_align),
        metavar="POS",
        help="where the subject sits: center (default), top, bottom, left, right, "
        "top-left, …, or X%%,Y%% (50%%,100%% = bottom centre)",
    )
    g.add_argument(
        "--alpha",
        dest="finish_alpha",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep an alpha channel (default: only when the result has transparency); "
        "--no-alpha flattens onto white",
    )
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="; ".join(f"{name}: {v['about']}" for name, v in PRESETS.items()).replace("%", "%%")
        + " (explicit options override the preset)",
    )
    g.add_argument(
        "--save-layers",
        action="store_true",
        help="also write the layers separately as PNGs for editing: NAME.subject.png, "
        "NAME.shadow.png (shadow colour + its alpha), NAME.background.png",
    )
    g.add_argument(
        "--sidecar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write NAME.json next to each output with the subject's bounding box "
        "(on by default with a preset)",
    )


def register(hooks) -> None:
    hooks.option_group(add_arguments)
    hooks.finisher(finish_item)


# ---------------------------------------------------------------------------------------------


def settings(args) -> dict:
    """The finishing values after the preset (text, as typed), plus ``active`` and ``sidecar``."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    values = {}
    for name in _FIELDS:
        attr = "finish_background" if name == "background" else name
        value = getattr(args, attr, None)
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
