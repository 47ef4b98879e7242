"""Upgrading an installation made before the ``maskd`` namespace: re-running the plugin step rewrites it.

Before, the generated files named top-level modules: the systemd unit ran ``python -m
installers.service run … -- python -m server serve …``, and a daemon command without a ``maskd``
executable was ``python -m server serve``, in the plugin configs, the manifest, the launchd agent and
the Windows Startup entry. Those modules no longer exist after ``pip`` upgrades maskd, so the
installer's plugin step (``maskd install-plugins``, which every installer run ends with) must
rewrite each of them; until it has, the plugins' client maps an old config's ``-m server`` and
``maskd doctor`` points at an old autostart entry. (That the old top-level packages leave the venv is
checked where a real venv is upgraded: ``tests/test_install_e2e.py``.)
"""

from __future__ import annotations

import json
import plistlib
import re
import subprocess
import sys

import pytest
from maskd.installers import editors
from maskd.installers.manifest import Manifest
from maskd.plugins import maskd_client as mc
from maskd.server.cli import build_parser
from maskd.server.commands import doctor, install_plugins

from tests.helpers import EXPECTED, make_home, plat_for, platform_for


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in _strings(item)]


def names_old_modules(path) -> bool:
    """Whether a generated file runs ``python -m server`` or ``-m installers.service`` anywhere."""
    text = path.read_text()
    if path.suffix in (".json", ".plist"):
        data = json.loads(text) if path.suffix == ".json" else plistlib.loads(path.read_bytes())
        text = " ".join(_strings(data))
    return re.search(r"-m (server|installers\.service)(\s|$)", text) is not None


def old_layout(tmp_path, system):
    """An installation as the previous layout wrote it: GIMP and Krita plugins and an autostart entry."""
    if system == "linux":
        plat = platform_for(tmp_path, make_home(tmp_path))  # native and Flatpak editors
    else:
        plat = plat_for(tmp_path, system)
        gimp_base, krita, kritarc, *_ = EXPECTED[system]
        (plat.home / gimp_base / "3.0").mkdir(parents=True)
        (plat.home / krita).mkdir(parents=True)
        (plat.home / kritarc).parent.mkdir(parents=True, exist_ok=True)
    python = str(plat.venv_python())
    old_base = [python, "-m", "server"]
    manifest = Manifest.load(plat.manifest_path)
    manifest.settings.update(daemon_base=old_base, model_args=["--model", "lite"], device="auto")
    targets = editors.install_plugins(
        plat,
        manifest,
        old_base + ["serve", "--model", "lite"],
        service="yes",
        start=False,
        python=python,
        out=lambda *_: None,
    )
    entry = plat.service_file()
    # the old supervisor's module name: the one other difference of that entry's text
    entry.write_text(entry.read_text().replace("-m maskd.installers.service ", "-m installers.service "))
    return plat, python, [t.plugin_dir / "maskd_config.json" for t in targets]


@pytest.mark.parametrize("system", ["linux", "darwin", "windows"])
def test_rerunning_the_plugin_step_rewrites_every_old_module_name(tmp_path, system):
    plat, python, configs = old_layout(tmp_path, system)
    written = [plat.service_file(), plat.manifest_path, *configs]
    assert len(configs) == (4 if system == "linux" else 2)
    assert all(names_old_modules(p) for p in written), "the old layout names old modules"
    r = doctor.Report()
    doctor._check_service(r, Manifest.load(plat.manifest_path))
    (check,) = r.checks
    assert check["state"] == "problem" and "written by an earlier maskd" in check["message"]
    assert ("installers.service" if system == "linux" else "-m server") in check["message"]
    assert "maskd install-plugins" in check["fix"]

    args = build_parser("install-plugins").parse_args(["install-plugins", "--no-start"])
    assert install_plugins.run(args, plat) == 0

    stale = [str(p) for p in written if names_old_modules(p)]
    assert not stale, f"still naming old modules: {stale}"
    new_command = [python, "-m", "maskd.server", "serve", "--model", "lite"]
    for config in configs:
        assert json.loads(config.read_text())["daemon_command"] == new_command
    settings = Manifest.load(plat.manifest_path).settings
    assert settings["daemon_command"] == new_command
    entry = plat.service_file().read_bytes().decode()
    if system == "linux":
        assert f"ExecStart={sys.executable} -m maskd.installers.service run --mirror " in entry
        assert entry.split(" -- ", 1)[1].startswith(" ".join(new_command) + " --foreground\n")
    elif system == "darwin":
        assert plistlib.loads(entry.encode())["ProgramArguments"] == new_command + ["--foreground"]
    else:
        assert f'start "maskd" /min {" ".join(new_command)}\r\n' in entry
    r = doctor.Report()
    doctor._check_service(r, Manifest.load(plat.manifest_path))
    assert [c["state"] for c in r.checks] == ["ok"]


def test_an_old_autostart_entry_is_rewritten_even_without_a_sandboxed_editor(tmp_path):
    """`--service` on a machine with only native editors: a plain re-run keeps (and rewrites) it."""
    home = make_home(tmp_path, layouts=("native",))
    plat = platform_for(tmp_path, home)
    manifest = Manifest.load(plat.manifest_path)
    editors.install_plugins(plat, manifest, ["/v/bin/maskd", "serve"], service="yes", start=False)
    unit = plat.service_file()
    unit.write_text(unit.read_text().replace("-m maskd.installers.service ", "-m installers.service "))
    editors.install_plugins(plat, Manifest.load(plat.manifest_path), ["/v/bin/maskd", "serve"], start=False)
    assert "-m maskd.installers.service run" in unit.read_text()


def test_the_client_maps_an_old_config_and_the_mapped_command_runs(tmp_path):
    (tmp_path / "maskd_config.json").write_text(
        json.dumps({"daemon_command": [sys.executable, "-m", "server", "serve", "--model", "lite"]})
    )
    command = mc.load_plugin_config(str(tmp_path))["daemon_command"]
    assert command == [sys.executable, "-m", "maskd.server", "serve", "--model", "lite"]
    assert mc.current_command(["/v/maskd", "serve", "-m", "x"]) == ["/v/maskd", "serve", "-m", "x"]
    r = subprocess.run(command[:3] + ["--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("maskd "), r.stderr
