"""``maskd doctor`` in a throw-away HOME: a healthy setup with a real daemon, then each problem + fix."""

from __future__ import annotations

import json
import subprocess

import pytest
from maskd.installers.manifest import Manifest

from tests.helpers import cli_env, lite_model_args, make_home, maskd_command


def maskd(env, *args, timeout=180):
    return subprocess.run(
        maskd_command() + list(args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env["HOME"],
    )


def doctor(env) -> tuple[int, dict]:
    r = maskd(env, "doctor", "--json")
    assert r.stdout.strip().startswith("{"), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def by_area(report: dict) -> dict:
    out: dict = {}
    for check in report["checks"]:
        out.setdefault(check["area"], []).append(check)
    return out


@pytest.fixture
def installed_home(tmp_path, lite_weights):
    """Plugins installed (native GIMP and Krita) with the generated lite weights as the model."""
    home = make_home(tmp_path, layouts=("native",))
    env = cli_env(tmp_path, home)
    r = maskd(env, "install-plugins", "--no-start", *lite_model_args(lite_weights, resolution=None))
    assert r.returncode == 0, r.stderr
    return env


def test_healthy_setup_with_a_running_daemon(installed_home, lite_weights):
    env = installed_home
    r = maskd(env, "serve", *lite_model_args(lite_weights), "--lazy", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        code, report = doctor(env)
        checks = by_area(report)
        assert code == 0 and report["ok"], [c for c in report["checks"] if c["state"] == "problem"]
        assert checks["daemon"][0]["state"] == "ok" and "reachable" in checks["daemon"][0]["message"]
        assert checks["model"][0]["state"] == "ok" and str(lite_weights) in checks["model"][0]["message"]
        assert checks["device"][0]["state"] == "ok"
        for editor in ("GIMP 3.0", "Krita"):
            assert checks[editor][0]["state"] == "ok"
            assert "plugin 0.1.0" in checks[editor][0]["message"]
        text = maskd(env, "doctor")
        assert text.returncode == 0 and "All good." in text.stdout
    finally:
        maskd(env, "stop", timeout=60)


def test_each_problem_is_reported_with_a_fix(installed_home, tmp_path):
    env = installed_home
    home = tmp_path / "home"
    gimp_main = home / ".config/GIMP/3.0/plug-ins/maskd-remove-background/maskd-remove-background.py"
    gimp_main.chmod(0o644)
    kritarc = home / ".config" / "kritarc"
    kritarc.write_text(kritarc.read_text().replace("enable_maskd=true", "enable_maskd=false"))
    config_path = home / ".local/share/krita/pykrita/maskd/maskd_config.json"
    config = json.loads(config_path.read_text())
    config.update(maskd_version="0.0.9", daemon_command=["/nonexistent/maskd", "serve"])
    config_path.write_text(json.dumps(config))
    manifest = Manifest.load(home / ".local/share/maskd/install.json")
    missing = str(tmp_path / "missing.safetensors")
    manifest.settings["model_args"] = ["--weights", missing, "--variant", "lite"]
    manifest.save()

    code, report = doctor(env)
    assert code == 1 and not report["ok"]
    problems = [c for c in report["checks"] if c["state"] == "problem"]
    text = json.dumps(problems)
    assert "not executable" in text and "chmod +x" in text
    assert "enable_maskd=false" in text and "Python Plugin Manager" in text
    assert "plugin is from maskd 0.0.9" in text
    assert "/nonexistent/maskd" in text
    assert "missing.safetensors is missing" in text
    assert all(p["fix"] for p in problems), problems
    daemon = by_area(report)["daemon"][0]
    assert daemon["state"] == "note" and "start it on first use" in daemon["message"]

    # re-running the plugin step fixes everything it owns
    assert maskd(env, "install-plugins", "--no-start").returncode == 0
    problems = [c for c in doctor(env)[1]["checks"] if c["state"] == "problem"]
    assert [p["area"] for p in problems] == ["model"]


def test_flatpak_editor_without_daemon_is_a_problem(tmp_path):
    home = make_home(tmp_path, layouts=("flatpak",))
    env = cli_env(tmp_path, home)
    assert maskd(env, "install-plugins", "--no-start").returncode == 0
    code, report = doctor(env)
    daemon = by_area(report)["daemon"][0]
    assert code == 1 and daemon["state"] == "problem"
    assert "systemctl --user start maskd" in daemon["fix"]
    assert by_area(report)["autostart"][0]["state"] == "ok"
    assert "sandboxed" in by_area(report)["GIMP 3.0 (Flatpak)"][0]["message"]
