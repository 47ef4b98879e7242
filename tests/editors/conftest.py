"""Fixtures for tests that drive real GIMP 3 and Krita 5.2 inside the Debian 13 root.

The root is built once (``setup_root.sh``, cached under /var/cache/maskd) and each editor run
happens in a private mount namespace (``in_root.sh``). A real maskd daemon runs on the host with
the generated-weights ``lite`` model at a small input size; its connection folder is bind-mounted
into the root at the same path so plug-ins inside find it exactly as they would on a desktop.
Where any of this cannot run, tests skip — or fail under ``MASKD_REQUIRE_EDITORS=1`` (CI).
The plain helpers the editor tests use (running in the root, placing plugins) are in
``tests/helpers.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import (
    DAEMON_RESOLUTION,
    EDITORS,
    REPO,
    ROOT,
    hf_cache_with,
    maskd_command,
    maskd_env,
    skip_or_fail,
    stop_daemon,
)


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
            [str(EDITORS / "setup_root.sh"), str(ROOT)], capture_output=True, text=True, timeout=1800
        )
    except subprocess.TimeoutExpired:
        skip_or_fail("building the Debian 13 editors root took over 30 minutes")
    if r.returncode != 0:
        skip_or_fail(f"could not build the Debian 13 editors root: {(r.stdout + r.stderr)[-2000:]}")
    return ROOT


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
