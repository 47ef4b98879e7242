"""Where things live on Linux, macOS and Windows: maskd's own folders and every editor's plugin folders.

Everything is computed from a ``Platform`` (system name, home folder, environment), never from the
running process directly, so the macOS and Windows logic is tested on Linux by parameter and the
install tests run in a throw-away HOME. Standard library only: the bootstrap installer imports this
with the system Python before maskd's own environment exists.
"""

from __future__ import annotations

import functools
import os
import plistlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

GIMP_FLATPAK_ID = "org.gimp.GIMP"
KRITA_FLATPAK_ID = "org.kde.krita"
GIMP_PROFILE_RE = re.compile(r"^3\.\d+$")  # GIMP 3.0, 3.2, ... each have their own profile folder
GIMP_DEFAULT_SERIES = "3.0"  # profile used when GIMP is installed but its version cannot be read
SERVICE_NAME = "maskd"
LAUNCHD_LABEL = "org.maskd.daemon"


def _system_name(name: str | None = None) -> str:
    name = (name or sys.platform).lower()
    if name.startswith("win"):
        return "windows"
    if name.startswith("darwin") or name == "macos":
        return "darwin"
    return "linux"


@dataclass
class Platform:
    """The machine as the installer sees it.

    ``probe=False`` (``MASKD_INSTALL_NO_PROBE=1``) neither looks up nor runs other programs (editors,
    ``flatpak``, ``systemctl``): editors are found by their folders only. For tests in a throw-away HOME.
    """

    system: str  # "linux" | "darwin" | "windows"
    home: Path
    env: Mapping[str, str] = field(default_factory=dict)
    flatpak_system_dir: Path = Path("/var/lib/flatpak")
    snap_dir: Path = Path("/snap")
    applications_dir: Path = Path("/Applications")
    probe: bool = True

    @classmethod
    def current(cls, **overrides) -> Platform:
        env = dict(os.environ)
        kwargs = dict(system=_system_name(), home=Path(os.path.expanduser("~")), env=env)
        if env.get("MASKD_FLATPAK_SYSTEM_DIR"):
            kwargs["flatpak_system_dir"] = Path(env["MASKD_FLATPAK_SYSTEM_DIR"])
        if env.get("MASKD_SNAP_DIR"):
            kwargs["snap_dir"] = Path(env["MASKD_SNAP_DIR"])
        if env.get("MASKD_APPLICATIONS_DIR"):
            kwargs["applications_dir"] = Path(env["MASKD_APPLICATIONS_DIR"])
        if env.get("MASKD_INSTALL_NO_PROBE") == "1":
            kwargs["probe"] = False
        kwargs.update(overrides)
        kwargs["system"] = _system_name(kwargs["system"])
        kwargs["home"] = Path(kwargs["home"])
        return cls(**kwargs)

    # -- environment-derived folders
    def _env_dir(self, name: str, default: Path) -> Path:
        value = self.env.get(name)
        return Path(value) if value and os.path.isabs(value) else default

    @property
    def config_home(self) -> Path:
        return self._env_dir("XDG_CONFIG_HOME", self.home / ".config")

    @property
    def data_home(self) -> Path:
        return self._env_dir("XDG_DATA_HOME", self.home / ".local" / "share")

    @property
    def appdata(self) -> Path:  # Windows %APPDATA% (Roaming)
        return self._env_dir("APPDATA", self.home / "AppData" / "Roaming")

    @property
    def local_appdata(self) -> Path:  # Windows %LOCALAPPDATA%
        return self._env_dir("LOCALAPPDATA", self.home / "AppData" / "Local")

    @property
    def mac_support(self) -> Path:
        return self.home / "Library" / "Application Support"

    # -- maskd's own folders
    @property
    def data_dir(self) -> Path:
        """maskd's own folder: its virtual environment, copied weights and the install manifest."""
        if self.env.get("MASKD_HOME"):
            return Path(self.env["MASKD_HOME"])
        if self.system == "windows":
            return self.local_appdata / "maskd"
        if self.system == "darwin":
            return self.mac_support / "maskd"
        return self.data_home / "maskd"

    @property
    def venv_dir(self) -> Path:
        return self.data_dir / "venv"

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "install.json"

    def venv_python(self, venv: Path | None = None) -> Path:
        venv = Path(venv or self.venv_dir)
        return venv / "Scripts" / "python.exe" if self.system == "windows" else venv / "bin" / "python"

    def venv_maskd(self, venv: Path | None = None) -> Path:
        venv = Path(venv or self.venv_dir)
        return venv / "Scripts" / "maskd.exe" if self.system == "windows" else venv / "bin" / "maskd"

    @property
    def user_bin_dir(self) -> Path | None:
        """Where a ``maskd`` command link goes (none on Windows: the full path is shown instead)."""
        return None if self.system == "windows" else self.home / ".local" / "bin"

    def default_connection_file(self) -> Path:
        """The daemon's connection file, by the same rule as ``maskd_client.default_connection_file``."""
        if self.env.get("MASKD_CONNECTION_FILE"):
            return Path(self.env["MASKD_CONNECTION_FILE"])
        runtime = self.env.get("XDG_RUNTIME_DIR")
        if self.system != "windows" and runtime and os.path.isdir(runtime):
            return Path(runtime) / "maskd" / "connection.json"
        if self.system == "windows":
            temp = self.env.get("TEMP") or self.env.get("TMP") or str(self.local_appdata / "Temp")
            user = self.env.get("USERNAME") or "user"
            return Path(temp) / f"maskd-{user}" / "connection.json"
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        return Path(self.env.get("TMPDIR") or tempfile.gettempdir()) / f"maskd-{uid}" / "connection.json"

    # -- autostart of the daemon with the user session (needed by sandboxed editors)
    def service_file(self) -> Path:
        if self.system == "windows":
            return (
                self.appdata
                / "Microsoft"
                / "Windows"
                / "Start Menu"
                / "Programs"
                / "Startup"
                / f"{SERVICE_NAME}.cmd"
            )
        if self.system == "darwin":
            return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        return self.config_home / "systemd" / "user" / f"{SERVICE_NAME}.service"

    # -- programs
    def which(self, name: str) -> str | None:
        """A program on PATH; with ``probe`` off editors are found by their folders only."""
        return shutil.which(name, path=self.env.get("PATH", "")) if self.probe else None

    def run_probe(self, args: list[str], timeout: float = 15.0) -> str:
        """Output of a short editor command (``--version``), or "" when probing is off or it fails."""
        if not self.probe:
            return ""
        try:
            r = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return (r.stdout or "") + (r.stderr or "")

    def flatpak_installed(self, app_id: str) -> Path | None:
        for root in (self.data_home / "flatpak", self.flatpak_system_dir):
            if (root / "app" / app_id).is_dir():
                return root / "app" / app_id
        return None


