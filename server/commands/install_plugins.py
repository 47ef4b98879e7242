"""``maskd install-plugins``: install the GIMP and Krita plugins into every editor found.

Safe to re-run: it upgrades in place, and everything it writes is recorded in the install manifest
(``maskd uninstall`` removes exactly that). Sandboxed editors (Flatpak, Snap) get an autostart
entry for the daemon, since they cannot start it themselves.
"""

from __future__ import annotations

import argparse

HELP = "Install the GIMP and Krita plugins into every editor found"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--editors",
        metavar="LIST",
        help="only these, comma-separated: gimp, krita, or a location key from --list "
        "(e.g. gimp-3.0-flatpak, krita-native)",
    )
    p.add_argument("--list", action="store_true", help="show where the editors are; install nothing")
    m = p.add_argument_group("the daemon the plugins start (default: what the installer recorded)")
    m.add_argument("--model", metavar="PRESET", help="preset the daemon serves")
    m.add_argument("--weights", metavar="PATH", help="a local weights file the daemon serves")
    m.add_argument("--variant", metavar="PRESET", help="the preset whose architecture --weights has")
    m.add_argument("--device", metavar="DEVICE", help="auto | cpu | cuda | mps (default: auto)")
    s = p.add_argument_group("autostart (needed by Flatpak/Snap editors, optional elsewhere)")
    s.add_argument(
        "--service",
        dest="service",
        action="store_const",
        const="yes",
        default="auto",
        help="start the daemon with the user session even if no sandboxed editor is found",
    )
    s.add_argument(
        "--no-service",
        dest="service",
        action="store_const",
        const="no",
        help="never add an autostart entry (sandboxed editors then need `maskd serve` by hand)",
    )
    s.add_argument(
        "--no-start", action="store_true", help="write the autostart entry but do not start it now"
    )


def _model_args(args, settings: dict) -> list[str]:
    """``maskd serve`` options choosing the model: from the command line, else what the installer recorded."""
    if args.weights:
        from pathlib import Path

        model = ["--weights", str(Path(args.weights).expanduser().resolve())]
        return model + (["--variant", args.variant] if args.variant else [])
    if args.model:
        return ["--model", args.model]
    return list(settings.get("model_args") or [])


def run(args, plat=None) -> int:
    """``plat`` (default: this machine) lets tests install into macOS and Windows layouts."""
    from maskd.installers import editors
    from maskd.installers.locations import Platform, editor_targets
    from maskd.installers.manifest import Manifest
    from maskd.plugins.maskd_client import current_command

    plat = plat or Platform.current()
    wanted = [e for e in (args.editors or "").split(",") if e.strip()] or None
    if args.list:
        for t in editor_targets(plat, wanted):
            state = f"found ({t.found_by})" if t.found else "not found"
            print(f"{t.key:22} {t.label:22} {state}\n{'':22} plugin folder: {t.plugin_dir}")
        return 0
    manifest = Manifest.load(plat.manifest_path)
    settings = manifest.settings
    settings["model_args"] = _model_args(args, settings)
    if args.device:
        settings["device"] = args.device
    device = settings.get("device")
    # an earlier layout's `python -m server` becomes `python -m maskd.server`
    if settings.get("daemon_base"):
        settings["daemon_base"] = current_command(settings["daemon_base"])
    daemon_base = settings.get("daemon_base") or editors.default_daemon_command()[:-1]
    daemon_command = list(daemon_base) + ["serve"] + settings["model_args"]
    daemon_command += ["--device", device] if device and device != "auto" else []
    targets = editors.install_plugins(
        plat, manifest, daemon_command, editors=wanted, service=args.service, start=not args.no_start
    )
    if not targets:
        return 0
    print(
        "Next: restart the editors. GIMP: Layer ▸ Transparency ▸ Remove Background…; Krita: "
        "Settings ▸ Dockers ▸ Background Removal (or Tools ▸ Scripts ▸ Remove Background (maskd))."
    )
    return 0
