"""``maskd remove INPUT... -o OUTPUT``: remove the background of files, folders and globs.

Each input file is sent to the daemon (the running one, or one started for this batch and stopped
afterwards) and written as:
- ``--mode cutout`` (default): RGBA PNG, straight alpha, decontaminated colours (no background fringe);
- ``--mode rgba``: RGBA PNG with the original colours untouched and the alpha;
- ``--mode mask``: the alpha alone, grayscale;
- ``--background COLOUR|IMAGE``: the cut-out composited over a colour or picture (no alpha).
16-bit inputs give 16-bit outputs. Existing outputs are skipped unless ``--overwrite``. One bad
file never stops the batch: failures are listed at the end and the exit code is 1.

Extending ``remove`` (finishing options, layered files) — add your module's name to
``EXTENSIONS`` below and give it a ``register(hooks)`` function:

    def register(hooks):
        hooks.option_group(add_my_arguments)                 # fn(parser): add an argument group
        hooks.finisher(finish)                               # fn(args, item: Item) -> None; may
                                                             #   replace item.output (H×W×C float32)
        hooks.handler([".xcf", ".ora"], handle, keep_suffix=True)
                                                             # fn(ctx: Context, src, dst) -> str|None
                                                             #   (a note for the summary); raise to fail

A handler owns the whole file (read, ``ctx.client.segment``, write); raster files use
``process_raster``. ``keep_suffix`` makes the output keep the input's suffix (layered files).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from maskd.core.errors import MaskdError

HELP = "Remove the background of images, folders and layered files"

# modules that extend `remove` (each has register(hooks)); missing ones are skipped
EXTENSIONS = ["maskd.server.finishing", "maskd.server.layered_batch"]

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp"}
OUTPUT_FORMATS = {"png": ".png", "webp": ".webp", "tif": ".tif", "jpg": ".jpg"}


@dataclass
class Item:
    """One file's result on its way to disk: what finishers see and may change."""

    src: Path
    dst: Path
    image: np.ndarray  # as read (H×W[×C], uint8/uint16/float32)
    alpha: np.ndarray  # float32 H×W in [0, 1]
    foreground: np.ndarray | None  # float32 H×W×3 decontaminated colours in [0, 1]
    output: np.ndarray | None = None  # float32 H×W×{1,3,4} in [0, 1]: what gets written
    bit_depth: int = 8
    notes: list = field(default_factory=list)


@dataclass
class Hooks:
    option_groups: list = field(default_factory=list)
    finishers: list = field(default_factory=list)
    handlers: dict = field(default_factory=dict)  # suffix -> handler
    keep_suffix: set = field(default_factory=set)

    def option_group(self, fn) -> None:
        self.option_groups.append(fn)

    def finisher(self, fn) -> None:
        self.finishers.append(fn)

    def handler(self, suffixes, fn, keep_suffix: bool = False) -> None:
        for s in suffixes:
            self.handlers[s.lower()] = fn
            if keep_suffix:
                self.keep_suffix.add(s.lower())


HOOKS = Hooks()


def _load_extensions() -> None:
    if getattr(HOOKS, "_loaded", False):
        return
    HOOKS._loaded = True
    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(HOOKS)


@dataclass
class Context:
    args: argparse.Namespace
    client: object  # server.client.DaemonClient
    options: dict


# ---------------------------------------------------------------------------- arguments


def _colour(text: str):
    """8-bit (r, g, b) for an opaque colour (the one colour parser, ``maskd.core.colour``), or None."""
    from maskd.core.colour import parse_colour
    from maskd.core.errors import InputError

    try:
        r, g, b, a = parse_colour(text)
    except InputError:
        return None
    return (round(r * 255), round(g * 255), round(b * 255)) if a >= 1.0 else None


