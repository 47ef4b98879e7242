"""The README's one-line install, as root without ``sudo`` and as a normal user through ``sudo``.

``installers/install.sh`` finds a Python >= 3.10 and, on Debian/Ubuntu, installs the venv module
(``pythonX.Y-venv``) when that Python lacks it — through ``sudo`` only when not root. The one-liner
is read from the README and run by bash in a copy of the installer whose ``install.py`` is a stub
(it links a fake ``~/.local/bin/maskd``): what is under test is the shell part. ``apt-get`` and
``sudo`` are fakes on a PATH that has nothing else (a root container has no ``sudo``); they log
who called them, so the test sees apt-get run directly as root and through sudo as a user. The
Python is the system's ``/usr/bin/python3``, seen without ensurepip until the fake apt-get has
"installed" it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3")

FAKE_PYTHON = """#!/bin/sh
# Debian's python3 before its venv package is installed: `import ensurepip` fails
case "$*" in *ensurepip*) [ -e "$STATE/venv-installed" ] || exit 1 ;; esac
exec /usr/bin/python3 "$@"
"""
FAKE_APT = """#!/bin/sh
echo "apt-get uid=$(/usr/bin/id -u) via-sudo=${FAKE_SUDO:-no} $*" >> "$STATE/log"
if [ "$(/usr/bin/id -u)" != 0 ] && [ -z "$FAKE_SUDO" ]; then
    echo "E: Could not open lock file - are you root?" >&2; exit 100
fi
case "$1" in
    update) /usr/bin/touch "$STATE/lists" ;;
    install) [ -e "$STATE/lists" ] || { echo "E: Unable to locate package $3" >&2; exit 100; }
             /usr/bin/touch "$STATE/venv-installed" ;;
esac
"""
FAKE_SUDO = """#!/bin/sh
echo "sudo uid=$(/usr/bin/id -u) $*" >> "$STATE/log"
FAKE_SUDO=1 exec "$@"
"""
STUB_INSTALL_PY = """import os, pathlib, sys
log = open(os.path.join(os.environ["STATE"], "log"), "a")
log.write(f"install.py uid={os.getuid()} args={sys.argv[1:]}\\n")
bin_dir = pathlib.Path.home() / ".local" / "bin"
bin_dir.mkdir(parents=True, exist_ok=True)
(bin_dir / "maskd").write_text('#!/bin/sh\\necho "maskd $*" >> "$STATE/log"\\n')
(bin_dir / "maskd").chmod(0o755)
"""


def readme_one_liner() -> str:
    """The first command in the README's install section that runs install.sh."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if "installers/install.sh" in line:
                return line.strip()
    raise AssertionError("no install.sh command in the README's install section")


@pytest.fixture
def machine():
    """A clone with the real install.sh, fake tools, and a state folder the fakes log into."""
    if not SYSTEM_PYTHON.exists() or not shutil.which("bash"):
        pytest.skip("needs /usr/bin/python3 and bash")
    root = Path(tempfile.mkdtemp(prefix="maskd-bootstrap-"))
    root.chmod(0o755)  # readable by the unprivileged user of the second test
    try:
        clone = root / "clone" / "installers"
        clone.mkdir(parents=True)
        shutil.copy2(REPO / "installers" / "install.sh", clone / "install.sh")
        (clone / "install.py").write_text(STUB_INSTALL_PY)
        tools = root / "tools"
        tools.mkdir()
        for name, text in (("python3", FAKE_PYTHON), ("apt-get", FAKE_APT), ("sudo", FAKE_SUDO)):
            (tools / name).write_text(text)
            (tools / name).chmod(0o755)
        for name in ("bash", "dirname", "id", "uname"):
            (tools / name).symlink_to(shutil.which(name))
        state = root / "state"
        state.mkdir()
        state.chmod(0o777)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_one_liner(root: Path, home: Path, as_user: tuple[int, int] | None = None):
    env = {"HOME": str(home), "PATH": str(root / "tools"), "STATE": str(root / "state"), "LANG": "C.UTF-8"}
    command = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), shutil.which("bash")]
    command += ["-c", readme_one_liner()]
    if as_user:
        uid, gid = as_user
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *command]
    r = subprocess.run(command, cwd=root / "clone", capture_output=True, text=True, timeout=120)
    log = (root / "state" / "log").read_text().splitlines() if (root / "state" / "log").exists() else []
    return r, log


def venv_package() -> str:
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"python{version}-venv"


def test_readme_one_liner_has_no_sudo():
    assert "sudo" not in readme_one_liner()


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the one-liner as root (CI does)")
def test_as_root_apt_get_runs_directly_without_sudo(machine):
    home = machine / "root-home"
    home.mkdir()
    r, log = run_one_liner(machine, home)
    assert r.returncode == 0, r.stdout + r.stderr
    pkg = venv_package()
    assert log == [
        f"apt-get uid=0 via-sudo=no install -y {pkg}",  # a fresh container has no package lists:
        "apt-get uid=0 via-sudo=no update",  # one update, then again
        f"apt-get uid=0 via-sudo=no install -y {pkg}",
        "install.py uid=0 args=[]",
        "maskd remove photo.jpg -o photo-cutout.png",
    ], r.stderr
    assert f"installing it: apt-get install -y {pkg}" in r.stderr

    # run again: the venv module is there now, nothing is installed
    (machine / "state" / "log").unlink()
    r, log = run_one_liner(machine, home)
    assert r.returncode == 0
    assert log == ["install.py uid=0 args=[]", "maskd remove photo.jpg -o photo-cutout.png"]


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"),
    reason="creates a user (needs root, useradd and setpriv; CI runs as root)",
)
def test_as_a_user_apt_get_runs_through_sudo(machine):
    name = f"maskdtest{os.getpid()}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True, timeout=60)
    try:
        import pwd

        user = pwd.getpwnam(name)
        home = machine / "user-home"
        home.mkdir()
        os.chown(home, user.pw_uid, user.pw_gid)
        (machine / "state" / "lists").touch()  # package lists present this time
        r, log = run_one_liner(machine, home, as_user=(user.pw_uid, user.pw_gid))
        assert r.returncode == 0, r.stdout + r.stderr
        pkg = venv_package()
        uid = user.pw_uid
        assert log == [
            f"sudo uid={uid} apt-get install -y {pkg}",
            f"apt-get uid={uid} via-sudo=1 install -y {pkg}",
            f"install.py uid={uid} args=[]",
            "maskd remove photo.jpg -o photo-cutout.png",
        ], r.stderr
        assert f"installing it: sudo apt-get install -y {pkg}" in r.stderr
        assert (home / ".local/bin/maskd").stat().st_uid == uid

        # a user without sudo is told what to run as root, and nothing runs
        (machine / "tools" / "sudo").unlink()
        (machine / "state" / "venv-installed").unlink()
        (machine / "state" / "log").unlink()
        r, log = run_one_liner(machine, home, as_user=(user.pw_uid, user.pw_gid))
        assert r.returncode == 1 and log == []
        assert f"run as root `apt-get install -y {pkg}`" in r.stderr
    finally:
        subprocess.run(["userdel", name], timeout=60)
