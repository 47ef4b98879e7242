"""Fixtures for tests that drive real GIMP 3 and Krita 5.2 inside the Debian 13 root.

The root is built once (``setup_root.sh``, cached under /var/cache/maskd) and each editor run
happens in a private mount namespace (``in_root.sh``). A real maskd daemon runs on the host with
the generated-weights ``lite`` model at a small input size; its connection folder is bind-mounted
into the root at the same path so plug-ins inside find it exactly as they would on a desktop.
Where any of this cannot run, tests skip — or fail under ``MASKD_REQUIRE_EDITORS=1`` (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from maskd.installers.plugins import (
    GIMP_PLUGIN_NAME,
    KRITA_PLUGIN_NAME,
    install_gimp_plugin,
    install_krita_plugin,
    set_kritarc_value,
    write_plugin_config,
)

from tests.conftest import REPO, maskd_command, maskd_env, skip_or_fail

HERE = Path(__file__).resolve().parent
NO_AUTOSTART = (
    "this Python lives in a system folder ({}): it cannot be mounted into the editors' "
    "root, so the plug-in's autostart of a real daemon is not run (use a venv made from a "
    "Python outside /usr, as CI does)"
)
ROOT = Path(os.environ.get("MASKD_EDITORS_ROOT", "/var/cache/maskd/trixie-root"))
DAEMON_RESOLUTION = 256  # model input size for editor tests: a real forward in ~1-2 s on CI's CPU
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


@pytest.fixture(scope="session")
def editors_root() -> Path:
    """The Debian 13 root with GIMP 3 and Krita 5.2 (built on first use, then reused)."""
    if os.geteuid() != 0:
        skip_or_fail("editor tests need root (debootstrap, chroot, mount namespaces)")
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            skip_or_fail(f"editor tests need `{tool}`")
    try:
        r = subprocess.run(
            [str(HERE / "setup_root.sh"), str(ROOT)], capture_output=True, text=True, timeout=1800
        )
    except subprocess.TimeoutExpired:
        skip_or_fail("building the Debian 13 editors root took over 30 minutes")
    if r.returncode != 0:
        skip_or_fail(f"could not build the Debian 13 editors root: {(r.stdout + r.stderr)[-2000:]}")
    return ROOT


def run_in_root(
    root: Path,
    command: list[str],
    *,
    binds: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run ``command`` inside the root; ``binds`` maps host folders to folders inside."""
    args = [str(HERE / "in_root.sh"), str(root)]
    for host, inside in (binds or {}).items():
        args += ["-b", f"{host}:{inside}"]
    args += ["--", "env"] + [f"{k}={v}" for k, v in (env or {}).items()] + list(command)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@dataclass
class EditorsDaemon:
    """A running maskd daemon the editors' plug-ins can reach."""

    connection_file: Path
    run_dir: Path
    config: dict = field(default_factory=dict)  # the plugin config the installer would write

    def binds(self) -> dict[str, str]:
        """Bind mounts that make the daemon reachable from inside the root at the same paths."""
        return {str(self.run_dir): str(self.run_dir)}


@pytest.fixture(scope="session")
def editors_daemon(tmp_path_factory, lite_weights) -> EditorsDaemon:
    """``maskd serve --model lite`` from a Hugging Face cache in which ``INSTALLED_PRESETS`` are
    downloaded (the generated lite weights), stopped at the end of the session."""
    run_dir = tmp_path_factory.mktemp("maskd-run")
    run_dir.chmod(0o700)
    connection = run_dir / "connection.json"
    cache = hf_cache_with(tmp_path_factory.mktemp("hf-cache"), lite_weights)
    env = maskd_env(MASKD_CONNECTION_FILE=connection, HF_HUB_CACHE=cache, HF_HUB_OFFLINE="1")
    serve = maskd_command() + [
        "serve",
        "--model",
        "lite",
        "--device",
        "cpu",
        "--resolution",
        str(DAEMON_RESOLUTION),
        "--log-file",
        str(run_dir / "daemon.log"),
    ]
    r = subprocess.run(serve, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    if r.returncode != 0:
        pytest.fail(f"maskd serve failed: {r.stdout}{r.stderr}")
    config = {"connection_file": str(connection), "autostart": False, "daemon_command": []}
    try:
        yield EditorsDaemon(connection_file=connection, run_dir=run_dir, config=config)
    finally:
        stop_daemon(connection)


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


def maskd_serve_command(weights: Path, log_file: Path) -> list[str]:
    """``maskd serve`` of this checkout's environment with the editor tests' model settings."""
    maskd = Path(sys.executable).parent / "maskd"
    if not maskd.exists():
        pytest.fail(f"{maskd} is missing: install the project into the environment (pip install -e .)")
    return [
        str(maskd),
        "serve",
        "--weights",
        str(weights),
        "--variant",
        "lite",
        "--device",
        "cpu",
        "--resolution",
        str(DAEMON_RESOLUTION),
        "--log-file",
        str(log_file),
    ]


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
