"""Copying the editor plugins into an editor's profile, the way users get them.

The plugins are plain files: installing one is copying its folder, putting the shared
standard-library client (``plugins/maskd_client.py``) next to it and writing ``maskd_config.json``
(how to reach or start the daemon). The editor tests install through these same functions, so what
is tested is what users get. Krita also needs the plugin enabled in ``kritarc``, which is edited
line by line so every other setting survives.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
CLIENT_MODULE = "maskd_client.py"
CONFIG_NAME = "maskd_config.json"
GIMP_PLUGIN_NAME = "maskd-remove-background"
KRITA_PLUGIN_NAME = "maskd"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", CONFIG_NAME)


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_plugin_config(folder: Path, config: dict) -> Path:
    """``maskd_config.json``: daemon_command, connection_file, autostart, maskd_version."""
    path = Path(folder) / CONFIG_NAME
    _write_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def install_gimp_plugin(profile_dir: Path, config: dict, source: Path | None = None) -> list[Path]:
    """Install into a GIMP 3 profile (e.g. ``~/.config/GIMP/3.0``); returns the files written.

    GIMP only runs ``plug-ins/NAME/NAME.py`` (folder name = file name) when it is executable.
    """
    source = Path(source or PLUGINS_DIR / "gimp" / GIMP_PLUGIN_NAME)
    dest = Path(profile_dir) / "plug-ins" / GIMP_PLUGIN_NAME
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=_IGNORE)
    shutil.copy2(PLUGINS_DIR / CLIENT_MODULE, dest / CLIENT_MODULE)
    main = dest / f"{GIMP_PLUGIN_NAME}.py"
    main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    write_plugin_config(dest, config)
    return _files_under(dest)


def install_krita_plugin(
    data_dir: Path, kritarc: Path, config: dict, source: Path | None = None
) -> list[Path]:
    """Install into a Krita resource folder (e.g. ``~/.local/share/krita``) and enable it in kritarc."""
    source = Path(source or PLUGINS_DIR / "krita")
    pykrita = Path(data_dir) / "pykrita"
    dest = pykrita / KRITA_PLUGIN_NAME
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source / KRITA_PLUGIN_NAME, dest, ignore=_IGNORE)
    desktop = pykrita / f"{KRITA_PLUGIN_NAME}.desktop"
    shutil.copy2(source / f"{KRITA_PLUGIN_NAME}.desktop", desktop)
    shutil.copy2(PLUGINS_DIR / CLIENT_MODULE, dest / CLIENT_MODULE)
    write_plugin_config(dest, config)
    set_kritarc_value(Path(kritarc), "python", f"enable_{KRITA_PLUGIN_NAME}", "true")
    return [desktop] + _files_under(dest)


def set_kritarc_value(path: Path, section: str, key: str, value: str | None) -> None:
    """Set (or with ``value=None`` remove) ``key`` in ``[section]`` of a Qt INI file, touching nothing else.

    configparser would reorder, re-case and drop comments of a file with hundreds of settings;
    this edits only the one line (adding the section at the end if it is missing).
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    header = f"[{section}]"
    out: list[str] = []
    in_section = seen_section = done = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if in_section and not done and value is not None:
                while out and not out[-1].strip():
                    out.pop()
                out.append(f"{key}={value}")
                out.append("")
                done = True
            in_section = stripped == header
            seen_section = seen_section or in_section
        elif in_section and stripped.split("=", 1)[0].strip() == key:
            if value is not None and not done:
                out.append(f"{key}={value}")
                done = True
            continue
        out.append(line)
    if not done and value is not None:
        if in_section:
            while out and not out[-1].strip():
                out.pop()
        elif not seen_section:
            if out and out[-1].strip():
                out.append("")
            out.append(header)
        out.append(f"{key}={value}")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    _write_atomic(path, "\n".join(out) + "\n", mode=mode)
