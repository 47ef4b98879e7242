"""The plugin step: install the GIMP and Krita plugins into every editor found, and report on them.

Copying goes through ``installers.plugins`` (the same functions the editor tests use), and every
file, folder and setting is recorded in the install manifest so ``maskd uninstall`` removes exactly
that. Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from maskd.installers import plugins
from maskd.installers.locations import EditorTarget, Platform, editor_targets
from maskd.installers.manifest import Manifest

KRITA_SECTION = "python"
KRITA_KEY = f"enable_{plugins.KRITA_PLUGIN_NAME}"


def maskd_version() -> str:
    from maskd.server import __version__

    return __version__


def default_daemon_command(serve_args: list[str] = ()) -> list[str]:
    """How plugins start the daemon when nothing better is recorded: this Python's ``maskd``."""
    exe = Path(sys.executable).parent / ("maskd.exe" if os.name == "nt" else "maskd")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "maskd.server"]
    return base + ["serve"] + list(serve_args)


def plugin_config(plat: Platform, target: EditorTarget, daemon_command: list[str]) -> dict:
    """``maskd_config.json`` for one editor; sandboxed ones read the mirrored connection file."""
    config = {"daemon_command": [str(c) for c in daemon_command], "maskd_version": maskd_version()}
    if target.sandboxed:
        config.update(connection_file=str(target.connection_file_copy), autostart=False)
    else:
        config.update(connection_file=str(plat.default_connection_file()), autostart=True)
    return config


def _ini_has_section(path: Path, section: str) -> bool:
    lines, _, _ = plugins._read_ini_lines(path)
    return any(line.strip() == f"[{section}]" for line in lines)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None


def install_target(
    plat: Platform, target: EditorTarget, manifest: Manifest, daemon_command: list[str]
) -> list[Path]:
    """Install (or upgrade in place) the plugin for one editor location; returns the files written."""
    config = plugin_config(plat, target, daemon_command)
    if target.editor == "gimp":
        manifest.ensure_dir(target.root / "plug-ins")
        files = plugins.install_gimp_plugin(target.root, config)
        manifest.add("tree", target.plugin_dir, editor=target.key)
    else:
        kritarc = Path(target.kritarc)
        manifest.ensure_dir(target.root / "pykrita")
        manifest.ensure_dir(kritarc.parent)
        before = _read_text(kritarc)
        entry = manifest._find("ini", kritarc, section=KRITA_SECTION, key=KRITA_KEY)
        if entry is None:
            manifest.add(
                "ini",
                kritarc,
                section=KRITA_SECTION,
                key=KRITA_KEY,
                editor=target.key,
                previous=plugins.get_kritarc_value(kritarc, KRITA_SECTION, KRITA_KEY),
                file_existed=before is not None,
                section_existed=before is not None and _ini_has_section(kritarc, KRITA_SECTION),
                original=before if before is not None else "",
                written=None,
            )
            entry = manifest._find("ini", kritarc, section=KRITA_SECTION, key=KRITA_KEY)
        elif before != entry.get("written"):
            entry["original"] = None  # changed since our last write: restore by taking our key back only
        files = plugins.install_krita_plugin(target.root, kritarc, config)
        entry["written"] = _read_text(kritarc)
        manifest.add("tree", target.plugin_dir, editor=target.key)
        desktop = target.root / "pykrita" / f"{plugins.KRITA_PLUGIN_NAME}.desktop"
        manifest.add("file", desktop, editor=target.key)
    if target.sandboxed and target.connection_file_copy:
        manifest.ensure_dir(target.connection_file_copy.parent)
        manifest.add("file", target.connection_file_copy, editor=target.key)
    return files


