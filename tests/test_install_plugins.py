"""The plugin step in a throw-away HOME: native and Flatpak layouts, kritarc, re-runs, uninstall.

Real files, real copies of the repo's plugins (through ``installers.plugins``, as the editor tests
use), the real ``maskd install-plugins`` / ``maskd uninstall`` commands in subprocesses.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from maskd.installers import editors, plugins
from maskd.installers.locations import Platform
from maskd.installers.manifest import Manifest, undo

from tests.helpers import (  # noqa: F401
    DAEMON,
    KRITARC,
    REPO,
    cli_env,
    make_home,
    maskd_command,
    platform_for,
    snapshot,
)


def install(plat: Platform) -> list:
    manifest = Manifest.load(plat.manifest_path)
    return editors.install_plugins(
        plat, manifest, DAEMON, start=False, python="/opt/maskd/venv/bin/python", out=lambda *_: None
    )


def test_native_and_flatpak_layouts(tmp_path):
    home = make_home(tmp_path)
    plat = platform_for(tmp_path, home)
    targets = install(plat)
    assert sorted(t.key for t in targets) == [
        "gimp-3.0-flatpak",
        "gimp-3.0-native",
        "krita-flatpak",
        "krita-native",
    ]

    for base in (home / ".config" / "GIMP" / "3.0", home / ".var/app/org.gimp.GIMP/config/GIMP/3.0"):
        folder = base / "plug-ins" / "maskd-remove-background"
        main = folder / "maskd-remove-background.py"
        source = plugins.PLUGINS_DIR / "gimp" / "maskd-remove-background" / "maskd-remove-background.py"
        assert main.read_bytes() == source.read_bytes()
        assert main.stat().st_mode & stat.S_IXUSR, "GIMP only runs executable plug-ins"
        client = plugins.PLUGINS_DIR / "maskd_client.py"
        assert (folder / "maskd_client.py").read_bytes() == client.read_bytes()
    for data in (home / ".local/share/krita", home / ".var/app/org.kde.krita/data/krita"):
        assert (data / "pykrita" / "maskd.desktop").is_file()
        assert (data / "pykrita" / "maskd" / "__init__.py").is_file()
        assert (data / "pykrita" / "maskd" / "maskd_client.py").is_file()

    gimp_plugin = home / ".config/GIMP/3.0/plug-ins/maskd-remove-background"
    native = json.loads((gimp_plugin / "maskd_config.json").read_text())
    assert native == {
        "daemon_command": DAEMON,
        "connection_file": str(tmp_path / "run/maskd/connection.json"),
        "autostart": True,
        "maskd_version": editors.maskd_version(),
    }
    krita_plugin = home / ".var/app/org.kde.krita/data/krita/pykrita/maskd"
    sandboxed = json.loads((krita_plugin / "maskd_config.json").read_text())
    assert sandboxed["autostart"] is False
    assert sandboxed["connection_file"] == str(home / ".var/app/org.kde.krita/data/maskd/connection.json")

    # the Flatpak editors rely on the daemon starting with the session, mirroring its connection file
    unit = (home / ".config/systemd/user/maskd.service").read_text()
    assert "ExecStart=/opt/maskd/venv/bin/python -m maskd.installers.service run" in unit
    assert f"--mirror {home}/.var/app/org.gimp.GIMP/data/maskd/connection.json" in unit
    assert f"--mirror {home}/.var/app/org.kde.krita/data/maskd/connection.json" in unit
    assert unit.rstrip().endswith("WantedBy=default.target")
    assert "-- /opt/maskd/venv/bin/maskd serve --model lite --foreground" in unit
    link = home / ".config/systemd/user/default.target.wants/maskd.service"
    assert os.readlink(link) == "../maskd.service"

    # the Flatpak kritarc did not exist: created with just our section
    assert (home / ".var/app/org.kde.krita/config/kritarc").read_text() == "[python]\nenable_maskd=true\n"


def test_kritarc_other_settings_survive_byte_for_byte(tmp_path):
    home = make_home(tmp_path, layouts=("native",))
    plat = platform_for(tmp_path, home)
    install(plat)
    after = (home / ".config" / "kritarc").read_text(encoding="utf-8")
    expected = KRITARC.replace("enable_ten_brushes=false\n", "enable_ten_brushes=false\nenable_maskd=true\n")
    assert after == expected


def test_kritarc_crlf_and_existing_key(tmp_path):
    path = tmp_path / "kritarc"
    original = (
        b"[General]\r\nfoo=1\r\n\r\n[python]\r\nenable_maskd=false\r\nenable_x=true\r\n\r\n"
        b"[z]\r\n\xff=raw\r\n"
    )
    path.write_bytes(original)
    plugins.set_kritarc_value(path, "python", "enable_maskd", "true")
    assert path.read_bytes() == original.replace(b"enable_maskd=false", b"enable_maskd=true")
    assert plugins.get_kritarc_value(path, "python", "enable_maskd") == "true"
    plugins.set_kritarc_value(path, "python", "enable_maskd", "false")
    assert path.read_bytes() == original


def test_uninstall_leaves_home_as_it_was(tmp_path):
    home = make_home(tmp_path)
    plat = platform_for(tmp_path, home)
    before = snapshot(home)
    install(plat)
    assert snapshot(home) != before
    report = undo(Manifest.load(plat.manifest_path), run_commands=False)
    assert any("restored" in line and "kritarc" in line for line in report)
    assert snapshot(home) == before


def test_rerun_is_idempotent_and_upgrades_in_place(tmp_path):
    home = make_home(tmp_path)
    plat = platform_for(tmp_path, home)
    before = snapshot(home)
    install(plat)
    first_tree, first_manifest = snapshot(home), Manifest.load(plat.manifest_path).entries
    # an older install left a file the new version no longer ships, and an old config
    stale = home / ".config/GIMP/3.0/plug-ins/maskd-remove-background/old_helper.py"
    stale.write_text("# from maskd 0.0.1\n")
    config = stale.parent / "maskd_config.json"
    config.write_text(json.dumps({"maskd_version": "0.0.1", "daemon_command": ["/gone/maskd"]}))
    install(plat)
    assert not stale.exists()
    assert json.loads(config.read_text())["maskd_version"] == editors.maskd_version()
    second_tree = snapshot(home)
    second_tree.pop(".local/share/maskd/install.json")
    first_tree.pop(".local/share/maskd/install.json")
    assert second_tree == first_tree
    assert Manifest.load(plat.manifest_path).entries == first_manifest
    undo(Manifest.load(plat.manifest_path), run_commands=False)
    assert snapshot(home) == before


def test_krita_rewrote_kritarc_between_install_and_uninstall(tmp_path):
    """Krita rewrites kritarc on exit: uninstall then takes back only its key, keeping the user's changes."""
    home = make_home(tmp_path, layouts=("native",))
    plat = platform_for(tmp_path, home)
    install(plat)
    kritarc = home / ".config" / "kritarc"
    rewritten = kritarc.read_text().replace("Theme=Krita dark", "Theme=Krita bright") + "[new]\nadded=1\n"
    kritarc.write_text(rewritten)
    undo(Manifest.load(plat.manifest_path), run_commands=False)
    assert kritarc.read_text() == rewritten.replace("enable_maskd=true\n", "")


