"""Every option the batch commands share, defined once: choice sets as enums, and argparse groups.

``remove``, ``refine``, ``finish``, ``gimp-batch``/``krita-batch`` and the Python API
(``maskd.remove``) take the same options; each group below is added by every command that has
it, and the values go to the daemon or the pipeline through one function each
(``matte_options``, ``serve_args``), so a new option or a new bound is written in one place.
Only the standard library and ``core`` parsers (imported when a group is added) are used here:
``maskd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import enum
import os

from maskd.core.limits import option_type


class Quality(str, enum.Enum):
    """How much edge work the refinement does (``core.pipeline.QUALITIES``, held equal by a test)."""

    FAST = "fast"
    DEFAULT = "default"
    QUALITY = "quality"


class Mode(str, enum.Enum):
    """What ``maskd remove`` writes (``maskd.remove(output=...)`` takes the same names, plus
    ``finished`` there for a finished picture)."""

    CUTOUT = "cutout"  # decontaminated colours + alpha
    RGBA = "rgba"  # the original colours + alpha
    MASK = "mask"  # the alpha alone

    @property
    def needs_colours(self) -> bool:
        """Whether the daemon must estimate foreground colours for this output (only ``cutout``)."""
        return self is Mode.CUTOUT


class ShadowStyle(str, enum.Enum):
    """The named shadows (``core.shadow.SHADOW_PRESETS`` plus ``none``, held equal by a test)."""

    SOFT = "soft"
    CONTACT = "contact"
    DROP = "drop"
    FRONT = "front"
    NONE = "none"


# --format NAME -> the written suffix
OUTPUT_FORMATS = {"png": ".png", "webp": ".webp", "tif": ".tif", "jpg": ".jpg"}
OPAQUE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".bmp")  # cannot hold an alpha channel


def values(choices: type[enum.Enum]) -> list[str]:
    return [c.value for c in choices]


# ---------------------------------------------------------------------------------- parsers


def unit(text: str) -> float:
    """A level in (0, 1), or 1..254 on the 8-bit scale editors show."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if 1.0 <= value < 255.0:
        value /= 255.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a level between 0 and 1 (or 1..254 on the 8-bit scale)"
        )
    return value


def roi(text: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace(" ", "").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not X,Y,WIDTH,HEIGHT with a positive size (e.g. 10,20,300,400)"
        )
    return parts


def _typed(parse):
    """An argparse type that shows a core parser's ``InputError`` as the usage error and keeps the
    text (presets merge on text; ``finishing.options`` parses once per run)."""
    from maskd.core.errors import InputError

    def convert(text):
        try:
            parse(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


# ---------------------------------------------------------------------------------- groups


def add_batch_io(p: argparse.ArgumentParser, *, what: str, output_required: bool = True) -> None:
    """INPUT... -o OUTPUT --overwrite -q: the files of a batch (remove, finish)."""
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=f"{what}, folders (searched recursively) or glob patterns such as 'shots/**/*.jpg' "
        "(sub-folders are kept under OUTPUT)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=output_required,
        metavar="OUTPUT",
        help="output folder (created), or a file name when there is one input file"
        + ("" if output_required else " (not with --in-place)"),
    )
    add_overwrite_quiet(p)


def add_overwrite_quiet(p) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_format(p, *, note: str) -> None:
    p.add_argument(
        "--format",
        choices=sorted(OUTPUT_FORMATS),
        default="png",
        help=f"output file type (default png; {note})",
    )


def add_mode(p) -> None:
    p.add_argument(
        "--mode",
        choices=values(Mode),
        default=Mode.CUTOUT.value,
        help="cutout: decontaminated colours + alpha (default); rgba: original colours + "
        "alpha; mask: the alpha alone",
    )


def add_quality(p, *, help: str | None = None) -> None:
    p.add_argument(
        "--quality",
        choices=values(Quality),
        default=Quality.DEFAULT.value,
        help=help
        or "fast: narrowest band, no back-projection (~2.5× faster); quality: wider band, more sharpening",
    )
    p.add_argument("--no-refine", action="store_true", help="plain upsampled model matte (fastest)")


