"""``maskd remove INPUT... -o OUTPUT``: remove the background of files, folders and globs.

Each input file is sent to the daemon (the running one, or one started for this batch and stopped
afterwards) and written as:
- ``--mode cutout`` (default): RGBA PNG, straight alpha, decontaminated colours (no background fringe);
- ``--mode rgba``: RGBA PNG with the original colours untouched and the alpha;
- ``--mode mask``: the alpha alone, grayscale;
then finished (``--background``, ``--shadow``, ``--crop``, ``--canvas``, presets: ``server.finishing``).
The daemon is asked only for what the output needs: colours only for ``cutout``.
16-bit inputs give 16-bit outputs. Existing outputs are skipped unless ``--overwrite``; an input
is never replaced (layered files only with ``--in-place``). One bad file never stops the batch:
failures are listed at the end and the exit code is 1. The steps are ``server.batch``'s; layered
files (XCF, ORA, KRA) go through ``server.layered_batch``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from maskd.server import batch, options

HELP = "Remove the background of images, folders and layered files"


def add_arguments(p) -> None:
    options.add_batch_io(p, what="image or layered files", output_required=False)
    out = p.add_argument_group("output")
    options.add_mode(out)
    options.add_format(out, note="jpg only with an opaque --background, --no-alpha or --mode mask")
    options.add_matte(p)
    options.add_finishing(p)
    options.add_layers(p)
    options.add_daemon(p)
    options.add_ray(p)


def wants_colours(args) -> bool:
    """Whether the daemon must estimate foreground colours: only ``--mode cutout`` writes them."""
    return options.Mode(args.mode).needs_colours


def process_raster(args, client, opts: dict, src: Path, dst: Path) -> str | None:
    """One flat image: read → daemon alpha (+ colours if needed) → finishing → atomic write."""
    from maskd.core import imageio

    image = imageio.read_image(src)
    answer = client.segment(image, opts, foreground=opts["decontaminate"])
    item = batch.Item(src, dst, image, answer.alpha, answer.foreground, bit_depth=batch.bit_depth(image))
    if args.mode == options.Mode.MASK:
        item.output = answer.alpha[..., None]
    else:
        colours = answer.foreground if answer.foreground is not None else imageio.colour_float(image)
        item.output = np.concatenate([colours, answer.alpha[..., None]], axis=2)
    return batch.finish_and_write(args, item, "use --format png, an opaque --background, or --no-alpha")


def _protected(args) -> list[Path]:
    """Files the batch reads besides its inputs (never to be replaced by an output)."""
    from maskd.server import finishing

    picture = finishing.background_file(args)
    return [picture] if picture is not None else []


def run(args) -> int:
    from maskd.core.layered import LAYERED_SUFFIXES
    from maskd.plugins import maskd_client as mc
    from maskd.server import finishing, layered_batch, ray_storage

    if args.in_place:  # layered files replaced in place
        return layered_batch.run_in_place(args)
    if not args.output:
        print("maskd remove: -o/--output is required (or --in-place for layered files)", file=sys.stderr)
        return 2
    finishing.options(args)  # a bad finishing combination fails now, before any file is read
    if any(ray_storage.is_uri(t) for t in [*args.inputs, args.output]):  # s3://, gs://, …
        if args.ray is None:
            print("maskd remove: object storage needs --ray (see docs/scale.md)", file=sys.stderr)
            return 2
        from maskd.server import ray_batch

        return ray_batch.run_storage(args)
    out = Path(args.output)
    files, problems = batch.collect_or_say(
        "remove", args.inputs, out, batch.RASTER_SUFFIXES | set(LAYERED_SUFFIXES)
    )
    if not files:
        return 2
    single = batch.single_file_output(args.inputs, files, out)
    jobs = batch.plan_outputs(files, out, args.format, single, keep_suffix=LAYERED_SUFFIXES)
    flat = [(s, d) for s, d in jobs if s.suffix.lower() not in LAYERED_SUFFIXES]
    batch.check_opaque_outputs(
        flat,
        args.mode == options.Mode.MASK or finishing.opaque_output(args),
        "add --background COLOUR, use --mode mask, or write a .png",
    )
    batch.check_plan(jobs, protected=_protected(args), extras=lambda dst: finishing.side_files(args, dst))
    todo = [(s, d) for s, d in jobs if args.overwrite or not d.exists()]
    batch.prepare_folders(todo)
    outcome, interrupted = batch.Outcome(), None
    if todo and args.ray is not None:  # the same plan, run as a Ray Data pipeline (docs/scale.md)
        from maskd.server import ray_batch

        try:
            outcome = ray_batch.run(args, todo, options.matte_options(args, colours=wants_colours(args)))
        except batch.Interrupted as exc:
            batch.say_interrupted("remove", exc, False)
            return 130
    elif todo:
        say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        opts = options.matte_options(args, colours=wants_colours(args))
        serve = options.serve_args(args)
        with batch.daemon_for_batch(args.connection_file, serve, say=say) as (client, started):

            def work(src: Path, dst: Path) -> str | None:
                if src.suffix.lower() in LAYERED_SUFFIXES:
                    return layered_batch.mask_file(args, client, opts, src, dst)
                return process_raster(args, client, opts, src, dst)

            try:
                outcome = batch.run_files(todo, work, quiet=args.quiet, errors=(mc.MaskdClientError,))
            except batch.Interrupted as exc:
                interrupted = exc
        if interrupted is not None:
            batch.say_interrupted("remove", interrupted, started)
            return 130
    batch.report("remove", outcome, len(jobs) - len(todo), out)
    return 1 if outcome.failures or problems else 0
