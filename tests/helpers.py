"""Test helpers shared by the test files (one module: test files do not import each other).

Paths to the shared reference material and the test cache, running the CLI of this checkout,
generated weights, throw-away HOME folders for installer tests, synthetic scenes for the pipeline.
``conftest.py`` holds only fixtures; ``daemon_fixtures.py`` starts real daemons.

The shared folder (BiRefNet reference, evaluation photos, notes) sits beside the clone as
``../shared``; ``MASKD_SHARED`` overrides it. Generated weights are cached under
``.cache/test`` in the clone (``MASKD_TEST_CACHE`` overrides).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from maskd.core import imageio
from maskd.installers.locations import Platform
from maskd.installers.plugins import (
    GIMP_PLUGIN_NAME,
    KRITA_PLUGIN_NAME,
    install_gimp_plugin,
    install_krita_plugin,
    set_kritarc_value,
    write_plugin_config,
)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MASKD_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "birefnet"
EVALDATA = SHARED / "evaldata"
CACHE = Path(os.environ.get("MASKD_TEST_CACHE", REPO / ".cache" / "test"))


def require_editors() -> bool:
    """CI sets MASKD_REQUIRE_EDITORS=1: an editor test that cannot run must fail, not skip."""
    return os.environ.get("MASKD_REQUIRE_EDITORS") == "1"


def skip_or_fail(reason: str):
    if require_editors():
        pytest.fail(reason + " (MASKD_REQUIRE_EDITORS=1)")
    pytest.skip(reason)


def golden_module():
    path = REFERENCE / "golden.py"
    if not path.exists():
        pytest.skip(f"BiRefNet reference not found at {REFERENCE} (set MASKD_SHARED)")
    spec = importlib.util.spec_from_file_location("maskd_golden_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_weights_path(variant: str) -> Path:
    """A .safetensors file in the official layout for ``variant`` ("lite" or "general"), cached."""
    manifest = REFERENCE / f"manifest-{variant}.json"
    if not manifest.exists():
        pytest.skip(f"manifest {manifest} not found (set MASKD_SHARED)")
    out = CACHE / f"generated-{variant}.safetensors"
    if not out.exists() or out.stat().st_mtime < manifest.stat().st_mtime:
        from safetensors.numpy import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        save_file(golden_module().generate_weights(str(manifest)), str(tmp))
        os.replace(tmp, out)
    return out


def maskd_command() -> list[str]:
    """How tests run the CLI: this checkout's code, whatever is installed."""
    return [sys.executable, "-m", "maskd.server"]


def run_maskd(*args, env: dict, timeout: float = 300, cwd=None, **popen) -> subprocess.CompletedProcess:
    """``maskd ARGS…`` as a subprocess (arguments as strings, text output captured), run from the
    repository unless ``cwd`` says otherwise."""
    return subprocess.run(
        maskd_command() + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd or REPO,
        **popen,
    )


def maskd_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def product_files() -> list[Path]:
    """The product's Python sources: core, server, plugins (the GIMP plug-in too), installers."""
    files = [REPO / "__init__.py"]
    for folder in ("core", "server", "plugins", "installers"):
        files += sorted((REPO / folder).rglob("*.py"))
    files.append(REPO / "plugins" / "gimp" / "maskd-remove-background" / "maskd-remove-background.py")
    return sorted(set(files))


# --------------------------------------------------------------------------- installer homes

KRITARC = (
    "[General]\n"
    "LastPreset=Basic_tip_default\n"
    "canvasState=OPENGL_SUCCESS\n"
    "\n"
    "[MainWindow]\n"
    "State=AAAA/wAAAAD9AAAAAQAAAAAAAAAAAAAAAPwCAAAAAfsAAAAaAEsAaQBzAEQAbwBjAGsAZQByAFMAZQB0AHQAaQBuAGcAcwAAAAAA\n"
    "geometry=@ByteArray(\\x1\\xd9\\xd0\\xcb\\0\\x3)\n"
    "\n"
    "[python]\n"
    "enable_comics_project_management_tools=true\n"
    "enable_ten_brushes=false\n"
    "\n"
    "[theme]\n"
    "Theme=Krita dark\n"
    "; a comment Krita would never write, but users do\n"
    "Ünicode=ça marche\n"
)

