"""The install manifest: a record of everything the installer put in place, so uninstall removes exactly that.

One JSON file (``<maskd data folder>/install.json``) lists what was created: folders (removed only
if empty), folders maskd owns whole (its venv, the plugin folders), files, settings edited in
other programs' files (Krita's ``kritarc``: the previous value and, while nobody else has touched
the file, its exact original text), and the autostart entry. Re-running the installer merges into
it, keeping what the *first* install found, so uninstall restores the state before maskd.
Standard library only (used by the bootstrap installer before maskd's environment exists).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

# imported now, not when needed: uninstall removes the venv this code may be running from
from maskd.installers.plugins import remove_empty_ini_section, set_kritarc_value

FORMAT = 1


def _norm(path) -> str:
    return os.path.abspath(os.fspath(path))


class Manifest:
    def __init__(self, path: Path, data: dict | None = None):
        self.path = Path(path)
        self.data = data or {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "settings": {},
            "entries": [],
        }

    # -- persistence
    @classmethod
    def load(cls, path: Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            from maskd.core.errors import MaskdError  # only reached inside maskd's environment

            raise MaskdError(
                f"the install manifest {path} is unreadable ({exc}); remove it to start afresh "
                "(uninstall then cannot know what an earlier install put in place)"
            ) from None
        data.setdefault("entries", [])
        data.setdefault("settings", {})
        return cls(path, data)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def save(self) -> None:
        self.ensure_dir(self.path.parent)
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        from maskd.core.atomicfile import write_atomic

        write_atomic(self.path, (json.dumps(self.data, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    # -- recording
    @property
    def entries(self) -> list[dict]:
        return self.data["entries"]

    @property
    def settings(self) -> dict:
        return self.data["settings"]

    def _find(self, kind: str, path, **match) -> dict | None:
        path = _norm(path)
        for entry in self.entries:
            if (
                entry["kind"] == kind
                and entry["path"] == path
                and all(entry.get(k) == v for k, v in match.items())
            ):
                return entry
        return None

    def add(self, kind: str, path, **fields) -> dict:
        """Record ``path`` (once); returns its entry."""
        entry = self._find(kind, path, **{k: v for k, v in fields.items() if k in ("section", "key")})
        if entry is None:
            entry = {"kind": kind, "path": _norm(path), **fields}
            self.entries.append(entry)
        return entry

    def remove_entry(self, entry: dict) -> None:
        self.entries.remove(entry)

    def ensure_dir(self, path) -> Path:
        """Create ``path`` with its missing parents, recording each folder this created."""
        path = Path(_norm(path))
        missing = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        path.mkdir(parents=True, exist_ok=True)
        for folder in missing:
            self.add("dir", folder)
        return path

    def owns(self, path) -> bool:
        return any(e["path"] == _norm(path) and e["kind"] in ("tree", "file") for e in self.entries)

    def entries_of(self, kind: str) -> list[dict]:
        return [e for e in self.entries if e["kind"] == kind]


# --------------------------------------------------------------------------- undo


def _remove_path(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    if path.is_dir():
        shutil.rmtree(path)
        return True
    return False


def _run(args: list[str]) -> None:
    try:
        subprocess.run(args, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        pass


def _undo_service(entry: dict, run_commands: bool) -> None:
    if not run_commands:
        return
    system = entry.get("system")
    if system == "linux" and shutil.which("systemctl"):
        _run(["systemctl", "--user", "disable", "--now", entry.get("name", "maskd") + ".service"])
    elif system == "darwin" and shutil.which("launchctl"):
        _run(["launchctl", "unload", entry["path"]])


def _undo_ini(entry: dict, report: list[str]) -> None:
    path = Path(entry["path"])
    if not path.exists():
        return
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    if entry.get("original") is not None and text == entry.get("written"):
        if entry.get("file_existed", True):
            from maskd.core.atomicfile import write_atomic

            write_atomic(path, entry["original"].encode("utf-8", "surrogateescape"))  # keeps the mode
        else:
            path.unlink()
        report.append(f"restored {path}")
        return
    # the editor rewrote the file since: take back only our key, leave everything else as it is now
    set_kritarc_value(path, entry["section"], entry["key"], entry.get("previous"))
    if not entry.get("section_existed", True):
        remove_empty_ini_section(path, entry["section"])
    if not entry.get("file_existed", True) and not path.read_text(encoding="utf-8").strip():
        path.unlink()
    report.append(f"removed {entry['key']} from [{entry['section']}] in {path}")


def undo(manifest: Manifest, run_commands: bool = True, keep=()) -> list[str]:
    """Remove everything ``manifest`` records (except entries whose kind is in ``keep``); returns a report."""
    report: list[str] = []
    kept: list[dict] = []
    entries = list(manifest.entries)
    for entry in entries:
        if entry["kind"] == "service" and "service" not in keep:
            _undo_service(entry, run_commands)
    for entry in entries:
        if entry["kind"] in keep:
            kept.append(entry)
        elif entry["kind"] == "ini":
            _undo_ini(entry, report)
    # maskd's own folders (the venv this may be running from) go last
    removable = [
        e
        for e in entries
        if e["kind"] in ("file", "tree", "service", "hf_cache", "weights") and e["kind"] not in keep
    ]
    for entry in sorted(removable, key=lambda e: e["kind"] == "tree"):
        path = Path(entry["path"])
        if _remove_path(path):
            report.append(f"removed {path}")
    if manifest.path.exists():
        manifest.path.unlink()
    for entry in sorted(manifest.entries_of("dir"), key=lambda e: len(Path(e["path"]).parts), reverse=True):
        path = Path(entry["path"])
        try:
            path.rmdir()  # only if empty: a folder someone else has since put files in stays
            report.append(f"removed empty folder {path}")
        except OSError:
            pass
    if kept:
        manifest.data["entries"] = kept + [e for e in manifest.entries_of("dir") if Path(e["path"]).exists()]
        manifest.save()
    return report