def test_kritarc_section_added_then_removed(tmp_path):
    home = make_home(tmp_path, layouts=("native",))
    kritarc = home / ".config" / "kritarc"
    original = "[General]\nfoo=1\n"
    kritarc.write_text(original)
    plat = platform_for(tmp_path, home)
    install(plat)
    assert kritarc.read_text() == "[General]\nfoo=1\n\n[python]\nenable_maskd=true\n"
    kritarc.write_text(kritarc.read_text().replace("foo=1", "foo=2"))  # as if Krita rewrote it
    undo(Manifest.load(plat.manifest_path), run_commands=False)
    assert kritarc.read_text() == "[General]\nfoo=2\n"


def test_nothing_found_installs_nothing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    plat = platform_for(tmp_path, home)
    lines = []
    assert (
        editors.install_plugins(
            plat, Manifest.load(plat.manifest_path), DAEMON, start=False, out=lines.append
        )
        == []
    )
    assert lines[0].startswith("No GIMP 3 or Krita found")
    assert list(home.iterdir()) == []


def test_editor_programs_count_as_found(tmp_path):
    """No profile yet, but the Flatpak is installed (system-wide): install into its default profile."""
    home = tmp_path / "home"
    home.mkdir()
    plat = platform_for(tmp_path, home)
    (plat.flatpak_system_dir / "app" / "org.gimp.GIMP").mkdir(parents=True)
    (plat.flatpak_system_dir / "app" / "org.kde.krita").mkdir(parents=True)
    targets = install(plat)
    assert sorted(t.key for t in targets) == ["gimp-3.0-flatpak", "krita-flatpak"]
    assert (home / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins/maskd-remove-background").is_dir()
    undo(Manifest.load(plat.manifest_path), run_commands=False)
    assert list(home.iterdir()) == []


def test_cli_install_plugins_and_uninstall(tmp_path):
    home = make_home(tmp_path)
    env = cli_env(tmp_path, home)
    before = snapshot(home)
    r = subprocess.run(
        maskd_command()
        + [
            "install-plugins",
            "--no-start",
            "--weights",
            str(tmp_path / "w.safetensors"),
            "--variant",
            "lite",
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "GIMP 3.0 (Flatpak): installed" in r.stdout and "Krita: installed" in r.stdout
    config = json.loads((home / ".local/share/krita/pykrita/maskd/maskd_config.json").read_text())
    command = config["daemon_command"]
    at = command.index("serve")
    assert command[at:] == [
        "serve",
        "--weights",
        str(tmp_path / "w.safetensors"),
        "--variant",
        "lite",
        "--device",
        "cpu",
    ]
    # not installed by the installer: the plugin starts this Python's maskd
    assert command[:at] in (
        [str(Path(sys.executable).parent / "maskd")],
        [sys.executable, "-m", "maskd.server"],
    )
    listing = subprocess.run(
        maskd_command() + ["install-plugins", "--list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "krita-snap" in listing.stdout and "not found" in listing.stdout
    dry = subprocess.run(
        maskd_command() + ["uninstall", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "would take enable_maskd out of [python]" in dry.stdout
    r = subprocess.run(
        maskd_command() + ["uninstall"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert snapshot(home) == before
    again = subprocess.run(
        maskd_command() + ["uninstall"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert again.returncode == 0 and "Nothing to uninstall" in again.stdout


def test_service_supervisor_mirrors_the_connection_file(tmp_path):
    """The autostart supervisor copies the daemon's connection file into each sandbox and cleans up."""
    primary = tmp_path / "run" / "maskd" / "connection.json"
    mirrors = [
        tmp_path / "sandbox-a" / "maskd" / "connection.json",
        tmp_path / "sandbox-b" / "connection.json",
    ]
    fake_daemon = (
        "import json, os, time; p = os.environ['MASKD_CONNECTION_FILE']; "
        "os.makedirs(os.path.dirname(p), exist_ok=True); "
        "open(p, 'w').write(json.dumps({'key': 'k', 'endpoints': {'tcp': 'tcp://127.0.0.1:1'}})); "
        "time.sleep(30)"
    )
    cmd = [sys.executable, "-m", "maskd.installers.service", "run", "--primary", str(primary)]
    for m in mirrors:
        cmd += ["--mirror", str(m)]
    proc = subprocess.Popen(
        cmd + ["--", sys.executable, "-c", fake_daemon], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        deadline = time.monotonic() + 30
        while not all(m.exists() for m in mirrors):
            assert time.monotonic() < deadline, "the connection file was not mirrored"
            assert proc.poll() is None
            time.sleep(0.1)
        for m in mirrors:
            assert json.loads(m.read_text())["key"] == "k"
            assert stat.S_IMODE(m.stat().st_mode) == 0o600
            assert stat.S_IMODE(m.parent.stat().st_mode) == 0o700
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not any(m.exists() for m in mirrors), "copies must go when the daemon stops"


def test_plugin_step_uses_the_shared_install_functions(monkeypatch, tmp_path):
    """The installer copies through installers.plugins, the functions the GIMP/Krita tests install with."""
    calls = []
    real_gimp, real_krita = plugins.install_gimp_plugin, plugins.install_krita_plugin
    monkeypatch.setattr(
        plugins, "install_gimp_plugin", lambda *a, **k: calls.append("gimp") or real_gimp(*a, **k)
    )
    monkeypatch.setattr(
        plugins, "install_krita_plugin", lambda *a, **k: calls.append("krita") or real_krita(*a, **k)
    )
    home = make_home(tmp_path, layouts=("native",))
    install(platform_for(tmp_path, home))
    assert sorted(calls) == ["gimp", "krita"]


@pytest.mark.parametrize("series", ["3.0", "3.2"])
def test_each_gimp_profile_gets_the_plugin(tmp_path, series):
    home = tmp_path / "home"
    (home / ".config" / "GIMP" / series).mkdir(parents=True)
    (home / ".config" / "GIMP" / "2.10").mkdir(parents=True)  # GIMP 2 profiles are not touched
    targets = install(platform_for(tmp_path, home))
    assert [t.key for t in targets] == [f"gimp-{series}-native"]
    assert (home / ".config" / "GIMP" / series / "plug-ins" / "maskd-remove-background").is_dir()
    assert not (home / ".config" / "GIMP" / "2.10" / "plug-ins").exists()


def test_no_service_prints_the_command_sandboxed_editors_need(tmp_path):
    home = make_home(tmp_path, layouts=("flatpak",))
    plat = platform_for(tmp_path, home)
    lines = []
    editors.install_plugins(
        plat,
        Manifest.load(plat.manifest_path),
        DAEMON,
        service="no",
        start=False,
        python="/opt/maskd/venv/bin/python",
        out=lines.append,
    )
    assert not plat.service_file().exists()
    text = "\n".join(lines)
    assert "/opt/maskd/venv/bin/python -m maskd.installers.service run --mirror" in text
    assert "serve --model lite --foreground" in text


def test_installed_serve_args_for_commands_that_start_the_daemon(tmp_path):
    from maskd.installers.defaults import installed_serve_args

    home = tmp_path / "home"
    home.mkdir()
    plat = platform_for(tmp_path, home)
    assert installed_serve_args(plat) == []
    manifest = Manifest.load(plat.manifest_path)
    model = ["--weights", "/m/lite.safetensors", "--variant", "lite"]
    manifest.settings.update(model_args=model, device="cpu")
    manifest.save()
    assert installed_serve_args(plat) == model + ["--device", "cpu"]


def test_serve_without_model_options_uses_the_installed_model(tmp_path, monkeypatch):
    """`maskd serve` / `maskd remove` with no --model/--weights serve what the installer set up."""
    from maskd.server.cli import build_parser
    from maskd.server.commands import serve

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    parse = build_parser("serve").parse_args
    plain = parse(["serve"])
    serve.apply_installed_defaults(plain)
    assert plain.model is None and plain.weights is None and plain.device == "auto"

    weights = home / "lite.safetensors"
    weights.write_bytes(b"x")
    manifest = Manifest.load(Platform.current().manifest_path)
    manifest.settings.update(model_args=["--weights", str(weights), "--variant", "lite"], device="cpu")
    manifest.save()
    args = parse(["serve"])
    serve.apply_installed_defaults(args)
    assert (args.weights, args.variant, args.device) == (str(weights), "lite", "cpu")
    chosen = parse(["serve", "--model", "general", "--device", "cuda"])
    serve.apply_installed_defaults(chosen)  # the user's choice wins
    assert (chosen.model, chosen.weights, chosen.device) == ("general", None, "cuda")
    weights.unlink()
    with pytest.raises(Exception, match="installed weights file .* is missing"):
        serve.apply_installed_defaults(parse(["serve"]))