def _background(text: str):
    colour = _colour(text)
    if colour is not None:
        return colour
    if Path(text).is_file():
        return Path(text)
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a colour (#rrggbb, r,g,b, white, …) nor an existing image file"
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    from maskd.core.limits import option_type
    from maskd.server.commands.refine import _unit

    _load_extensions()
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (searched recursively) or glob patterns such as 'shots/**/*.jpg'",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="output folder (created), or a file name when there is one input file",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--mode",
        choices=["cutout", "rgba", "mask"],
        default="cutout",
        help="cutout: decontaminated colours + alpha (default); rgba: original colours + "
        "alpha; mask: the alpha alone",
    )
    out.add_argument(
        "--background",
        type=_background,
        metavar="COLOUR|IMAGE",
        help="composite over a colour (#rrggbb, r,g,b, white) or an image (scaled to cover)",
    )
    out.add_argument(
        "--format",
        choices=sorted(OUTPUT_FORMATS),
        default="png",
        help="output file type (default png; jpg only with --background or --mode mask)",
    )
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pipe = p.add_argument_group("matte")
    pipe.add_argument("--quality", choices=["fast", "default", "quality"], default="default")
    pipe.add_argument("--no-refine", action="store_true", help="plain upsampled model matte (fastest)")
    pipe.add_argument("--threshold", type=_unit, metavar="LEVEL", help="hard mask at LEVEL (0..1)")
    grow, feather = option_type("grow"), option_type("feather")  # core's bounds, as the daemon's
    pipe.add_argument("--grow", type=grow, default=0, metavar="PX", help="grow (negative: shrink) the mask")
    pipe.add_argument("--feather", type=feather, default=0.0, metavar="PX", help="soften the edge")
    pipe.add_argument("--fill-holes", action="store_true", help="fill holes inside the subject")
    pipe.add_argument("--invert", action="store_true", help="keep the background instead")
    d = p.add_argument_group("daemon (used only when none is running)")
    d.add_argument("--connection-file", metavar="PATH")
    d.add_argument("--model", metavar="PRESET")
    d.add_argument("--weights", metavar="PATH")
    d.add_argument("--variant", metavar="PRESET")
    d.add_argument("--device", metavar="DEVICE")
    d.add_argument("--resolution", type=int, metavar="N")
    for add in HOOKS.option_groups:
        add(p)


def _serve_args(args) -> list[str]:
    out = []
    for name in ("model", "weights", "variant", "device", "resolution"):
        value = getattr(args, name, None)
        if value is not None:
            out += ["--" + name, os.path.abspath(value) if name == "weights" else str(value)]
    return out


# ---------------------------------------------------------------------------- inputs and outputs


def _supported(path: Path) -> bool:
    s = path.suffix.lower()
    return s in RASTER_SUFFIXES or s in HOOKS.handlers


def collect_inputs(inputs: list[str], output: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """[(file, its path relative to the input root)], [problems]. Folders are searched recursively;
    hidden files and anything inside ``output`` are left out."""
    found: list[tuple[Path, Path]] = []
    problems = []
    out_resolved = output.resolve()

    def inside_output(p: Path) -> bool:
        try:
            p.resolve().relative_to(out_resolved)
            return out_resolved.is_dir() or out_resolved.suffix == ""
        except ValueError:
            return False

    for text in inputs:
        path = Path(text)
        if any(c in text for c in "*?[") and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and _supported(m)]
            if not files:
                problems.append(f"{text}: no matching image files")
            found += [(m, Path(m.name)) for m in files]
        elif path.is_dir():
            files = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and _supported(f)
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
                and not inside_output(f)
            )
            if not files:
                problems.append(f"{text}: no image files in this folder")
            found += [(f, f.relative_to(path)) for f in files]
        elif path.is_file():
            if _supported(path):
                found.append((path, Path(path.name)))
            else:
                problems.append(f"{text}: not a supported image type ({', '.join(sorted(RASTER_SUFFIXES))})")
        else:
            problems.append(f"{text}: no such file or folder")
    seen = set()
    unique = []
    for f, rel in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    return unique, problems