def add_matte(p) -> None:
    """The matte options (remove, refine, the API): quality and the mask edits."""
    g = p.add_argument_group("matte")
    add_quality(g)
    g.add_argument(
        "--threshold",
        type=unit,
        metavar="LEVEL",
        help="make the mask hard at this level (0..1, or 1..254), with an anti-aliased edge",
    )
    grow, feather = option_type("grow", "--grow"), option_type("feather", "--feather")  # core's bounds
    g.add_argument(
        "--grow", type=grow, default=0, metavar="PX", help="grow (or shrink, if negative) by PX pixels"
    )
    g.add_argument("--feather", type=feather, default=0.0, metavar="PX", help="soften the edge by PX pixels")
    g.add_argument("--fill-holes", action="store_true", help="make enclosed transparent holes opaque")
    g.add_argument("--invert", action="store_true", help="keep the background instead of the subject")


def matte_options(args, *, colours: bool) -> dict:
    """The daemon's ``options`` (= ``core.pipeline.CutoutOptions`` fields) from the matte group.
    ``colours``: whether the output needs decontaminated foreground colours."""
    return {
        "quality": str(getattr(args, "quality", "default")),
        "refine": not getattr(args, "no_refine", False),
        "threshold": getattr(args, "threshold", None),
        "grow": getattr(args, "grow", 0),
        "feather": getattr(args, "feather", 0.0),
        "fill_holes": getattr(args, "fill_holes", False),
        "invert": getattr(args, "invert", False),
        "decontaminate": bool(colours),
    }


DAEMON_FIELDS = ("model", "weights", "variant", "device", "resolution")


def add_daemon(p, *, serve_options: bool = True) -> None:
    """Which daemon to use, and how to start one when none runs."""
    d = p.add_argument_group("daemon (used only when none is running)")
    d.add_argument("--connection-file", metavar="PATH", help="the daemon to use (default: the per-user one)")
    if serve_options:
        d.add_argument("--model", metavar="PRESET")
        d.add_argument("--weights", metavar="PATH")
        d.add_argument("--variant", metavar="PRESET")
        d.add_argument("--device", metavar="DEVICE")
        d.add_argument("--resolution", type=int, metavar="N")


def serve_args(args) -> list[str]:
    """``maskd serve`` arguments for a daemon started for this batch."""
    out = []
    for name in DAEMON_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            out += ["--" + name, os.path.abspath(value) if name == "weights" else str(value)]
    return out


LAYERS_HELP = (
    "which layers get a mask: 'all', 'visible', or layer names ('group/name' also works). "
    "Default: the bottom-most visible paint layer that is not one flat colour"
)


def add_layers(p, *, in_place: bool = True) -> None:
    """Layered files (remove, gimp-batch, krita-batch): which layers, and --in-place."""
    g = p.add_argument_group("layered files (XCF, OpenRaster, KRA)")
    g.add_argument("--layers", nargs="+", metavar="NAME", default=None, help=LAYERS_HELP)
    if in_place:
        g.add_argument(
            "--in-place",
            action="store_true",
            help="replace each layered input with its masked version (atomically); no -o",
        )


def add_finishing(p) -> None:
    """Background, shadow, crop, canvas, presets, sidecars (remove, finish; see docs/finishing.md)."""
    from maskd.core import canvas, compose, shadow
    from maskd.server.finishing import PRESETS

    g = p.add_argument_group("finishing (background, shadow, crop and canvas; see docs/finishing.md)")
    g.add_argument(
        "--background",
        type=_typed(compose.parse_background),
        metavar="COLOUR|IMAGE|blur",
        help="put a background behind the subject: a colour (white, #rrggbb, #rrggbbaa, "
        "r,g,b), an image (studio.jpg, studio.jpg:contain — cover/contain/stretch) or "
        "blur (the original photo, blurred; blur:4%% for more)",
    )
    g.add_argument(
        "--shadow",
        type=_typed(shadow.parse_shadow),
        metavar="STYLE[,KEY=VALUE…]",
        help="generated shadow: " + ", ".join(values(ShadowStyle)) + ", with overrides such as "
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


def add_ray(p) -> None:
    """``--ray [ADDRESS]`` and ``--ray-workers``: run the batch on a Ray cluster (``server.ray_batch``)."""
    from maskd.server.ray_batch import LOCAL, address

    g = p.add_argument_group("Ray cluster (pip install 'maskd[ray]'; see docs/scale.md)")
    g.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        type=address,
        metavar="ADDRESS",
        help="run the batch as a Ray Data pipeline: auto joins the running cluster, HOST:PORT or "
        "ray://HOST:PORT a given one; without ADDRESS a local Ray instance is started. Write it "
        "after the inputs (or --ray=ADDRESS). The --model/--weights/--device options choose the model",
    )
    g.add_argument(
        "--ray-workers",
        type=positive_int,
        metavar="N",
        help="model workers (default: one per GPU of the cluster, or one per node without GPUs)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more")
    return value