# --------------------------------------------------------------------------- editors


@dataclass
class EditorTarget:
    """One place an editor loads plugins from (one editor can have several: native + Flatpak, 3.0 + 3.2)."""

    editor: str  # "gimp" | "krita"
    flavour: str  # "native" | "flatpak" | "snap" | "windows" | "macos"
    root: Path  # GIMP: the profile folder (…/GIMP/3.0); Krita: the resource folder (…/krita)
    kritarc: Path | None = None
    sandboxed: bool = False  # cannot start a host program: the daemon must start with the session
    sandbox_dir: Path | None = None  # a folder the sandbox sees at the same path (connection file copy)
    found_by: str = ""  # what showed the editor is there ("" = not found)
    series: str = ""  # GIMP profile series ("3.0", "3.2")

    @property
    def found(self) -> bool:
        return bool(self.found_by)

    @property
    def label(self) -> str:
        name = f"GIMP {self.series}" if self.editor == "gimp" else "Krita"
        flavour = {"native": "", "windows": "", "macos": "", "flatpak": " (Flatpak)", "snap": " (Snap)"}
        return name + flavour.get(self.flavour, f" ({self.flavour})")

    @property
    def key(self) -> str:
        """A stable id for the manifest and ``--editors`` (e.g. ``gimp-3.0-flatpak``)."""
        parts = [self.editor] + ([self.series] if self.series else []) + [self.flavour]
        return "-".join(parts)

    @property
    def plugin_dir(self) -> Path:
        """The folder holding the plugin's code and its ``maskd_config.json``."""
        if self.editor == "gimp":
            return self.root / "plug-ins" / "maskd-remove-background"
        return self.root / "pykrita" / "maskd"

    @property
    def connection_file_copy(self) -> Path | None:
        """Sandboxed editors read this copy of the daemon's connection file (see ``installers.service``)."""
        return self.sandbox_dir / "connection.json" if self.sandbox_dir else None


