"""The stdlib client's own ZMTP 3 implementation, against libzmq peers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import zmq
from maskd.plugins import maskd_client as mc
from maskd.server import protocol as P

from tests.daemon_fixtures import make_image, short_tmp, start_daemon
from tests.helpers import REPO


def _fake_daemon(key: bytes, delay_s: float, ready: threading.Event, port_box: list, stop: threading.Event):
    """A pyzmq ROUTER with ZMTP heartbeats ON that answers one ping after ``delay_s``."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.HEARTBEAT_IVL, 50)
    s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 400)
    s.setsockopt(zmq.HEARTBEAT_TTL, 1000)
    port_box.append(s.bind_to_random_port("tcp://127.0.0.1"))
    ready.set()
    try:
        while not stop.is_set():
            if not s.poll(50):
                continue
            ident, *frames = s.recv_multipart()
            header = json.loads(frames[2])
            end = time.monotonic() + (delay_s if header["op"] == "ping" else 0)
            while time.monotonic() < end:  # keep the I/O thread heartbeating meanwhile
                time.sleep(0.02)
            reply = (
                P.reply_fields(header["id"], "result", pong=True)
                if header["op"] == "ping"
                else P.reply_fields(header["id"], "result", limits={})
            )
            s.send_multipart([ident, *P.make_message(key, reply)])
    finally:
        s.close(0)
        ctx.term()


def test_zmtp_client_answers_heartbeat_pings(tmp_path):
    """libzmq drops a peer that does not PONG within HEARTBEAT_TIMEOUT; the reply comes after 1.5 s."""
    key = b"h" * 32
    ready, stop, port = threading.Event(), threading.Event(), []
    t = threading.Thread(target=_fake_daemon, args=(key, 1.5, ready, port, stop), daemon=True)
    t.start()
    ready.wait(10)
    cfile = tmp_path / "connection.json"
    cfile.write_text(json.dumps({"key": key.hex(), "endpoints": {"tcp": f"tcp://127.0.0.1:{port[0]}"}}))
    try:
        with mc.connect(str(cfile), backend="zmtp", timeout=10) as c:
            assert c.ping() >= 1.5
    finally:
        stop.set()
        t.join(5)


def test_plugin_client_works_without_pyzmq(tmp_path_factory):
    """The client in a Python where `import zmq` fails (GIMP's bundled Python): both transports."""
    d = start_daemon(short_tmp(tmp_path_factory, "nozmq"))
    try:
        pixels, alpha = make_image(31, 17, seed=3)
        script = textwrap.dedent(f"""
            import sys
            sys.modules["zmq"] = None  # make pyzmq unimportable
            sys.path.insert(0, {str(REPO / "plugins")!r})
            import maskd_client as mc
            out = []
            for transport in ("tcp", "ipc"):
                with mc.connect({str(d.connection_file)!r}, transport=transport) as c:
                    assert c.backend == "zmtp", c.backend
                    r = c.segment(bytes.fromhex({bytes(pixels).hex()!r}), 31, 17)
                    out.append(r.alpha.hex())
            print(" ".join(out))
        """)
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [alpha.hex(), alpha.hex()]
    finally:
        d.stop()


def test_large_frames_both_directions(tmp_path_factory):
    """A 2000x1500 RGBA frame (8-byte length) up, f32 alpha + u8 colours down, over the pure client."""
    d = start_daemon(short_tmp(tmp_path_factory, "big"))
    try:
        w, h = 2000, 1500
        pixels = bytearray(w * h * 4)
        pixels[3::4] = bytes(range(256)) * (w * h // 256) + bytes(range((w * h) % 256))
        with d.client("zmtp") as c:
            r = c.segment(pixels, w, h, alpha_dtype="u8", foreground=True)
            assert r.alpha == bytes(pixels[3::4]) and len(r.foreground) == w * h * 3
    finally:
        d.stop()