def output_path(args, src: Path, rel: Path, single_file: bool) -> Path:
    out = Path(args.output)
    suffix = src.suffix if src.suffix.lower() in HOOKS.keep_suffix else OUTPUT_FORMATS[args.format]
    if single_file and out.suffix and not out.is_dir():
        return out
    return out / rel.with_suffix(suffix)


# ---------------------------------------------------------------------------- per-file work


def _bit_depth(image: np.ndarray) -> int:
    return 16 if image.dtype in (np.uint16, np.float32) else 8


def _colour_float(image: np.ndarray) -> np.ndarray:
    from maskd.core import imageio

    return imageio.colour_float(image)


def _cover(picture: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    ph, pw = picture.shape[:2]
    scale = max(h / ph, w / pw)
    nh, nw = max(h, round(ph * scale)), max(w, round(pw * scale))
    resized = cv2.resize(picture, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return resized[y0 : y0 + h, x0 : x0 + w]


_BACKGROUND_CACHE: dict = {}


def _background_pixels(spec, h: int, w: int) -> np.ndarray:
    from maskd.core import imageio

    if isinstance(spec, tuple):
        return np.broadcast_to(np.array(spec, np.float32) / 255.0, (h, w, 3))
    key = (str(spec), h, w)
    if key not in _BACKGROUND_CACHE:
        _BACKGROUND_CACHE.clear()
        _BACKGROUND_CACHE[key] = _cover(_colour_float(imageio.read_image(spec)), h, w)
    return _BACKGROUND_CACHE[key]


def default_output(args, item: Item) -> np.ndarray:
    """The ``--mode``/``--background`` result as float32 in [0, 1]."""
    from maskd.core import imageio

    alpha = item.alpha
    if args.mode == "mask" and args.background is None:
        return alpha[..., None]
    colours = (
        item.foreground
        if (args.mode != "rgba" and item.foreground is not None)
        else _colour_float(item.image)
    )
    if args.background is not None:
        h, w = alpha.shape
        bg = _background_pixels(args.background, h, w)
        a = alpha[..., None]
        lin = imageio.srgb_to_linear(colours) * a + imageio.srgb_to_linear(bg) * (1.0 - a)
        return imageio.linear_to_srgb(lin)
    return np.concatenate([colours, alpha[..., None]], axis=2)


def _to_file_dtype(arr: np.ndarray, bit_depth: int, dst: Path) -> np.ndarray:
    from maskd.core import imageio

    if bit_depth == 16 and dst.suffix.lower() in (".png", ".tif", ".tiff"):
        return imageio.to_uint16(arr)
    return imageio.to_uint8(arr)


def process_raster(ctx: Context, src: Path, dst: Path) -> str | None:
    from maskd.core import imageio

    args = ctx.args
    image = imageio.read_image(src)
    want_fg = args.mode != "rgba" or bool(HOOKS.finishers)
    answer = ctx.client.segment(image, ctx.options, foreground=want_fg)
    item = Item(src, dst, image, answer.alpha, answer.foreground, bit_depth=_bit_depth(image))
    item.output = default_output(args, item)
    for finish in HOOKS.finishers:
        finish(args, item)
    out = item.output
    if out.shape[2] in (2, 4) and dst.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        raise MaskdError(f"{dst.suffix} cannot hold transparency: use --format png, or --background")
    dst.parent.mkdir(parents=True, exist_ok=True)
    imageio.write_image(dst, _to_file_dtype(out, item.bit_depth, dst))
    return "; ".join(item.notes) or None


# ---------------------------------------------------------------------------- the batch


def _options(args) -> dict:
    return {
        "quality": args.quality,
        "refine": not args.no_refine,
        "threshold": args.threshold,
        "grow": args.grow,
        "feather": args.feather,
        "fill_holes": args.fill_holes,
        "invert": args.invert,
        "decontaminate": args.mode != "rgba" or bool(HOOKS.finishers),
    }


def _unique_outputs(jobs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """``a.jpg`` and ``a.png`` in one folder would both become ``a.png``: name them ``a-jpg.png`` and
    ``a-png.png`` instead (and number what still collides), so no result overwrites another."""
    from collections import Counter

    counts = Counter(d for _, d in jobs)
    out, used = [], set()
    for src, dst in jobs:
        if counts[dst] > 1:
            dst = dst.with_name(f"{dst.stem}-{src.suffix[1:].lower()}{dst.suffix}")
        base, n = dst, 2
        while dst in used:
            dst = base.with_name(f"{base.stem}-{n}{base.suffix}")
            n += 1
        used.add(dst)
        out.append((src, dst))
    return out


def _check_combination(args) -> None:
    finishing = sys.modules.get("maskd.server.finishing")  # its --background/--preset replace ours
    opaque = args.background is not None or (finishing is not None and finishing.opaque_output(args))
    if args.format == "jpg" and args.mode != "mask" and not opaque:
        raise MaskdError(
            "--format jpg cannot hold transparency: add --background COLOUR, use --mode mask, "
            "or keep --format png"
        )


def run(args) -> int:
    from maskd.plugins import maskd_client as mc
    from maskd.server.client import batch_daemon

    _load_extensions()
    if getattr(args, "in_place", False):  # layered files replaced in place (server.layered_batch)
        from maskd.server.layered_batch import run_in_place

        return run_in_place(args)
    if not args.output:
        print("maskd remove: -o/--output is required (or --in-place for layered files)", file=sys.stderr)
        return 2
    _check_combination(args)
    out = Path(args.output)
    files, problems = collect_inputs(args.inputs, out)
    for problem in problems:
        print(f"maskd remove: {problem}", file=sys.stderr)
    if not files:
        print("maskd remove: nothing to do (no input images found)", file=sys.stderr)
        return 2
    single = len(files) == 1 and Path(args.inputs[0]).is_file() and len(args.inputs) == 1
    if not (single and out.suffix and not out.is_dir()):
        out.mkdir(parents=True, exist_ok=True)
    jobs = _unique_outputs([(src, output_path(args, src, rel, single)) for src, rel in files])
    todo = [(s, d) for s, d in jobs if args.overwrite or not d.exists()]
    skipped = len(jobs) - len(todo)
    failures: list[tuple[Path, str]] = []
    notes: list[tuple[Path, str]] = []
    done = 0
    t0 = time.perf_counter()
    if todo:
        from tqdm import tqdm

        say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        with batch_daemon(args.connection_file, _serve_args(args), say=say) as (client, _started):
            ctx = Context(args, client, _options(args))
            bar = tqdm(todo, unit="file", disable=args.quiet or None, dynamic_ncols=True, file=sys.stderr)
            try:
                for src, dst in bar:
                    bar.set_postfix_str(src.name[-40:], refresh=False)
                    handler = HOOKS.handlers.get(src.suffix.lower(), process_raster)
                    try:
                        note = handler(ctx, src, dst)
                        done += 1
                        if note:
                            notes.append((src, note))
                    except (MaskdError, mc.MaskdClientError, OSError, ValueError) as exc:
                        failures.append((src, str(exc)))
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # one bad file never stops the batch
                        failures.append((src, f"{type(exc).__name__}: {exc}"))
            finally:
                bar.close()
    seconds = time.perf_counter() - t0
    print(
        f"maskd remove: {done} written, {skipped} skipped (exist; --overwrite replaces), "
        f"{len(failures)} failed in {seconds:.1f} s → {out}"
    )
    for src, note in notes:
        print(f"  note: {src}: {note}")
    if failures:
        print("failures:")
        for src, message in failures:
            print(f"  {src}: {message}")
    return 1 if failures or problems else 0
