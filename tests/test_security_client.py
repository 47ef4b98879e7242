"""Fake daemons (issue 17): another local user plants a connection file or the fallback folder.

Without ``XDG_RUNTIME_DIR`` (cron, ssh without logind, su) the connection file lives in
``<tmp>/maskd-<uid>/``, a name anyone can create first. The attacker here is a real second uid
that plants the folder and a connection file pointing at its own listener; clients, ``maskd
status`` and ``maskd serve`` must refuse it, and the attacker must receive no connection at all.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from maskd.plugins import maskd_client as mc

from tests.helpers import run_maskd, standin_env
from tests.second_user import attacker_ids, run_as_attacker

PLANT = """
import json, socket, sys
folder = sys.argv[1]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
listener.settimeout(0.2)
os.makedirs(folder, mode=int(sys.argv[2], 8))
os.chmod(folder, int(sys.argv[2], 8))
port = listener.getsockname()[1]
endpoints = {"tcp": f"tcp://127.0.0.1:{port}"}
info = {"key": "11" * 32, "endpoints": endpoints, "pid": 1, "transport_auth": "plain"}
fd = os.open(os.path.join(folder, "connection.json"), os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, json.dumps(info).encode())
os.close(fd)
print("planted", flush=True)
accepted = 0
while not sys.stdin.closed:
    try:
        conn, _ = listener.accept()
        accepted += 1
        conn.close()
    except socket.timeout:

        if select.select([sys.stdin], [], [], 0)[0]:
            break
print("accepted", accepted, flush=True)
"""


@pytest.fixture
def shared_tmp():
    """A /tmp-like folder (world-writable, sticky) standing in for the system's temp folder
    (directly under /tmp: pytest's own temp folders are private, the attacker could not enter)."""
    tmp = Path(tempfile.mkdtemp(prefix="maskd-shared-", dir="/tmp"))
    tmp.chmod(0o1777)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def planted(shared_tmp):
    """The attacker has created ``<tmp>/maskd-<our uid>/`` with a connection file to its listener."""
    folder = shared_tmp / f"maskd-{os.getuid()}"
    attacker = run_as_attacker(PLANT, str(folder), "700")
    line = attacker.stdout.readline()
    assert line.startswith("planted"), line + attacker.stderr.read()
    yield folder
    attacker.stdin.write("\n")
    attacker.stdin.close()
    out = attacker.stdout.read()
    attacker.wait(10)
    assert "accepted 0" in out, f"a client talked to the fake daemon: {out}"


def _env(shared_tmp, **extra) -> dict:
    env = standin_env(TMPDIR=shared_tmp, **extra)
    for name in ("XDG_RUNTIME_DIR", "MASKD_CONNECTION_FILE"):
        env.pop(name, None)
    return env


def _cli(env, *args) -> subprocess.CompletedProcess:
    return run_maskd(*args, env=env, timeout=120)


def test_clients_refuse_a_fallback_folder_planted_by_another_user(planted, shared_tmp, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("MASKD_CONNECTION_FILE", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert mc.default_connection_file() == str(planted / "connection.json")
    for backend in ("pyzmq", "zmtp"):
        with pytest.raises(mc.MaskdClientError) as e:
            mc.connect(backend=backend)
        assert e.value.code == "auth" and "another user" in e.value.message
    with pytest.raises(mc.MaskdClientError) as e:  # the plugins' autostart neither reads nor logs there
        mc.ensure_daemon({"daemon_command": [sys.executable, "-c", "pass"], "autostart": True})
    assert e.value.code == "auth"
    assert not (planted / "autostart.log").exists()


def test_cli_refuses_a_planted_fallback_folder(planted, shared_tmp):
    env = _env(shared_tmp)
    r = _cli(env, "status")
    assert r.returncode == 3 and "another user" in r.stdout and "Traceback" not in r.stderr
    r = _cli(env, "serve", "--worker", "null", "--model", "stand-in")
    assert r.returncode != 0 and "another user" in r.stderr and "Traceback" not in r.stderr


def test_connection_file_of_another_user_is_refused(tmp_path):
    """Even in our own folder: a file another uid owns, or one others may write, is not trusted."""
    uid, gid = attacker_ids()
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o700)
    cfile = folder / "connection.json"
    cfile.write_text(json.dumps({"key": "22" * 32, "endpoints": {"tcp": "tcp://127.0.0.1:9"}}))
    cfile.chmod(0o600)
    os.chown(cfile, uid, gid)
    with pytest.raises(mc.MaskdClientError) as e:
        mc.read_connection_file(str(cfile))
    assert e.value.code == "auth"
    os.chown(cfile, os.getuid(), os.getgid())
    cfile.chmod(0o666)
    with pytest.raises(mc.MaskdClientError) as e:
        mc.read_connection_file(str(cfile))
    assert e.value.code == "auth"
    cfile.chmod(0o600)
    folder.chmod(0o777)
    with pytest.raises(mc.MaskdClientError) as e:
        mc.read_connection_file(str(cfile))
    assert e.value.code == "auth" and "writable by other users" in e.value.message
    folder.chmod(0o700)
    assert mc.read_connection_file(str(cfile))["key"] == "22" * 32


def test_serve_does_not_chmod_a_shared_folder(shared_tmp):
    """`--connection-file DIR/x.json` with a sticky world-writable DIR: refused, DIR's mode kept."""
    r = _cli(
        _env(shared_tmp),
        "serve",
        "--worker",
        "null",
        "--model",
        "stand-in",
        "--connection-file",
        str(shared_tmp / "x.json"),
    )
    assert r.returncode != 0 and "writable by other users" in r.stderr and "Traceback" not in r.stderr
    assert stat.S_IMODE(shared_tmp.stat().st_mode) == 0o1777
    assert not (shared_tmp / "x.json").exists()


def test_autostart_log_never_follows_a_symlink(tmp_path):
    folder = tmp_path / "conn"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (folder / "autostart.log").symlink_to(victim)
    config = {
        "daemon_command": [sys.executable, "-c", "import sys; print('daemon output'); sys.exit(3)"],
        "connection_file": str(folder / "connection.json"),
    }
    with pytest.raises(mc.MaskdClientError):
        mc.ensure_daemon(config, start_timeout=20)
    assert victim.read_text() == "precious\n"