def _gimp_series_from_text(text: str) -> str:
    match = re.search(r"version\s+(\d+)\.(\d+)", text, re.IGNORECASE) or re.search(r"(\d+)\.(\d+)\.\d+", text)
    if not match:
        return ""
    major, minor = int(match.group(1)), int(match.group(2))
    return f"{major}.{minor}"


def _mac_app_version(app: Path) -> str:
    try:
        with open(app / "Contents" / "Info.plist", "rb") as fh:
            return str(plistlib.load(fh).get("CFBundleShortVersionString", ""))
    except (OSError, ValueError, plistlib.InvalidFileException):
        return ""


def _gimp_program(plat: Platform, flavour: str) -> tuple[str, str]:
    """(how GIMP was found, its profile series or "") for one flavour; ("", "") when absent."""
    if flavour == "flatpak":
        app = plat.flatpak_installed(GIMP_FLATPAK_ID)
        if not app:
            return "", ""
        text = plat.run_probe(["flatpak", "info", GIMP_FLATPAK_ID]) if plat.which("flatpak") else ""
        series = _gimp_series_from_text(text.replace("Version:", "version"))
        return f"Flatpak {GIMP_FLATPAK_ID} ({app})", series
    if flavour == "native":
        for name in ("gimp-3.2", "gimp-3.0", "gimp-3", "gimp"):
            exe = plat.which(name)
            if exe:
                series = name[5:] if re.fullmatch(r"gimp-3\.\d+", name) else ""
                series = series or _gimp_series_from_text(plat.run_probe([exe, "--version"]))
                return f"program {exe}", series
        return "", ""
    if flavour == "windows":
        for base in (
            plat.env.get("ProgramFiles"),
            plat.env.get("ProgramW6432"),
            str(plat.local_appdata / "Programs"),
        ):
            if not base:
                continue
            for exe in sorted(Path(base).glob("GIMP 3*/bin/gimp-3*.exe"), reverse=True):
                return f"program {exe}", _gimp_series_from_text(exe.stem.replace("gimp-", "version ") + ".0")
        return "", ""
    for app in (plat.applications_dir / "GIMP.app", plat.home / "Applications" / "GIMP.app"):
        if app.is_dir():
            return f"application {app}", _gimp_series_from_text(_mac_app_version(app))
    return "", ""


def _gimp_targets(plat: Platform) -> list[EditorTarget]:
    if plat.system == "windows":
        layouts = [("windows", plat.appdata / "GIMP", None)]
    elif plat.system == "darwin":
        layouts = [("macos", plat.mac_support / "GIMP", None)]
    else:
        flatpak_app = plat.home / ".var" / "app" / GIMP_FLATPAK_ID
        layouts = [
            ("native", plat.config_home / "GIMP", None),
            ("flatpak", flatpak_app / "config" / "GIMP", flatpak_app / "data" / "maskd"),
        ]
    targets = []
    for flavour, base, sandbox_dir in layouts:
        # one location of this layout: its folder, what found it and the GIMP series
        target = functools.partial(
            EditorTarget, "gimp", flavour, sandboxed=sandbox_dir is not None, sandbox_dir=sandbox_dir
        )
        profiles = sorted(
            (p for p in base.glob("3.*") if p.is_dir() and GIMP_PROFILE_RE.match(p.name)),
            key=lambda p: tuple(int(x) for x in p.name.split(".")),
        )
        found_program, series = _gimp_program(plat, flavour)
        for profile in profiles:
            targets.append(target(profile, found_by=f"profile folder {profile}", series=profile.name))
        if found_program and not profiles:
            if series and not GIMP_PROFILE_RE.match(series):
                # GIMP 2.x: maskd needs GIMP 3; report it as not found with the reason in doctor
                targets.append(target(base / GIMP_DEFAULT_SERIES, series=f"{series} (unsupported)"))
                continue
            series = series or GIMP_DEFAULT_SERIES
            targets.append(target(base / series, found_by=found_program, series=series))
        if not profiles and not found_program:
            targets.append(target(base / GIMP_DEFAULT_SERIES, series=GIMP_DEFAULT_SERIES))
    return targets


