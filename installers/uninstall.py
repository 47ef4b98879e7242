"""Uninstall: stop the daemon, then remove exactly what the install manifest records.

Standard library only, so both ``maskd uninstall`` and ``install.sh --uninstall`` (the system
Python, for when maskd's own environment is broken or, on Windows, in use) run the same code.
"""

from __future__ import annotations

from pathlib import Path

from maskd.installers.locations import Platform
from maskd.installers.manifest import Manifest, undo


def stop_daemon(plat: Platform) -> str:
    """Ask a running daemon to shut down (its code is about to be removed); "" when none answered."""
    try:
        from maskd.plugins import maskd_client as mc
    except ImportError:
        return ""
    cfile = str(plat.default_connection_file())
    try:
        with mc.connect(cfile, timeout=5.0) as client:
            client.shutdown()
    except Exception:
        return ""
    return f"stopped the running daemon ({cfile})"


def uninstall(
    plat: Platform,
    *,
    keep_weights: bool = False,
    run_commands: bool | None = None,
    manifest_path: Path | None = None,
) -> list[str]:
    """Undo the install; ``run_commands`` (default: ``plat.probe``) stops the daemon and its autostart."""
    run_commands = plat.probe if run_commands is None else run_commands
    manifest = Manifest.load(manifest_path or plat.manifest_path)
    if not manifest.exists:
        return []
    report = []
    stopped = stop_daemon(plat) if run_commands else ""
    if stopped:
        report.append(stopped)
    keep = ("hf_cache", "weights") if keep_weights else ()
    return report + undo(manifest, run_commands=run_commands, keep=keep)
