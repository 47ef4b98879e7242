"""``maskd finish CUTOUT... -o OUTPUT``: finish cut-outs you already have — no model, no daemon.

Takes RGBA images (from ``maskd remove``, ``maskd refine --rgba-out``, an editor or any other
tool), uses their alpha channel as the matte and their colours as the subject's, and applies
the same finishing options as ``maskd remove`` (background, shadow, crop, canvas, presets,
sidecars). Use it to try finishing settings on a batch without running the model again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from maskd.core.errors import MaskdError

HELP = "Finish existing cut-outs (RGBA): background, shadow, crop, canvas — no model needed"


def add_arguments(p) -> None:
    from maskd.server import finishing
    from maskd.server.commands.remove import OUTPUT_FORMATS

    p.add_argument(
        "inputs",
        nargs="+",
        metavar="CUTOUT",
        help="RGBA image files, folders (searched recursively) or glob patterns",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="output folder (created), or a file name when there is one input file",
    )
    p.add_argument(
        "--format",
        choices=sorted(OUTPUT_FORMATS),
        default="png",
        help="output file type (default png; jpg needs an opaque --background or --no-alpha)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    finishing.add_arguments(p)


def finish_file(args, src: Path, dst: Path) -> str | None:
    from maskd.core import imageio
    from maskd.server import finishing
    from maskd.server.commands.remove import Item, _bit_depth, _to_file_dtype

    image = imageio.read_image(src)
    alpha = imageio.alpha_float(image)
    if alpha is None:
        raise MaskdError(
            f"{src.name} has no alpha channel: maskd finish needs a cut-out (RGBA); "
            "use `maskd remove` for photos"
        )
    colours = imageio.colour_float(image)
    item = Item(src, dst, image, alpha, colours, bit_depth=_bit_depth(image))
    item.output = np.concatenate([colours, alpha[..., None]], axis=2)
    finishing.finish_item(args, item)
    out = item.output
    if out.shape[2] in (2, 4) and dst.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        raise MaskdError(
            f"{dst.suffix} cannot hold transparency: use --format png, an opaque --background, or --no-alpha"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    imageio.write_image(dst, _to_file_dtype(out, item.bit_depth, dst))
    return "; ".join(item.notes) or None


def run(args) -> int:
    from maskd.server import finishing
    from maskd.server.commands.remove import collect_inputs, output_path

    args.mode = "cutout"
    args.background = None
    if args.format == "jpg" and not finishing.opaque_output(args):
        raise MaskdError(
            "--format jpg cannot hold transparency: add --background COLOUR (or a preset with "
            "one), or --no-alpha"
        )
    out = Path(args.output)
    files, problems = collect_inputs(args.inputs, out)
    for problem in problems:
        print(f"maskd finish: {problem}", file=sys.stderr)
    if not files:
        print("maskd finish: nothing to do (no input images found)", file=sys.stderr)
        return 2
    single = len(files) == 1 and Path(args.inputs[0]).is_file() and len(args.inputs) == 1
    if not (single and out.suffix and not out.is_dir()):
        out.mkdir(parents=True, exist_ok=True)
    jobs = [(src, output_path(args, src, rel, single)) for src, rel in files]
    todo = [(s, d) for s, d in jobs if args.overwrite or not d.exists()]
    failures, notes = [], []
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(todo, unit="file", disable=args.quiet or None, dynamic_ncols=True, file=sys.stderr)
    done = 0
    for src, dst in bar:
        try:
            note = finish_file(args, src, dst)
            done += 1
            if note:
                notes.append((src, note))
        except (MaskdError, OSError, ValueError) as exc:
            failures.append((src, str(exc)))
    bar.close()
    print(
        f"maskd finish: {done} written, {len(jobs) - len(todo)} skipped (exist; --overwrite replaces), "
        f"{len(failures)} failed in {time.perf_counter() - t0:.1f} s → {out}"
    )
    for src, note in notes:
        print(f"  note: {src}: {note}")
    if failures:
        print("failures:")
        for src, message in failures:
            print(f"  {src}: {message}")
    return 1 if failures or problems else 0