DAEMON = ["/opt/maskd/venv/bin/maskd", "serve", "--model", "lite"]


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its kind, mode and content hash (what 'as it was' means)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        mode = stat.S_IMODE(p.lstat().st_mode)
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", mode)
        else:
            out[rel] = ("file", mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def make_home(tmp_path: Path, layouts=("native", "flatpak")) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "Documents").mkdir()
    (home / "Documents" / "photo.txt").write_text("user data\n")
    if "native" in layouts:
        (home / ".config" / "GIMP" / "3.0").mkdir(parents=True)
        (home / ".config" / "GIMP" / "3.0" / "gimprc").write_text('(theme "Dark")\n')
        (home / ".local" / "share" / "krita").mkdir(parents=True)
        (home / ".config" / "kritarc").write_text(KRITARC)
    if "flatpak" in layouts:
        (home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0").mkdir(parents=True)
        (home / ".var" / "app" / "org.kde.krita" / "data" / "krita").mkdir(parents=True)
    return home


def cli_env(tmp_path: Path, home: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "MASKD_")) and k not in ("HOME", "APPDATA", "LOCALAPPDATA")
    }
    (tmp_path / "run").mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        MASKD_INSTALL_NO_PROBE="1",
        MASKD_FLATPAK_SYSTEM_DIR=str(tmp_path / "no-flatpak"),
        MASKD_SNAP_DIR=str(tmp_path / "no-snap"),
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


# --------------------------------------------------------------------------- pipeline scenes


def hair_scene(size=256, seed=0):
    """An orange subject with thin strands on a textured blue-green background, and its true alpha."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    alpha = np.clip(0.5 - (np.hypot(yy - size * 0.55, xx - size * 0.5) - size * 0.28) / 1.5, 0, 1)
    strands = np.zeros((size, size), np.float32)
    for _ in range(25):
        angle = rng.uniform(0, 2 * np.pi)
        x0, y0 = size * 0.5 + np.cos(angle) * size * 0.25, size * 0.55 + np.sin(angle) * size * 0.25
        x1, y1 = x0 + np.cos(angle) * size * 0.15, y0 + np.sin(angle) * size * 0.15
        cv2.line(strands, (int(x0 * 16), int(y0 * 16)), (int(x1 * 16), int(y1 * 16)), 1.0, 1, cv2.LINE_AA, 4)
    alpha = np.maximum(alpha, 0.8 * strands)
    fg = np.dstack([np.full_like(xx, 0.95), 0.55 + 0.05 * np.sin(xx / 9), np.full_like(xx, 0.15)])
    bg = np.dstack([0.1 + 0.05 * np.sin(yy / 13), 0.35 + 0.1 * np.cos(xx / 17), np.full_like(xx, 0.6)])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return imageio.to_uint8(image), alpha.astype(np.float32), fg.astype(np.float32)


def coarse(alpha, factor=4):
    """``alpha`` shrunk ``factor`` times by area averaging: a model-sized matte of it."""
    h, w = alpha.shape
    return cv2.resize(alpha, (w // factor, h // factor), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- real editors (tests/editors/)

EDITORS = REPO / "tests" / "editors"
NO_AUTOSTART = (
    "this Python lives in a system folder ({}): it cannot be mounted into the editors' "
    "root, so the plug-in's autostart of a real daemon is not run (use a venv made from a "
    "Python outside /usr, as CI does)"
)
ROOT = Path(os.environ.get("MASKD_EDITORS_ROOT", "/var/cache/maskd/trixie-root"))
DAEMON_RESOLUTION = 256  # model input size for editor tests: a real forward in ~1-2 s on CI's CPU


def run_in_root(
    root: Path,
    command: list[str],
    *,
    binds: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run ``command`` inside the root; ``binds`` maps host folders to folders inside."""
    args = [str(EDITORS / "in_root.sh"), str(root)]
    for host, inside in (binds or {}).items():
        args += ["-b", f"{host}:{inside}"]
    args += ["--", "env"] + [f"{k}={v}" for k, v in (env or {}).items()] + list(command)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


INSTALLED_HOME_VAR = "MASKD_TEST_INSTALLED_HOME"


def installed_home() -> Path | None:
    """A HOME the one-command installer ran in (``tests/test_install_e2e.py`` sets it): the editor
    tests then run the plugins exactly as the installer placed them there, not the repo's copies."""
    value = os.environ.get(INSTALLED_HOME_VAR)
    return Path(value) if value else None


def _copy_installed(src: Path, dest: Path) -> None:
    if not src.exists():
        pytest.fail(f"{INSTALLED_HOME_VAR}: the installer left no {src}")
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    if src.is_dir():
        shutil.copytree(src, dest)  # copy2: the executable bit GIMP needs comes along
    else:
        shutil.copy2(src, dest)


