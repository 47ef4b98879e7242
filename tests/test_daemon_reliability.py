"""Abuse a real daemon over real sockets; after every abuse it must answer ping and a correct segment.

The daemon runs the ``null`` worker (alpha = the input's alpha channel), so "correct" is exact
bytes and no model time is spent. Both client backends (pyzmq and the stdlib ZMTP client) are used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maskd.plugins import maskd_client as mc
from maskd.server import connection
from maskd.server import protocol as P

from tests.daemon_fixtures import (
    BACKENDS,
    assert_healthy,
    make_image,
    raw_socket,
    recv_reply,
    short_tmp,
    signed,
    start_daemon,
)

MAX_PIXELS = 1_000_000  # message limit = 16 MB + 4 KiB


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "rel"), "--max-pixels", str(MAX_PIXELS))
    yield d
    d.stop()


@pytest.fixture
def sock(daemon):
    s = raw_socket(daemon)
    yield s
    s.close(0)


def expect_error(sock, frames, code, timeout=10.0):
    sock.send_multipart(frames)
    reply = recv_reply(sock, timeout)
    assert reply is not None, f"no reply (expected {code})"
    header, _ = reply
    assert header["kind"] == "error" and header["code"] == code, header
    assert header["message"]
    return header


# ---------------------------------------------------------------------------- malformed traffic


@pytest.mark.parametrize(
    "frames",
    [
        [b"hello"],
        [b"", b""],
        [b"NOT-MASKD", b"x" * 32, b"{}"],
        [P.TAG, b"", b""],
        [P.TAG, b"short", b"{}"],
    ],
    ids=["one-frame", "two-empty", "bad-tag", "empty-sig", "short-sig"],
)
def test_malformed_frames_get_error_and_daemon_survives(daemon, sock, frames):
    header = expect_error(sock, frames, "auth" if frames[0] == P.TAG else "bad_request")
    assert header["retryable"] is False
    assert_healthy(daemon)


def test_future_major_version_is_refused_clearly(daemon, sock):
    h = expect_error(sock, [b"MASKD/9", b"x" * 32, b"{}"], "version")
    assert "MASKD/1" in h["message"]


def test_wrong_signature(daemon, sock):
    frames = signed(daemon, {"op": "ping"}, key=os.urandom(32))
    expect_error(sock, frames, "auth")
    frames = signed(daemon, {"op": "ping"})
    frames[2] = frames[2].replace(b'"ping"', b'"status"')  # header altered after signing
    expect_error(sock, frames, "auth")
    assert_healthy(daemon)


@pytest.mark.parametrize(
    "header",
    [
        b"not json",
        b"[1, 2]",
        b'{"op": "ping"}',
        b'{"id": "x", "op": "fly"}',
        b"\xff\xfe",
        b'{"id": "' + b"x" * 200 + b'", "op": "ping"}',
    ],
)
def test_bad_headers(daemon, sock, header):
    expect_error(sock, [P.TAG, P.sign(daemon.key, header), header], "bad_request")
    assert_healthy(daemon, backends=["zmtp"])


def test_replayed_and_stale_requests(daemon, sock):
    frames = signed(daemon, {"op": "ping"})
    sock.send_multipart(frames)
    header, _ = recv_reply(sock)
    assert header["kind"] == "result"
    h = expect_error(sock, frames, "auth")  # the same message again
    assert "replay" in h["message"]
    expect_error(sock, signed(daemon, {"op": "ping", "ts": time.time() - 3600}), "auth")
    expect_error(sock, signed(daemon, {"op": "ping", "ts": "yesterday"}), "auth")
    assert_healthy(daemon)


def test_declared_sizes_must_match_buffers(daemon, sock):
    pixels, _ = make_image(8, 8)
    frames = signed(
        daemon, {"op": "segment", "width": 8, "height": 8, "layout": "RGBA", "dtype": "u8"}, [bytes(pixels)]
    )
    frames[3] = frames[3][:-1]  # one byte short of what the signed header declares
    expect_error(sock, frames, "bad_request")
    frames = signed(daemon, {"op": "segment", "width": 8, "height": 8}, [bytes(pixels[:-4])])
    h = expect_error(sock, frames, "bad_request")  # consistent sizes, but not 8x8 RGBA
    assert "256" in h["message"]
    frames = signed(daemon, {"op": "segment", "width": 8, "height": 8}, [bytes(pixels), b"extra"])
    expect_error(sock, frames, "bad_request")
    assert_healthy(daemon)


@pytest.mark.parametrize(
    "fields,code",
    [
        ({"width": 10**9, "height": 10**9}, "too_large"),
        ({"width": 100000, "height": 1}, "too_large"),
        ({"width": -4, "height": 4}, "bad_request"),
        ({"width": 0, "height": 4}, "bad_request"),
        ({"width": 4.5, "height": 4}, "bad_request"),
        ({"width": True, "height": 4}, "bad_request"),
        ({"width": 4, "height": 4, "dtype": "f64"}, "bad_request"),
        ({"width": 4, "height": 4, "dtype": "u8", "layout": "CMYK"}, "bad_request"),
        ({"width": 4, "height": 4, "alpha_dtype": "u4"}, "bad_request"),
        ({"width": 4, "height": 4, "transfer": "gamma22"}, "bad_request"),
        ({"width": 4, "height": 4, "roi": [2, 2, 5, 5]}, "bad_request"),
        ({"width": 4, "height": 4, "options": [1]}, "bad_request"),
    ],
)
def test_absurd_dimensions_and_unsupported_types(daemon, sock, fields, code):
    frames = signed(daemon, dict({"op": "segment"}, **fields), [b"\0" * 64])
    expect_error(sock, frames, code)


def test_refine_mask_checks(daemon, sock):
    pixels, _ = make_image(8, 8)
    base = {"op": "refine", "width": 8, "height": 8}
    expect_error(sock, signed(daemon, base, [bytes(pixels), b"\0" * 64]), "bad_request")  # no mask spec
    m = {"width": 4, "height": 4, "dtype": "u8"}
    expect_error(sock, signed(daemon, dict(base, mask=m), [bytes(pixels), b"\0" * 15]), "bad_request")
    sock.send_multipart(signed(daemon, dict(base, mask=m), [bytes(pixels), b"\x80" * 16]))
    header, bufs = recv_reply(sock)
    assert header["kind"] == "result" and len(bufs[0]) == 64


def test_oversized_message_is_dropped_and_clients_refuse_it_first(daemon, sock):
    limit = daemon.info["limits"]["max_message_bytes"]
    big = b"\0" * (limit + 1)
    sock.send_multipart(signed(daemon, {"op": "segment", "width": 1, "height": 1}, [big]))
    assert recv_reply(sock, timeout=2.0) is None  # libzmq drops the connection silently
    side = 1100  # 1.21 MP > --max-pixels
    with daemon.client("zmtp") as c:
        with pytest.raises(mc.MaskdClientError) as e:
            c.segment(b"\0" * (side * side * 4), side, side)
        assert e.value.code == "too_large" and "max-pixels" in e.value.message
    assert_healthy(daemon)


# ---------------------------------------------------------------------------- fuzzing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=6))
def test_fuzz_random_frames(daemon, frames):
    s = raw_socket(daemon)
    try:
        s.send_multipart(frames or [b""])
        reply = recv_reply(s, timeout=5.0)
        assert reply is not None and reply[0]["kind"] == "error"
    finally:
        s.close(0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    op=st.sampled_from(list(P.OPS[:6]) + ["x"]),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "width",
                "height",
                "layout",
                "dtype",
                "roi",
                "options",
                "mask",
                "alpha_dtype",
                "transfer",
                "job",
                "target",
                "foreground",
                "buffers",
            ]
        ),
        json_values,
        max_size=6,
    ),
    buffers=st.lists(st.binary(max_size=64), max_size=3),
)
def test_fuzz_signed_headers(daemon, op, extra, buffers):
    """Correctly signed but arbitrary headers: always one well-formed reply, never a crash."""
    s = raw_socket(daemon)
    try:
        fields = dict(extra, op=op)
        if "buffers" not in extra:
            fields["buffers"] = [len(b) for b in buffers]
        header = dict({"v": [1, 0], "id": uuid.uuid4().hex, "ts": time.time()}, **fields)
        raw = json.dumps(header).encode()
        s.send_multipart([P.TAG, P.sign(daemon.key, raw), raw, *buffers])
        reply = recv_reply(s, timeout=5.0)
        assert reply is not None
        assert reply[0]["kind"] in ("result", "error")
        if reply[0]["kind"] == "error":
            assert reply[0]["code"] in P.ERROR_CODES
    finally:
        s.close(0)


def test_healthy_after_fuzzing(daemon):
    assert_healthy(daemon)
    with daemon.client() as c:
        assert c.status()["counters"]["rejected"] > 100


# ---------------------------------------------------------------------------- concurrency


def test_eight_concurrent_clients_get_their_own_answers(daemon):
    errors = []

    def worker(i):
        backend = BACKENDS[i % 2]
        try:
            with daemon.client(backend) as c:
                for k in range(4):
                    w, h = 50 + i, 40 + k
                    pixels, alpha = make_image(w, h, seed=i * 10 + k)
                    r = c.segment(pixels, w, h, job_id=f"c{i}-{k}")
                    assert r.alpha == alpha and (r.width, r.height) == (w, h)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"client {i} ({backend}): {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert_healthy(daemon)


def test_busy_when_queue_is_full(tmp_path_factory):
    """--max-queue 1: with one job running and one waiting, a third is refused with a retryable `busy`."""
    d = start_daemon(short_tmp(tmp_path_factory, "busy"), "--max-queue", "1")
    results = {}

    def slow(i):
        try:
            with d.client("zmtp") as c:
                results[i] = c.segment(
                    *make_image(4, 4)[:1], 4, 4, options={"null_delay_s": 2}, job_id=f"s{i}"
                )
        except mc.MaskdClientError as exc:
            results[i] = exc

    try:
        threads = []
        with d.client() as c:
            for i, wanted in enumerate(("current_job", "queued")):
                threads.append(threading.Thread(target=slow, args=(i,)))
                threads[-1].start()
                deadline = time.monotonic() + 30
                while not c.status()[wanted] and time.monotonic() < deadline:
                    time.sleep(0.02)
            st = c.status()
            assert st["current_job"] == "s0" and st["queued"] == 1
            with pytest.raises(mc.MaskdClientError) as e:
                c.segment(*make_image(4, 4)[:1], 4, 4)
            assert e.value.code == "busy" and e.value.retryable
        for t in threads:
            t.join(60)
        assert all(isinstance(r, mc.Result) for r in results.values()), results
        assert_healthy(d)
    finally:
        d.stop()


# ---------------------------------------------------------------------------- vanishing peers


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_client_disconnects_mid_upload(daemon, transport):
    """A peer that sends half a 4 MB frame and vanishes."""
    endpoint = daemon.info["endpoints"][transport]
    t = mc._ZmtpTransport(endpoint, 5.0, mc.transport_password(daemon.key))
    pixels = b"\0" * (1000 * 1000 * 4)
    header = signed(daemon, {"op": "segment", "width": 1000, "height": 1000}, [pixels])
    t.sock.sendall(b"".join(t._frame_header(len(f), more=True) + f for f in header[:3]))
    t.sock.sendall(t._frame_header(len(pixels)) + pixels[: len(pixels) // 2])
    t.close()
    assert_healthy(daemon)


def test_client_disconnects_while_its_job_runs(daemon):
    """The daemon notices the vanished client on its next progress heartbeat and cancels the job."""
    s = raw_socket(daemon)
    pixels, _ = make_image(16, 16)
    s.send_multipart(
        signed(
            daemon,
            {"op": "segment", "width": 16, "height": 16, "job": "gone-1", "options": {"null_delay_s": 60}},
            [bytes(pixels)],
        )
    )
    with daemon.client() as c:
        cancelled = c.status()["counters"]["jobs_cancelled"]
        deadline = time.monotonic() + 20
        while c.status()["current_job"] != "gone-1" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.status()["current_job"] == "gone-1"
        s.close(0)
        deadline = time.monotonic() + 15
        while c.status()["current_job"] == "gone-1" and time.monotonic() < deadline:
            time.sleep(0.05)
        st = c.status()
        assert st["current_job"] is None and st["counters"]["jobs_cancelled"] == cancelled + 1
    assert_healthy(daemon)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_mid_job(daemon, backend):
    outcome = {}
    job = f"cancel-me-{backend}"
    stages = []

    def run():
        try:
            with daemon.client(backend) as c:
                c.segment(
                    *make_image(8, 8)[:1],
                    8,
                    8,
                    options={"null_delay_s": 60},
                    job_id=job,
                    progress=lambda stage, f: stages.append(stage),
                )
        except mc.MaskdClientError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    with daemon.client() as c:
        deadline = time.monotonic() + 20
        while "null work" not in stages and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.status()["current_job"] == job
        t0 = time.monotonic()
        assert c.cancel(job) is True
    t.join(20)
    assert not t.is_alive()
    assert outcome["error"].code == "cancelled"
    assert time.monotonic() - t0 < 5
    assert "queued" in stages and "null work" in stages
    assert_healthy(daemon)


def test_progress_callback_raising_cancels_the_job(daemon):
    class Stop(Exception):
        pass

    def progress(stage, fraction):
        if stage == "null work":
            raise Stop()

    with daemon.client("zmtp") as c:
        with pytest.raises(Stop):
            c.segment(*make_image(8, 8)[:1], 8, 8, options={"null_delay_s": 60}, progress=progress)
        deadline = time.monotonic() + 10
        while c.status()["current_job"] is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.status()["current_job"] is None
    assert_healthy(daemon)


def test_cancel_queued_job_and_unknown_job(daemon):
    with daemon.client() as c:
        assert c.cancel("no-such-job") is False


# ---------------------------------------------------------------------------- daemon lifecycle


@pytest.mark.parametrize("backend", BACKENDS)
def test_daemon_killed_mid_request_gives_clear_error(tmp_path_factory, backend):
    d = start_daemon(short_tmp(tmp_path_factory, "kill"))
    outcome = {}

    def run():
        t0 = time.monotonic()
        try:
            with d.client(backend) as c:
                c.segment(*make_image(8, 8)[:1], 8, 8, options={"null_delay_s": 120}, job_id="doomed")
        except mc.MaskdClientError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    with d.client() as c:
        deadline = time.monotonic() + 20
        while c.status()["current_job"] != "doomed" and time.monotonic() < deadline:
            time.sleep(0.02)
    os.kill(d.pid, signal.SIGKILL)
    t.join(30)
    assert not t.is_alive(), "client hung after the daemon died"
    err = outcome["error"]
    assert err.code in ("connection_lost", "unavailable") and err.retryable
    assert "maskd" in err.message
    # the stale connection file is detected fast, then replaced by a new daemon
    t0 = time.monotonic()
    with pytest.raises(mc.MaskdClientError) as e:
        d.client(backend)
    assert e.value.code == "unavailable" and time.monotonic() - t0 < 1.0
    r = d.cli("status", "--json")
    st = json.loads(r.stdout)
    assert st["running"] is False and st["stale_connection_file"] is True
    old_pid, old_key = d.pid, d.key  # read now: d and d2 share the folder, so the file changes
    d2 = start_daemon(d.folder)
    try:
        assert not connection.pid_alive(old_pid)  # the killed daemon stays dead
        assert d2.pid != old_pid and d2.key != old_key  # a new daemon rewrote the file
        assert_healthy(d2)
    finally:
        d2.stop()


def test_second_serve_does_not_steal_the_endpoint(daemon):
    before = daemon.info
    r = daemon.cli("serve", "--model", "stand-in", "--worker", "null", timeout=60)
    assert r.returncode == 0 and "already running" in r.stdout
    r = daemon.cli("serve", "--foreground", "--model", "stand-in", "--worker", "null", timeout=60)
    assert r.returncode == 0 and "already running" in r.stdout + r.stderr
    assert daemon.info == before
    assert_healthy(daemon)


def test_client_reconnects_once_after_daemon_restart(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "restart"))
    clients = [d.client(b) for b in BACKENDS]
    old_key = d.info["key"]
    d.stop()
    d = start_daemon(d.folder)
    try:
        assert d.info["key"] != old_key
        for c in clients:
            pixels, alpha = make_image(9, 9)
            assert c.segment(pixels, 9, 9).alpha == alpha  # reopened with the new file, resent once
            c.close()
    finally:
        d.stop()


def test_not_running_is_detected_fast(tmp_path):
    missing = tmp_path / "none" / "connection.json"
    t0 = time.monotonic()
    with pytest.raises(mc.MaskdClientError) as e:
        mc.connect(str(missing))
    assert e.value.code == "unavailable" and "maskd serve" in e.value.message
    # a stale file pointing at a closed port
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    stale = tmp_path / "connection.json"
    stale.write_text(
        json.dumps({"key": "00" * 32, "endpoints": {"tcp": f"tcp://127.0.0.1:{port}"}, "pid": 999999})
    )
    for backend in BACKENDS:
        with pytest.raises(mc.MaskdClientError) as e:
            mc.connect(str(stale), backend=backend)
        assert e.value.code == "unavailable"
    config = {"connection_file": str(stale), "autostart": False, "daemon_command": ["false"]}
    with pytest.raises(mc.MaskdClientError) as e:
        mc.ensure_daemon(config)
    assert e.value.code == "unavailable"
    assert time.monotonic() - t0 < 3.0  # four failed attempts, each well under a second


def test_connection_file_is_private(daemon):
    assert daemon.connection_file.stat().st_mode & 0o777 == 0o600
    assert daemon.folder.stat().st_mode & 0o777 == 0o700
    info = daemon.info
    assert len(bytes.fromhex(info["key"])) == 32 and info["protocol"] == "MASKD/1"
    ipc = info["endpoints"].get("ipc")
    if ipc:
        assert os.stat(ipc[6:]).st_mode & 0o777 == 0o600


def test_status_json_and_stop(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "st"))
    r = d.cli("status", "--json")
    st = json.loads(r.stdout)
    for key in (
        "running",
        "pid",
        "endpoints",
        "connection_file",
        "protocol_version",
        "model",
        "device",
        "queue_length",
    ):
        assert key in st, key
    assert st["running"] is True and st["pid"] == d.pid and st["connection_file"] == str(d.connection_file)
    assert st["model"]["name"] == "stand-in" and st["device"] == "cpu" and st["queue_length"] == 0
    pid = d.pid
    r = d.cli("stop")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert not d.connection_file.exists()
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    r = d.cli("status")
    assert r.returncode == 3 and "not running" in r.stdout
    r = d.cli("stop")
    assert r.returncode == 0 and "not running" in r.stdout


def test_ensure_daemon_autostarts_and_reports_progress(tmp_path_factory, monkeypatch):
    from tests.helpers import REPO, STANDINS_ENV, maskd_command

    folder = short_tmp(tmp_path_factory, "auto")
    cfile = folder / "connection.json"
    config = {
        "connection_file": str(cfile),
        "autostart": True,
        "daemon_command": maskd_command() + ["serve", "--model", "stand-in", "--worker", "null"],
    }
    stages = []
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the daemon the client starts inherits these
    for name, value in STANDINS_ENV.items():
        monkeypatch.setenv(name, value)
    client = mc.ensure_daemon(config, progress=lambda s, f: stages.append(s))
    monkeypatch.undo()
    try:
        assert "starting engine" in stages
        pixels, alpha = make_image(5, 5)
        assert client.segment(pixels, 5, 5).alpha == alpha
        again = mc.ensure_daemon(config)  # already running: just connects
        assert again.status()["pid"] == client.status()["pid"]
        again.close()
        client.shutdown()
    finally:
        client.close()


def test_non_loopback_bind_is_refused(tmp_path):
    from tests.daemon_fixtures import RunningDaemon

    d = RunningDaemon(tmp_path, tmp_path / "connection.json")
    r = d.cli("serve", "--model", "stand-in", "--host", "0.0.0.0", timeout=60)
    assert r.returncode == 1 and "non-loopback" in r.stderr and "Traceback" not in r.stderr
    r = d.cli("serve", "--model", "stand-in", "--resolution", "100", timeout=60)
    assert r.returncode == 1 and "multiple of 32" in r.stderr


def test_two_serves_racing_start_one_daemon(tmp_path_factory):
    """Two editors autostarting at once: both `maskd serve` succeed, one daemon serves both."""
    import subprocess

    from tests.daemon_fixtures import RunningDaemon
    from tests.helpers import REPO, maskd_command

    folder = short_tmp(tmp_path_factory, "race")
    d = RunningDaemon(folder, folder / "connection.json")
    cmd = maskd_command() + ["serve", "--model", "stand-in", "--worker", "null"]
    procs = [
        subprocess.Popen(
            cmd, env=d.env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        import psutil

        daemons = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "--daemonized" in (p.info["cmdline"] or []) and str(d.connection_file) in p.info["cmdline"]
        ]
        assert len(daemons) == 1 and daemons[0].pid == d.pid
        assert_healthy(d)
    finally:
        d.stop()


def test_curve_encrypted_daemon(tmp_path_factory):
    """--curve: the pyzmq client connects with the server key from the file; the stdlib client says
    it needs pyzmq; a plain (unencrypted) peer gets nothing and the daemon stays healthy."""
    d = start_daemon(short_tmp(tmp_path_factory, "curve"), "--curve", "--no-ipc")
    try:
        assert len(d.info["curve_serverkey"]) == 40
        assert_healthy(d, backends=["pyzmq"])
        with pytest.raises(mc.MaskdClientError, match="pyzmq"):
            d.client("zmtp")
        s = raw_socket(d)
        s.send_multipart(signed(d, {"op": "ping"}))
        assert recv_reply(s, timeout=1.0) is None
        s.close(0)
        assert_healthy(d, backends=["pyzmq"])
    finally:
        d.stop()