def _krita_targets(plat: Platform) -> list[EditorTarget]:
    if plat.system == "windows":
        program = ""
        for base in (plat.env.get("ProgramFiles"), plat.env.get("ProgramW6432")):
            exe = Path(base) / "Krita (x64)" / "bin" / "krita.exe" if base else None
            if exe and exe.exists():
                program = f"program {exe}"
        layouts = [("windows", plat.appdata / "krita", plat.local_appdata / "kritarc", None, program)]
    elif plat.system == "darwin":
        program = ""
        for app in (plat.applications_dir / "krita.app", plat.home / "Applications" / "krita.app"):
            if app.is_dir():
                program = f"application {app}"
        layouts = [
            (
                "macos",
                plat.mac_support / "krita",
                plat.home / "Library" / "Preferences" / "kritarc",
                None,
                program,
            )
        ]
    else:
        exe = plat.which("krita")
        flatpak_app = plat.home / ".var" / "app" / KRITA_FLATPAK_ID
        flatpak_found = plat.flatpak_installed(KRITA_FLATPAK_ID)
        snap_user = plat.home / "snap" / "krita"
        snap_found = (plat.snap_dir / "krita").is_dir()
        layouts = [
            (
                "native",
                plat.data_home / "krita",
                plat.config_home / "kritarc",
                None,
                f"program {exe}" if exe else "",
            ),
            (
                "flatpak",
                flatpak_app / "data" / "krita",
                flatpak_app / "config" / "kritarc",
                flatpak_app / "data" / "maskd",
                f"Flatpak {KRITA_FLATPAK_ID} ({flatpak_found})" if flatpak_found else "",
            ),
            (
                "snap",
                snap_user / "current" / ".local" / "share" / "krita",
                snap_user / "current" / ".config" / "kritarc",
                snap_user / "common" / "maskd",
                f"Snap {plat.snap_dir / 'krita'}" if snap_found else "",
            ),
        ]
    targets = []
    for flavour, root, kritarc, sandbox_dir, program in layouts:
        found = ""
        if root.is_dir():
            found = f"resource folder {root}"
        elif kritarc.is_file():
            found = f"settings file {kritarc}"
        elif program:
            found = program
        targets.append(
            EditorTarget(
                "krita",
                flavour,
                root,
                kritarc=kritarc,
                sandboxed=sandbox_dir is not None,
                sandbox_dir=sandbox_dir,
                found_by=found,
            )
        )
    return targets


def editor_targets(
    plat: Platform, editors: list[str] | None = None, found_only: bool = False
) -> list[EditorTarget]:
    """Every plugin location maskd knows for this platform (``found_only``: only editors that are there).

    "Found" means the editor's profile/resource folder or settings file exists, or the program (or
    its Flatpak/Snap) is installed. ``editors`` filters by editor name or target key prefix.
    """
    targets = _gimp_targets(plat) + _krita_targets(plat)
    if editors:
        wanted = [e.strip().lower() for e in editors if e.strip()]
        targets = [t for t in targets if any(t.key.startswith(w) or t.editor == w for w in wanted)]
    if found_only:
        targets = [t for t in targets if t.found]
    return targets
