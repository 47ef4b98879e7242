"""Copying the editor plugins into an editor's profile, the way users get them.

The plugins are plain files: installing one is copying its folder, putting the shared
standard-library client (``plugins/maskd_client.py``) next to it and writing ``maskd_config.json``
(how to reach or start the daemon). The editor tests install through these same functions, so what
is tested is what users get. Krita also needs the plugin enabled in ``kritarc``, which is edited
line by line so every other setting survives.
"""

from __future__ import annotations

import json
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
    from maskd.core.atomicfile import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"), mode=mode)  # a random, exclusive temporary


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


def _read_ini_lines(path: Path) -> tuple[list[str], str, bool]:
    """(lines, newline style, ends with a newline): the file's own conventions are kept on rewrite."""
    raw = path.read_bytes().decode("utf-8", "surrogateescape") if path.exists() else ""
    newline = "\r\n" if "\r\n" in raw else "\n"
    lines = raw.split(newline) if raw else []
    trailing = raw.endswith(newline) or not raw
    if lines and trailing:
        lines.pop()
    return lines, newline, trailing


def _write_ini_lines(path: Path, lines: list[str], newline: str, trailing: bool) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    data = (newline.join(lines) + (newline if trailing and lines else "")).encode("utf-8", "surrogateescape")
    from maskd.core.atomicfile import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=mode)


def _is_section_header(stripped: str) -> bool:
    return stripped.startswith("[") and stripped.endswith("]")


def get_kritarc_value(path: Path, section: str, key: str) -> str | None:
    """The value of ``key`` in ``[section]`` of a Qt INI file, or None."""
    lines, _, _ = _read_ini_lines(Path(path))
    in_section = False
    for line in lines:
        stripped = line.strip()
        if _is_section_header(stripped):
            in_section = stripped == f"[{section}]"
        elif in_section and "=" in stripped and stripped.split("=", 1)[0].strip() == key:
            return stripped.split("=", 1)[1].strip()
    return None


def remove_empty_ini_section(path: Path, section: str) -> bool:
    """Drop ``[section]`` when it holds no keys any more (and the blank line that separated it)."""
    path = Path(path)
    lines, newline, trailing = _read_ini_lines(path)
    header = f"[{section}]"
    for i, line in enumerate(lines):
        if line.strip() != header:
            continue
        end = i + 1
        while end < len(lines) and not _is_section_header(lines[end].strip()):
            if lines[end].strip():
                return False
            end += 1
        start = i - 1 if i > 0 and not lines[i - 1].strip() and end == len(lines) else i
        del lines[start:end]
        _write_ini_lines(path, lines, newline, trailing)
        return True
    return False


def set_kritarc_value(path: Path, section: str, key: str, value: str | None) -> None:
    """Set (or with ``value=None`` remove) ``key`` in ``[section]`` of a Qt INI file, touching nothing else.

    configparser would reorder, re-case and drop comments of a file with hundreds of settings;
    this edits only the one line (adding the section at the end if it is missing). The file's
    newline style (LF or CRLF), a missing final newline and any undecodable bytes are kept.
    """
    path = Path(path)
    lines, newline, trailing = _read_ini_lines(path)
    header = f"[{section}]"
    out: list[str] = []
    in_section = seen_section = done = False
    for line in lines:
        stripped = line.strip()
        if _is_section_header(stripped):
            if in_section and not done and value is not None:
                blanks = []
                while out and not out[-1].strip():
                    blanks.append(out.pop())
                out.append(f"{key}={value}")
                out.extend(reversed(blanks))
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
        blanks = []
        if in_section:
            while out and not out[-1].strip():
                blanks.append(out.pop())
        elif not seen_section:
            if out and out[-1].strip():
                out.append("")
            out.append(header)
        out.append(f"{key}={value}")
        out.extend(reversed(blanks))
        trailing = True
    _write_ini_lines(path, out, newline, trailing)
