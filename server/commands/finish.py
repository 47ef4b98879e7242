"""``maskd finish CUTOUT... -o OUTPUT``: finish cut-outs you already have — no model, no daemon.

Takes RGBA images (from ``maskd remove``, ``maskd refine --rgba-out``, an editor or any other
tool), uses their alpha channel as the matte and their colours as the subject's, and applies
the same finishing options as ``maskd remove`` (background, shadow, crop, canvas, presets,
sidecars). Use it to try finishing settings on a batch without running the model again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from maskd.core.errors import MaskdError
from maskd.server import batch, options

HELP = "Finish existing cut-outs (RGBA): background, shadow, crop, canvas — no model needed"
TRANSPARENCY_HINT = "use --format png, an opaque --background, or --no-alpha"


def add_arguments(p) -> None:
    options.add_batch_io(p, what="RGBA image files")
    options.add_format(p, note="jpg needs an opaque --background or --no-alpha")
    options.add_finishing(p)


def finish_file(args, src: Path, dst: Path) -> str | None:
    """One cut-out: its own alpha is the alpha source, its colours the subject's."""
    from maskd.core import imageio

    image = imageio.read_image(src)
    alpha = imageio.alpha_float(image)
    if alpha is None:
        raise MaskdError(
            f"{src.name} has no alpha channel: maskd finish needs a cut-out (RGBA); "
            "use `maskd remove` for photos"
        )
    colours = imageio.colour_float(image)
    item = batch.Item(src, dst, image, alpha, colours, bit_depth=batch.bit_depth(image))
    item.output = np.concatenate([colours, alpha[..., None]], axis=2)
    return batch.finish_and_write(args, item, TRANSPARENCY_HINT)


def run(args) -> int:
    from maskd.server import finishing

    args.mode = options.Mode.CUTOUT.value
    out = Path(args.output)
    finishing.options(args)
    files, problems = batch.collect_or_say("finish", args.inputs, out)
    if not files:
        return 2
    single = batch.single_file_output(args.inputs, files, out)
    jobs = batch.plan_outputs(files, out, args.format, single)
    batch.check_opaque_outputs(
        jobs,
        finishing.opaque_output(args),
        "add --background COLOUR (or a preset with one), or --no-alpha",
    )
    protected = [p for p in [finishing.background_file(args)] if p is not None]
    batch.check_plan(jobs, protected=protected, extras=lambda dst: finishing.side_files(args, dst))
    todo = [(s, d) for s, d in jobs if args.overwrite or not d.exists()]
    batch.prepare_folders(todo)
    try:
        outcome = batch.run_files(todo, lambda s, d: finish_file(args, s, d), quiet=args.quiet)
    except batch.Interrupted as exc:
        batch.say_interrupted("finish", exc, False)
        return 130
    batch.report("finish", outcome, len(jobs) - len(todo), out)
    return 1 if outcome.failures or problems else 0