def place_gimp_plugin(profile_dir: Path, config: dict) -> Path:
    """The GIMP plug-in in ``profile_dir`` (a GIMP 3.0 profile) talking to the test daemon.

    Normally installed from the repo by the installer's own code; with ``MASKD_TEST_INSTALLED_HOME``
    copied from that HOME byte for byte. Only ``maskd_config.json`` (where the daemon is) is
    rewritten, to reach this session's daemon.
    """
    dest = Path(profile_dir) / "plug-ins" / GIMP_PLUGIN_NAME
    home = installed_home()
    if home is None:
        install_gimp_plugin(profile_dir, config)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy_installed(home / ".config/GIMP/3.0/plug-ins" / GIMP_PLUGIN_NAME, dest)
        write_plugin_config(dest, config)
    return dest


def place_krita_plugin(data_dir: Path, kritarc: Path, config: dict) -> Path:
    """The Krita plugin in ``data_dir/pykrita``, enabled in ``kritarc`` (see ``place_gimp_plugin``)."""
    pykrita = Path(data_dir) / "pykrita"
    home = installed_home()
    if home is None:
        install_krita_plugin(data_dir, kritarc, config)
    else:
        pykrita.mkdir(parents=True, exist_ok=True)
        src = home / ".local/share/krita/pykrita"
        _copy_installed(src / KRITA_PLUGIN_NAME, pykrita / KRITA_PLUGIN_NAME)
        _copy_installed(src / f"{KRITA_PLUGIN_NAME}.desktop", pykrita / f"{KRITA_PLUGIN_NAME}.desktop")
        write_plugin_config(pykrita / KRITA_PLUGIN_NAME, config)
        set_kritarc_value(Path(kritarc), "python", f"enable_{KRITA_PLUGIN_NAME}", "true")
    return pykrita / KRITA_PLUGIN_NAME


_SYSTEM_DIRS = {
    Path(p) for p in ("/", "/usr", "/usr/local", "/bin", "/lib", "/lib64", "/etc", "/var", "/opt")
}


