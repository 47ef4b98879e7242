"""``maskd fetch``: download a preset's weights once (with progress), or check a local file loads.

Both end by loading the weights into the architecture strictly, so a file that passes here will
serve. Nothing is downloaded for ``--weights``.
"""

from __future__ import annotations

import argparse

HELP = "Download a preset's weights once (or check a local weights file)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "preset",
        nargs="?",
        metavar="PRESET",
        help="preset name or Hugging Face repo id (see `maskd models`; default: the default model)",
    )
    p.add_argument(
        "--weights", metavar="PATH", help="check a local .safetensors/.pth file or snapshot folder"
    )
    p.add_argument("--variant", metavar="PRESET", help="the preset whose architecture --weights follows")
    p.add_argument("--no-check", action="store_true", help="only download; do not load the weights")


def run(args) -> int:
    import time

    from maskd.core import presets, weights
    from maskd.core.errors import MaskdError

    if args.preset and args.weights:
        raise MaskdError(
            "give either a PRESET to download (e.g. `maskd fetch lite`) or "
            "--weights FILE [--variant PRESET] to check a local file"
        )
    if not args.preset and not args.weights:
        from maskd.server.commands.models import default_model

        default = default_model()
        args.preset = default["name"]
        by = "chosen by the installer" if default["by_installer"] else "built in"
        print(f"no PRESET given: fetching the default model, {args.preset} ({by})")
    source = args.weights or args.preset
    if args.preset and presets.is_preset(args.preset):
        preset = presets.resolve_preset(args.preset)
        if preset.non_commercial:
            print(f"note: {preset.repo_id} is licensed {preset.licence}.")
        cached = weights.cached_path(preset.repo_id, preset.filename)
        state = f"already cached at {cached}" if cached else f"not cached yet, fetching {preset.url}"
        print(f"{preset.name}: {state}", flush=True)
    located = weights.locate(source, variant=args.variant)
    print(f"weights: {located.path} ({located.path.stat().st_size / 1e6:,.1f} MB)")
    if args.no_check:
        return 0
    from maskd.core.birefnet import load_model

    start = time.perf_counter()
    variant = args.variant or (located.preset.name if located.preset else None)
    model = load_model(str(located.path), variant=variant)
    preset = model.preset
    params = sum(p.numel() for p in model.parameters())
    print(
        f"ok: loads strictly as '{preset.name}' ({preset.backbone}, {params / 1e6:.1f} M parameters, "
        f"patch order {model.patch_order}, native size {preset.resolution[1]}x{preset.resolution[0]}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