@dataclass
class PluginReport:
    """What doctor says about one editor location."""

    target: EditorTarget
    installed: bool = False
    version: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def inspect_target(plat: Platform, target: EditorTarget) -> PluginReport:
    report = PluginReport(target)
    folder = target.plugin_dir
    config_path = folder / plugins.CONFIG_NAME
    if not folder.is_dir():
        if target.found:
            report.problems.append(f"plugin not installed in {folder}. Fix: run `maskd install-plugins`")
        return report
    report.installed = True
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        report.problems.append(
            f"{config_path} is missing or unreadable ({exc}). Fix: `maskd install-plugins`"
        )
        return report
    report.version = str(config.get("maskd_version", ""))
    if report.version != maskd_version():
        report.problems.append(
            f"plugin is from maskd {report.version or '?'}, maskd is {maskd_version()}. "
            "Fix: `maskd install-plugins` (upgrades in place)"
        )
    if not (folder / plugins.CLIENT_MODULE).is_file():
        report.problems.append(f"{folder / plugins.CLIENT_MODULE} is missing. Fix: `maskd install-plugins`")
    if target.editor == "gimp":
        main = folder / f"{plugins.GIMP_PLUGIN_NAME}.py"
        if not main.is_file():
            report.problems.append(
                f"{main} is missing (GIMP needs folder name = file name). Fix: `maskd install-plugins`"
            )
        elif os.name != "nt" and not main.stat().st_mode & stat.S_IXUSR:
            report.problems.append(
                f"{main} is not executable, so GIMP skips it. Fix: chmod +x it or `maskd install-plugins`"
            )
    else:
        desktop = target.root / "pykrita" / f"{plugins.KRITA_PLUGIN_NAME}.desktop"
        if not desktop.is_file():
            report.problems.append(f"{desktop} is missing. Fix: `maskd install-plugins`")
        value = plugins.get_kritarc_value(Path(target.kritarc), KRITA_SECTION, KRITA_KEY)
        if (value or "").lower() != "true":
            report.problems.append(
                f"the plugin is not enabled in {target.kritarc} ({KRITA_KEY}={value}). "
                "Fix: Settings ▸ Configure Krita ▸ Python Plugin Manager ▸ tick maskd, or "
                "`maskd install-plugins`; then restart Krita"
            )
    command = config.get("daemon_command") or []
    if config.get("autostart", True):
        exe = command[0] if command else ""
        if not exe or not (os.path.isfile(exe) or shutil.which(exe)):
            report.problems.append(
                f"the daemon command in {config_path} ({exe or 'empty'}) does not exist, "
                "so the plugin cannot start maskd. Fix: `maskd install-plugins`"
            )
    else:
        report.notes.append(
            f"sandboxed: reads {config.get('connection_file')}; the daemon must run on "
            "its own (autostart entry)"
        )
    return report


def inspect_all(plat: Platform) -> list[PluginReport]:
    return [inspect_target(plat, t) for t in editor_targets(plat) if t.found or t.plugin_dir.is_dir()]


def install_plugins(
    plat: Platform,
    manifest: Manifest,
    daemon_command: list[str],
    *,
    editors: list[str] | None = None,
    service: str = "auto",
    start: bool = True,
    python: str | None = None,
    out=print,
) -> list[EditorTarget]:
    """Install into every editor found (``editors`` filters); ``service``: auto | yes | no.

    Saves the manifest. Returns the locations installed into (empty when no editor was found).
    """
    from maskd.installers.service import install_service

    targets = editor_targets(plat, editors, found_only=True)
    # an autostart entry an earlier run wrote is rewritten too (it may name modules of an older layout)
    had_service = bool(manifest.entries_of("service"))
    if not targets:
        out("No GIMP 3 or Krita found. Looked for:")
        for t in editor_targets(plat, editors):
            out(f"  {t.label}: {t.root}")
        out(
            "Install an editor (or start it once so it creates its settings folder), then run "
            "`maskd install-plugins` again."
        )
        if not (had_service and service != "no"):
            return []
    for target in targets:
        files = install_target(plat, target, manifest, daemon_command)
        extra = f"; enabled in {target.kritarc}" if target.editor == "krita" else ""
        extra += "; sandboxed: connects to the autostarted daemon" if target.sandboxed else ""
        out(f"{target.label}: installed {len(files)} files in {target.plugin_dir}{extra}")
    settings = manifest.settings
    settings["daemon_command"] = [str(c) for c in daemon_command]
    settings["editors"] = sorted({*settings.get("editors", []), *(t.key for t in targets)})
    sandboxed = [t for t in targets if t.sandboxed]
    if service == "yes" or ((sandboxed or had_service) and service == "auto"):
        lines = install_service(
            plat,
            manifest,
            daemon_command,
            python=python or sys.executable,
            mirrors=[t.connection_file_copy for t in sandboxed],
            start=start,
        )
        out("Daemon autostart: " + "; ".join(lines))
    elif sandboxed:
        from maskd.installers.service import supervisor_command

        command = supervisor_command(
            Path(python or sys.executable),
            list(daemon_command) + ["--foreground"],
            [t.connection_file_copy for t in sandboxed],
        )
        out(
            "Sandboxed editors need a running daemon whose connection file they can see (no autostart: "
            "--no-service). Run this yourself before using them:\n    " + " ".join(command)
        )
    manifest.save()
    return targets