def host_python_binds(*extra: Path) -> dict[str, str] | None:
    """Bind mounts that let a program inside the root run this checkout's maskd daemon exactly as
    on the host (the venv, the Python it was made from, the checkout, ``extra`` paths) — how a
    plug-in's autostart is tested: the editor runs the daemon command the installer would write.

    None when the Python lives in a system folder (Debian's own ``/usr/bin/python3``): binding that
    over the root's ``/usr`` would replace the editors' own libraries.
    """
    wanted = {Path(p).resolve() for p in (REPO, sys.prefix, sys.base_prefix, *extra)}
    if wanted & _SYSTEM_DIRS:
        return None
    paths = sorted(wanted, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in paths:
        if not any(p == k or k in p.parents for k in kept):
            kept.append(p)
    return {str(p): str(p) for p in kept}


def serve_arguments(weights: Path, log_file: Path) -> list[str]:
    """``serve`` with the editor tests' model: the generated lite weights, small and on the CPU."""
    args = ["serve", "--weights", str(weights), "--variant", "lite", "--device", "cpu"]
    return args + ["--resolution", str(DAEMON_RESOLUTION), "--log-file", str(log_file)]


def maskd_serve_command(weights: Path, log_file: Path) -> list[str]:
    """``maskd serve`` of this checkout's environment with the editor tests' model settings."""
    maskd = Path(sys.executable).parent / "maskd"
    if not maskd.exists():
        pytest.fail(f"{maskd} is missing: install the project into the environment (pip install -e .)")
    return [str(maskd)] + serve_arguments(weights, log_file)


def stop_daemon(connection_file: Path) -> None:
    """Stop a daemon an editor started (it outlives the editor, as it would on a desktop)."""
    try:
        pid = int(json.loads(connection_file.read_text()).get("pid", 0))
    except (OSError, ValueError):
        return
    subprocess.run(
        maskd_command() + ["stop"],
        env=maskd_env(MASKD_CONNECTION_FILE=connection_file),
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )
    if pid > 0 and connection_file.exists():  # `stop` could not reach it: do not leave it running
        try:
            os.kill(pid, 9)
        except (ProcessLookupError, PermissionError):
            pass


def differing_files(copy: Path, original: Path) -> list[str]:
    """Files that differ between a placed plugin folder and its origin (the config and caches aside)."""

    def files(folder: Path) -> dict[str, bytes]:
        return {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.name != "maskd_config.json"
        }

    a, b = files(copy), files(original)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def read_json(path: Path) -> dict:
    """Result files written by scripts inside the editors (kritarunner always exits 0)."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())


# installer tests: a Platform laid out under a temporary folder
def platform_for(tmp_path: Path, home: Path, system: str = "linux", **env) -> Platform:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    base = {"XDG_RUNTIME_DIR": str(run), "PATH": ""}
    base.update(env)
    return Platform(
        system=system,
        home=home,
        env=base,
        flatpak_system_dir=tmp_path / "no-flatpak",
        snap_dir=tmp_path / "no-snap",
        applications_dir=tmp_path / "no-apps",
        probe=False,
    )


def plat_for(tmp_path: Path, system: str) -> Platform:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": ""}
    if system == "windows":
        env.update(
            APPDATA=str(home / "AppData" / "Roaming"),
            LOCALAPPDATA=str(home / "AppData" / "Local"),
            TEMP=str(home / "AppData" / "Local" / "Temp"),
            USERNAME="ada",
            ProgramFiles=str(tmp_path / "Program Files"),
        )
    return Platform(
        system=system,
        home=home,
        env=env,
        flatpak_system_dir=tmp_path / "none",
        snap_dir=tmp_path / "none",
        applications_dir=tmp_path / "Applications",
        probe=False,
    )


EXPECTED = {
    # system: (GIMP profile base, Krita resource folder, kritarc, maskd folder, venv python, autostart entry)
    "linux": (
        ".config/GIMP",
        ".local/share/krita",
        ".config/kritarc",
        ".local/share/maskd",
        ".local/share/maskd/venv/bin/python",
        ".config/systemd/user/maskd.service",
    ),
    "darwin": (
        "Library/Application Support/GIMP",
        "Library/Application Support/krita",
        "Library/Preferences/kritarc",
        "Library/Application Support/maskd",
        "Library/Application Support/maskd/venv/bin/python",
        "Library/LaunchAgents/org.maskd.daemon.plist",
    ),
    "windows": (
        "AppData/Roaming/GIMP",
        "AppData/Roaming/krita",
        "AppData/Local/kritarc",
        "AppData/Local/maskd",
        "AppData/Local/maskd/venv/Scripts/python.exe",
        "AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Startup/maskd.cmd",
    ),
}


# the editors' daemon: presets "installed" (all the generated lite weights)
# presets "installed" for the editors' daemon (all the generated lite weights): the plugins' model
# list comes from the engine, and a switch between two of them is real
INSTALLED_PRESETS = ("lite", "lite-2k")
_REPOS = {"lite": "ZhengPeng7/BiRefNet_lite", "lite-2k": "ZhengPeng7/BiRefNet_lite-2K"}


def hf_cache_with(folder: Path, weights: Path, presets=INSTALLED_PRESETS) -> Path:
    """A Hugging Face hub cache in which ``presets`` are downloaded (each one is ``weights``)."""
    for name in presets:
        repo = folder / ("models--" + _REPOS[name].replace("/", "--"))
        snapshot = repo / "snapshots" / ("a" * 40)
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("a" * 40)
        target = snapshot / "model.safetensors"
        if not target.exists():
            try:
                os.link(weights, target)
            except OSError:
                shutil.copyfile(weights, target)
    return folder


# --------------------------------------------------------------------------- test-only model and worker

# the environment under which maskd processes know tests/standins.py's ``stand-in`` model and
# ``null`` worker (core/extensions.py: every process maskd starts inherits it)
STANDINS_ENV = {"MASKD_EXTENSIONS": "tests.standins"}


def standin_env(**extra) -> dict:
    """``maskd_env`` for a process that may serve the ``stand-in`` model or the ``null`` worker."""
    return maskd_env(**STANDINS_ENV, **extra)


def lite_model_args(weights: Path, resolution: int | None = 256) -> list[str]:
    """The model options of a real BiRefNet on the CPU: the generated ``lite`` weights at
    ``resolution`` (None: the preset's own)."""
    args = ["--weights", str(weights), "--variant", "lite", "--device", "cpu"]
    return args + (["--resolution", str(resolution)] if resolution else [])


# ----------------------------------------------------------------------------- layered files
# The segment options ``maskd remove`` sends for a layer of a layered file with its default
# options: the layered tests ask the daemon for the same alpha and compare it with the stored mask.
LAYERED_OPTIONS = {
    "quality": "default",
    "refine": True,
    "threshold": None,
    "grow": 0,
    "feather": 0.0,
    "fill_holes": False,
    "invert": False,
    "decontaminate": False,
}


def daemon_alpha(connection_file: Path, rgba: np.ndarray, options: dict | None = None) -> np.ndarray:
    """The daemon's alpha for ``rgba`` (H×W×4) with ``options`` (default ``LAYERED_OPTIONS``),
    on a connection of its own."""
    from maskd.server.client import DaemonClient

    client = DaemonClient.connect(str(connection_file))
    try:
        return client.segment(np.ascontiguousarray(rgba), options or LAYERED_OPTIONS).alpha
    finally:
        client.close()
