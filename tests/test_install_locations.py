"""Where maskd and the editors live on Linux, macOS and Windows — tested by parameter on Linux.

Windows and macOS layouts are laid out under a temporary folder (``APPDATA``/``LOCALAPPDATA`` and
the home folder point there), so the same install/uninstall code runs against them for real.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest
from maskd.installers import editors
from maskd.installers.locations import _gimp_series_from_text, editor_targets
from maskd.installers.manifest import Manifest, undo
from maskd.installers.service import service_text

from tests.helpers import DAEMON, EXPECTED, plat_for, snapshot


@pytest.mark.parametrize("system", ["linux", "darwin", "windows"])
def test_paths_per_platform(tmp_path, system):
    plat = plat_for(tmp_path, system)
    home = plat.home
    gimp_base, krita, kritarc, data, python, service = EXPECTED[system]
    targets = {t.key: t for t in editor_targets(plat)}
    flavour = {"linux": "native", "darwin": "macos", "windows": "windows"}[system]
    gimp, kr = targets[f"gimp-3.0-{flavour}"], targets[f"krita-{flavour}"]
    assert gimp.root == home / gimp_base / "3.0"
    assert gimp.plugin_dir == home / gimp_base / "3.0" / "plug-ins" / "maskd-remove-background"
    assert kr.plugin_dir == home / krita / "pykrita" / "maskd"
    assert kr.kritarc == home / kritarc
    assert not gimp.found and not kr.found
    assert plat.data_dir == home / data
    assert plat.venv_python() == home / python
    assert plat.service_file() == home / service
    assert (plat.user_bin_dir is None) == (system == "windows")
    if system == "windows":
        assert plat.default_connection_file() == home / "AppData/Local/Temp/maskd-ada/connection.json"
        assert plat.venv_maskd().name == "maskd.exe"


def test_linux_xdg_overrides_and_sandboxed_layouts(tmp_path):
    plat = plat_for(tmp_path, "linux")
    plat.env.update(
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        MASKD_HOME=str(tmp_path / "maskd-home"),
    )
    targets = {t.key: t for t in editor_targets(plat)}
    assert targets["gimp-3.0-native"].root == tmp_path / "cfg" / "GIMP" / "3.0"
    assert targets["krita-native"].kritarc == tmp_path / "cfg" / "kritarc"
    assert targets["krita-native"].root == tmp_path / "data" / "krita"
    assert plat.data_dir == tmp_path / "maskd-home"
    home = plat.home
    flat = targets["krita-flatpak"]
    assert flat.sandboxed and flat.kritarc == home / ".var/app/org.kde.krita/config/kritarc"
    assert flat.plugin_dir == home / ".var/app/org.kde.krita/data/krita/pykrita/maskd"
    assert flat.connection_file_copy == home / ".var/app/org.kde.krita/data/maskd/connection.json"
    snap = targets["krita-snap"]
    assert snap.sandboxed and snap.plugin_dir == home / "snap/krita/current/.local/share/krita/pykrita/maskd"
    assert snap.kritarc == home / "snap/krita/current/.config/kritarc"
    assert snap.connection_file_copy == home / "snap/krita/common/maskd/connection.json"
    assert (
        targets["gimp-3.0-flatpak"].plugin_dir
        == home / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins/maskd-remove-background"
    )
    assert not snap.found
    (plat.snap_dir / "krita").mkdir(parents=True)
    assert {t.key: t for t in editor_targets(plat)}["krita-snap"].found


@pytest.mark.parametrize("system", ["darwin", "windows"])
def test_install_and_uninstall_in_macos_and_windows_layouts(tmp_path, system):
    plat = plat_for(tmp_path, system)
    gimp_base, krita, kritarc, *_ = EXPECTED[system]
    (plat.home / gimp_base / "3.0").mkdir(parents=True)
    (plat.home / krita).mkdir(parents=True)
    (plat.home / kritarc).parent.mkdir(parents=True, exist_ok=True)
    (plat.home / kritarc).write_bytes(b"[General]\r\nfoo=1\r\n")  # Qt on Windows writes CRLF
    before = snapshot(plat.home)
    targets = editors.install_plugins(
        plat, Manifest.load(plat.manifest_path), DAEMON, start=False, out=lambda *_: None
    )
    assert len(targets) == 2 and not any(t.sandboxed for t in targets)
    plugin = plat.home / gimp_base / "3.0/plug-ins/maskd-remove-background"
    assert (plugin / "maskd-remove-background.py").is_file()
    assert (plat.home / krita / "pykrita" / "maskd.desktop").is_file()
    assert (
        plat.home / kritarc
    ).read_bytes() == b"[General]\r\nfoo=1\r\n\r\n[python]\r\nenable_maskd=true\r\n"
    assert not plat.service_file().exists(), "no sandboxed editor: no autostart entry"
    undo(Manifest.load(plat.manifest_path), run_commands=False)
    assert snapshot(plat.home) == before


def test_editors_found_by_their_programs_on_macos_and_windows(tmp_path):
    mac = plat_for(tmp_path / "mac", "darwin")
    app = mac.applications_dir / "GIMP.app" / "Contents"
    app.mkdir(parents=True)
    (app / "Info.plist").write_bytes(plistlib.dumps({"CFBundleShortVersionString": "3.2.1"}))
    (mac.applications_dir / "krita.app").mkdir()
    found = {t.key: t for t in editor_targets(mac, found_only=True)}
    assert set(found) == {"gimp-3.2-macos", "krita-macos"}
    assert found["gimp-3.2-macos"].root == mac.home / "Library/Application Support/GIMP/3.2"

    win = plat_for(tmp_path / "win", "windows")
    exe = Path(win.env["ProgramFiles"]) / "GIMP 3" / "bin" / "gimp-3.0.exe"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"MZ")
    found = {t.key: t for t in editor_targets(win, found_only=True)}
    assert set(found) == {"gimp-3.0-windows"}
    assert "gimp-3.0.exe" in found["gimp-3.0-windows"].found_by


@pytest.mark.parametrize(
    "text, series",
    [
        ("GNU Image Manipulation Program version 3.0.4", "3.0"),
        ("GNU Image Manipulation Program version 3.2.0", "3.2"),
        ("Ref: app/org.gimp.GIMP/x86_64/stable\nversion 3.0.6\n", "3.0"),
        ("GNU Image Manipulation Program version 2.10.38", "2.10"),
        ("", ""),
    ],
)
def test_gimp_version_to_profile_series(text, series):
    assert _gimp_series_from_text(text) == series


def test_gimp2_only_is_not_a_target(tmp_path):
    plat = plat_for(tmp_path, "linux")
    (plat.home / ".config" / "GIMP" / "2.10").mkdir(parents=True)
    assert editor_targets(plat, ["gimp"], found_only=True) == []


@pytest.mark.parametrize("system", ["linux", "darwin", "windows"])
def test_autostart_entry_text(tmp_path, system):
    plat = plat_for(tmp_path, system)
    command = ["/opt/maskd dir/bin/maskd", "serve", "--model", "lite", "--foreground"]
    text = service_text(plat, command, log_file=tmp_path / "daemon.log")
    if system == "linux":
        assert 'ExecStart="/opt/maskd dir/bin/maskd" serve --model lite --foreground' in text
        assert "WantedBy=default.target" in text
    elif system == "darwin":
        plist = plistlib.loads(text.encode())
        assert plist["ProgramArguments"] == command and plist["RunAtLoad"] is True
        assert plist["Label"] == "org.maskd.daemon"
    else:
        assert 'start "maskd" /min "/opt/maskd dir/bin/maskd" serve --model lite --foreground' in text
        assert text.count("\r\n") == text.count("\n")
