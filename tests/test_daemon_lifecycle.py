"""How the daemon starts, is found and ends, around the edges (issue 17): a batch command killed
with SIGKILL takes the daemon it started along; a stopped (SIGSTOP) daemon gets the right advice;
an IPv6 loopback address works."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest
from maskd.server import connection

from tests.conftest import REPO, maskd_command
from tests.daemon_fixtures import assert_healthy, short_tmp, start_daemon
from tests.helpers import standin_env


def test_killed_batch_command_takes_its_daemon_along(tmp_path_factory, tmp_path):
    """`maskd remove` starts a daemon for its batch; kill -9 of the command (no `finally` runs)
    must not leave that daemon running."""
    import cv2

    folder = short_tmp(tmp_path_factory, "own")
    folder.chmod(0o700)
    cfile = folder / "connection.json"
    src = tmp_path / "in"
    src.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    for i in range(40):
        cv2.imwrite(str(src / f"p{i:02d}.png"), img)
    proc = subprocess.Popen(
        maskd_command() + ["remove", str(src), "-o", str(tmp_path / "out"), "--model", "stand-in"],
        env=standin_env(MASKD_CONNECTION_FILE=cfile),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    info = None
    while time.monotonic() < deadline and proc.poll() is None:
        info = connection.read(cfile)
        if info and connection.pid_alive(info.get("pid")):
            break
        time.sleep(0.05)
    assert proc.poll() is None and info, "the batch ended before its daemon was seen"
    proc.kill()
    proc.wait(10)
    daemon = psutil.Process(info["pid"])
    try:
        daemon.wait(15)
    except psutil.TimeoutExpired:
        daemon.kill()
        pytest.fail("the daemon started by the killed batch command is still running")


def test_stopped_daemon_gets_the_right_advice(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "stop"))
    os.kill(d.pid, signal.SIGSTOP)
    try:
        r = d.cli("status", timeout=60)
        assert r.returncode == 3
        assert "stopped" in r.stdout and f"kill -CONT {d.pid}" in r.stdout and "replaces" not in r.stdout
        t0 = time.monotonic()
        r = d.cli("serve", "--model", "stand-in", "--worker", "null", timeout=120)
        assert r.returncode == 1 and f"kill -CONT {d.pid}" in r.stderr, r.stdout + r.stderr
        assert time.monotonic() - t0 < 30  # told at once, not after a start timeout
    finally:
        os.kill(d.pid, signal.SIGCONT)
    try:
        assert_healthy(d)
    finally:
        d.stop()


def test_ipv6_loopback(tmp_path_factory):
    """`--host ::1` serves (both client backends) or is refused with a clear message."""
    folder = short_tmp(tmp_path_factory, "v6")
    folder.chmod(0o700)
    r = subprocess.run(
        maskd_command() + ["serve", "--model", "stand-in", "--worker", "null", "--host", "::1", "--no-ipc"],
        env=standin_env(MASKD_CONNECTION_FILE=folder / "connection.json"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        assert "cannot listen" in r.stderr and "Traceback" not in r.stderr, r.stderr
        return
    from tests.daemon_fixtures import RunningDaemon

    d = RunningDaemon(folder, folder / "connection.json")
    try:
        assert d.info["endpoints"]["tcp"].startswith("tcp://[::1]:")
        assert_healthy(d)
    finally:
        d.stop()
