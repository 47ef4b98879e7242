"""``maskd refine IMAGE --mask MASK -o OUT.png [--fg-out FG.png]``: a rough mask → full-resolution alpha.

No model, no daemon: the mask (any size; resized to the image) is refined against the image's
own colours by ``core.pipeline.refine`` and written as a grayscale alpha at the image's size;
``--fg-out`` adds the decontaminated foreground colours (straight RGB). ``--device auto`` (the
default) refines on a CUDA or Apple GPU where one is present; torch is only imported where a GPU
may be (an NVIDIA driver, Apple silicon), so a CPU-only machine starts as fast as without it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from maskd.core.limits import option_type

HELP = "Refine a rough mask to a full-resolution alpha (no model needed)"


def _maybe_gpu() -> bool:
    """Cheap signs of a GPU torch could use (no torch import)."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    return shutil.which("nvidia-smi") is not None


def refine_device(name: str) -> str:
    """``--device`` → what ``CutoutOptions.device`` takes: auto picks cuda, then mps, else cpu."""
    name = (name or "auto").strip().lower()
    if name == "cpu" or (name == "auto" and not _maybe_gpu()):
        return "cpu"
    from maskd.core.device import pick_device  # a device that is not there is a clear error

    return str(pick_device(name))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maskd.server import options

    parser.add_argument("image", metavar="IMAGE", help="the photo (PNG/JPEG/TIFF/WebP; 8/16-bit, gray, RGBA)")
    parser.add_argument(
        "--mask",
        required=True,
        metavar="MASK",
        help="rough mask, grayscale image of any size (white = keep); resized to IMAGE",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.png",
        help="where to write the alpha (grayscale, IMAGE's size)",
    )
    parser.add_argument(
        "--fg-out", metavar="FG.png", help="also write the decontaminated foreground colours (RGB)"
    )
    parser.add_argument(
        "--rgba-out",
        metavar="CUT.png",
        help="also write the cut-out: foreground colours with the alpha (RGBA PNG/TIFF/WebP)",
    )
    options.add_matte(parser)
    parser.add_argument(
        "--no-decontaminate",
        action="store_true",
        help="keep the image's own colours at soft edges (FG output = IMAGE's colours)",
    )
    parser.add_argument(
        "--roi", type=options.roi, metavar="X,Y,W,H", help="work only inside this rectangle; alpha 0 outside"
    )
    parser.add_argument("--linear", action="store_true", help="IMAGE holds linear-light values (not sRGB)")
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEV",
        help="where to refine: auto (a GPU if present, else cpu), cpu, cuda, cuda:N, mps",
    )
    parser.add_argument(
        "--band",
        type=option_type("band_radius", "--band"),
        metavar="PX",
        help="half-width of the refined band, in pixels of the mask's working grid",
    )
    parser.add_argument("--bits", type=int, choices=[8, 16], default=8, help="bit depth of the written files")
    options.add_overwrite_quiet(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from maskd.core import imageio, pipeline
    from maskd.core.errors import InputError
    from maskd.server import batch, options

    started = time.perf_counter()
    outputs = [Path(p) for p in (args.output, args.fg_out, args.rgba_out) if p]
    for out in outputs:
        if not out.parent.is_dir():
            raise InputError(f"cannot write {out}: folder {out.parent} does not exist")
    if len({o.resolve() for o in outputs}) != len(outputs) or Path(args.image).resolve() in {
        o.resolve() for o in outputs
    }:
        raise InputError("the output paths must differ from each other and from IMAGE")
    batch.check_plan([(Path(args.image), o) for o in outputs], protected=[args.mask])
    existing = [o for o in outputs if o.exists()]
    if existing and not args.overwrite:
        if not args.quiet:
            print(f"maskd refine: {existing[0]} exists: skipped (--overwrite replaces it)")
        return 0
    batch.prepare_folders([(Path(args.image), o) for o in outputs])
    image = imageio.read_image(args.image)
    mask = imageio.read_mask(args.mask)
    want_fg = bool(args.fg_out or args.rgba_out)
    cutout_options = pipeline.CutoutOptions(
        **options.matte_options(args, colours=want_fg and not args.no_decontaminate),
        roi=args.roi,
        linear=args.linear,
        band_radius=args.band,
        device=refine_device(args.device),
    )
    result = pipeline.refine(image, mask, cutout_options)
    convert = imageio.to_uint16 if args.bits == 16 else imageio.to_uint8
    imageio.write_image(args.output, convert(result.alpha))
    colours = None
    if want_fg:
        colours = result.foreground
        if colours is None:  # --no-decontaminate: the image's own colours
            colours = imageio.colour_float(image, to_srgb=False)
        if args.fg_out:
            imageio.write_image(args.fg_out, convert(colours))
        if args.rgba_out:
            imageio.write_image(args.rgba_out, convert(np.dstack([colours, result.alpha])))
    if not args.quiet:
        h, w = result.alpha.shape
        extra = "".join(f", {p}" for p in (args.fg_out, args.rgba_out) if p)
        print(
            f"maskd refine: wrote {args.output}{extra} ({w}×{h}, {time.perf_counter() - started:.2f} s)",
            file=sys.stdout,
        )
    return 0
