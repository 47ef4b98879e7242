"""Real maskd daemons for tests: started with the real CLI, in a private connection folder.

``start_daemon(folder, *extra)`` runs ``maskd serve`` (which returns once the daemon is ready)
and returns a ``RunningDaemon``; ``stop()`` runs ``maskd stop``. The default worker is the
``null`` transport stand-in (alpha = the input's alpha channel), so reliability tests check exact
bytes without any model; ``--worker pipeline --model stand-in`` runs the real pipeline. Both are
test-only (``tests/standins.py``): every command a ``RunningDaemon`` runs has them
(``helpers.standin_env``).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from maskd.plugins import maskd_client as mc
from maskd.server import protocol as P

from tests.helpers import run_maskd, standin_env

BACKENDS = ["pyzmq", "zmtp"]


@dataclass
class RunningDaemon:
    folder: Path
    connection_file: Path

    @property
    def info(self) -> dict:
        return json.loads(self.connection_file.read_text())

    @property
    def pid(self) -> int:
        return self.info["pid"]

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.info["key"])

    def env(self, **extra) -> dict:
        return standin_env(MASKD_CONNECTION_FILE=self.connection_file, **extra)

    def cli(self, *args, timeout=120, preexec_fn=None, **env) -> subprocess.CompletedProcess:
        return run_maskd(
            *args,
            env=self.env(**env),
            timeout=timeout,
            preexec_fn=preexec_fn,
        )

    def client(self, backend: str | None = None, transport: str | None = None, timeout: float = 15.0):
        return mc.connect(str(self.connection_file), timeout=timeout, backend=backend, transport=transport)

    def stop(self) -> None:
        self.cli("stop", timeout=60)

    def log(self) -> str:
        path = self.folder / "maskd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _nofile(limit: int):
    def preexec():
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return preexec


def start_daemon(
    folder: Path,
    *extra: str,
    worker: str = "null",
    model: str = "stand-in",
    timeout: float = 300,
    nofile: int | None = None,
) -> RunningDaemon:
    """``nofile``: run the daemon with this descriptor limit (soft and hard: it cannot raise it)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    d = RunningDaemon(folder, folder / "connection.json")
    args = ["serve", "--worker", worker]
    if model and "--weights" not in extra:
        args += ["--model", model]
    r = d.cli(*args, *extra, timeout=timeout, preexec_fn=_nofile(nofile) if nofile else None)
    if r.returncode != 0:
        pytest.fail(f"maskd serve failed ({r.returncode}): {r.stdout}{r.stderr}\n{d.log()[-3000:]}")
    return d


def short_tmp(tmp_path_factory, name: str) -> Path:
    """A short folder path (ipc socket paths must stay under ~100 bytes)."""
    base = Path(tmp_path_factory.getbasetemp())
    path = base / f"{name}-{uuid.uuid4().hex[:6]}"
    if len(str(path)) > 80:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"md-{name}-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_image(width: int, height: int, seed: int = 0) -> tuple[bytearray, bytes]:
    """RGBA u8 pixels whose alpha channel is a known pattern; returns (pixels, expected alpha)."""
    pixels = bytearray((i * 31 + seed) & 0xFF for i in range(width * height * 4))
    alpha = bytes((x * 7 + y * 13 + seed) & 0xFF for y in range(height) for x in range(width))
    pixels[3::4] = alpha
    return pixels, alpha


def assert_healthy(daemon: RunningDaemon, backends=BACKENDS, transport: str | None = None) -> None:
    """The daemon answers ping and a correct (null-worker) segment on every client backend."""
    pixels, alpha = make_image(37, 23, seed=5)
    for backend in backends:
        with daemon.client(backend, transport) as c:
            assert c.ping() < 5.0
            r = c.segment(pixels, 37, 23)
            assert r.alpha == alpha, f"{backend}: wrong alpha after abuse"


def raw_socket(daemon: RunningDaemon, authenticated: bool = True):
    """A bare pyzmq DEALER to the daemon (for sending malformed traffic). ``authenticated``: it
    passes the transport check (the PLAIN password derived from the key), as a buggy client with
    the key would; without it the daemon refuses the connection at the handshake."""
    import zmq

    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if authenticated:
        s.plain_username, s.plain_password = mc.PLAIN_USER, mc.transport_password(daemon.key)
    s.connect(daemon.info["endpoints"]["tcp"])
    return s


def signed(daemon: RunningDaemon, fields: dict, buffers=(), key: bytes | None = None) -> list:
    header = dict(
        {"v": [1, 0], "id": uuid.uuid4().hex, "ts": time.time(), "buffers": [len(b) for b in buffers]},
        **fields,
    )
    return P.make_message(key or daemon.key, header, buffers)


def recv_reply(sock, timeout: float = 10.0):
    """(header dict, buffers) of the next message, skipping progress; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sock.poll(int((deadline - time.monotonic()) * 1000) + 1):
            return None
        frames = sock.recv_multipart()
        header = json.loads(frames[2])
        if header.get("kind") != "progress":
            return header, frames[3:]
    return None
