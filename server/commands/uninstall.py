"""``maskd uninstall``: remove exactly what the installer put in place.

It reads the install manifest, stops the daemon, removes the plugin folders, takes maskd's key
back out of ``kritarc`` (restoring the file byte for byte when Krita has not rewritten it since),
removes the autostart entry, maskd's environment and the weights it downloaded or copied, and
folders it created when they are empty. Nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "Remove exactly what the installer put in place"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keep-weights",
        action="store_true",
        help="keep the downloaded or copied model weights (and the manifest listing them)",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")


def run(args) -> int:
    from maskd.installers.locations import Platform
    from maskd.installers.manifest import Manifest
    from maskd.installers.uninstall import uninstall

    plat = Platform.current()
    manifest = Manifest.load(plat.manifest_path)
    if not manifest.exists:
        print(
            f"Nothing to uninstall: no install manifest at {plat.manifest_path} (maskd was not installed "
            "by its installer here, or was already uninstalled). A pip-installed maskd is removed with "
            "`pip uninstall maskd`."
        )
        return 0
    if args.dry_run:
        for entry in manifest.entries:
            if entry["kind"] == "ini":
                print(f"would take {entry['key']} out of [{entry['section']}] in {entry['path']}")
            elif entry["kind"] == "dir":
                print(f"would remove {entry['path']} if empty")
            elif not (args.keep_weights and entry["kind"] in ("weights", "hf_cache")):
                print(f"would remove {entry['path']}")
        return 0
    venv = manifest.settings.get("venv")
    if os.name == "nt" and venv and os.path.abspath(sys.prefix) == os.path.abspath(venv):
        print(
            "On Windows a running program cannot delete itself: run "
            "`powershell -ExecutionPolicy Bypass -File installers\\install.ps1 --uninstall` from the clone "
            "instead (same uninstall, run by the system Python)."
        )
        return 1
    report = uninstall(plat, keep_weights=args.keep_weights)
    print("\n".join(report) if report else "nothing was left to remove")
    print("maskd is uninstalled." + (" The weights were kept." if args.keep_weights else ""))
    return 0
