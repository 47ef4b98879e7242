"""Who may hold a connection to the daemon, checked before libzmq reads a single message.

Three guards, one thread:

- **ZAP authentication.** The daemon's ROUTER is a ZMTP PLAIN server (CURVE with ``--curve``);
  libzmq asks this thread (the ZAP handler, RFC 27) about every peer before it finishes the
  handshake. Only the password derived from the connection file's key
  (``maskd_client.transport_password``) or, with CURVE, the client key pair derived from it, is
  accepted: a peer without the key is disconnected after the greeting, so it never gets to send a
  message (no frame counts, no 1 GB frames, no replay attempts reach Python).
- **A bounded number of TCP peers.** libzmq accepts every TCP connection it is offered and has no
  cap of its own; descriptors are finite (ipc accept aborts the process on ``EMFILE``). The
  socket monitor reports each accepted TCP descriptor; past ``max_tcp_peers`` the newest is shut
  down (``shutdown(2)``, so libzmq itself closes it: the descriptor stays libzmq's). The Unix
  socket (0600 in a 0700 folder: only this user) is not capped, so the owner always gets in.
- **Idle handshakes end.** ``ZMQ_HANDSHAKE_IVL`` closes a connection that has not finished its
  handshake in ``HANDSHAKE_S`` seconds (a bare ``connect`` that never speaks).

The descriptor soft limit is raised to the hard limit at start, so the cap leaves room for files.
"""

from __future__ import annotations

import ctypes
import hmac
import logging
import sys
import threading
import time

import zmq
from maskd.plugins.maskd_client import PLAIN_USER, curve_client_secret, transport_password

log = logging.getLogger("maskd")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
MONITOR_ENDPOINT = "inproc://maskd-monitor"
HANDSHAKE_S = 5.0
RESERVED_FDS = 256  # files, the model, libzmq's own pipes and the owner's ipc connections


def raise_fd_limit() -> tuple[int, int]:
    """Soft descriptor limit -> the hard limit (at most 65536); returns (soft, hard) in force."""
    try:
        import resource
    except ImportError:  # Windows
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def tcp_peer_cap(soft_limit: int) -> int:
    """TCP peers allowed at once: a quarter of what the descriptors leave after the reserve."""
    if soft_limit <= 0:
        return 256
    return max(8, min(256, (soft_limit - RESERVED_FDS) // 4))


class LogLimiter:
    """At most ``per_minute`` log lines of one kind, then one line saying how many were dropped."""

    def __init__(self, per_minute: int = 10):
        self.per_minute = per_minute
        self.window = 0.0
        self.count = 0
        self.dropped = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self.window >= 60.0:
            if self.dropped:
                log.info("(%d similar lines in the last minute were not logged)", self.dropped)
            self.window, self.count, self.dropped = now, 0, 0
        self.count += 1
        if self.count > self.per_minute:
            self.dropped += 1
            return False
        return True


class TransportGuard:
    """Configures the ROUTER (before it binds) and runs the ZAP handler and peer cap thread."""

    def __init__(self, ctx: zmq.Context, key: bytes, curve: bool):
        self.ctx = ctx
        self.password = transport_password(key)
        self.curve_client = None
        if curve:
            from zmq.utils import z85

            self.curve_client = z85.decode(zmq.curve_public(curve_client_secret(key)))
        self.soft, _hard = raise_fd_limit()
        self.max_tcp_peers = tcp_peer_cap(self.soft)
        self.tcp_peers: dict[int, float] = {}  # fd -> accepted at
        self.counters = {"refused_peers": 0, "shed_tcp_peers": 0}
        self._stop = threading.Event()
        self._refusals = LogLimiter()
        self._sheds = LogLimiter()
        self.zap = ctx.socket(zmq.REP)
        self.zap.linger = 0
        self.zap.bind(ZAP_ENDPOINT)
        self.thread = None
        self.monitor = None

    def configure(self, router: zmq.Socket) -> None:
        """Authentication and handshake limits on ``router``; call before ``bind``."""
        router.setsockopt(zmq.ZAP_DOMAIN, b"maskd")
        if self.curve_client is None:
            router.setsockopt(zmq.PLAIN_SERVER, 1)
        router.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
        router.monitor(MONITOR_ENDPOINT, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self.monitor = self.ctx.socket(zmq.PAIR)
        self.monitor.linger = 0
        self.monitor.connect(MONITOR_ENDPOINT)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="maskd-transport-guard", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(5)
        for sock in (self.zap, self.monitor):
            if sock is not None:
                sock.close(0)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.zap, zmq.POLLIN)
        if self.monitor is not None:
            poller.register(self.monitor, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                events = dict(poller.poll(200))
                if self.monitor is not None and self.monitor in events:
                    self._peers()
                if self.zap in events:
                    for _ in range(256):
                        try:
                            request = self.zap.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.zap.send_multipart(self._answer(request))
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or self._stop.is_set():
                    return
                log.error("transport guard: %s", exc)

    def _answer(self, request: list) -> list:
        """One ZAP reply: 200 for the key's credential, 400 for anything else."""
        if len(request) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        ok = False
        if mechanism == b"PLAIN" and self.curve_client is None and len(credentials) == 2:
            ok = credentials[0] == PLAIN_USER and hmac.compare_digest(credentials[1], self.password)
        elif mechanism == b"CURVE" and self.curve_client is not None and len(credentials) == 1:
            ok = hmac.compare_digest(credentials[0], self.curve_client)
        if ok:
            return [version, request_id, b"200", b"OK", b"", b""]
        self.counters["refused_peers"] += 1
        if self._refusals.allow():
            log.info(
                "refused a connection from %s without the key (%s)",
                address.decode("ascii", "replace") or "a local socket",
                mechanism.decode("ascii", "replace"),
            )
        return [version, request_id, b"400", b"no valid maskd credential", b"", b""]

    def _peers(self) -> None:
        """Follow accepted/closed descriptors; shut down TCP peers past the cap (newest first)."""
        over = []
        for _ in range(4096):  # drain first: act on the latest state (descriptor numbers are reused)
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) < 2 or len(frames[0]) < 6:
                continue
            event = int.from_bytes(frames[0][:2], sys.byteorder)
            fd = int.from_bytes(frames[0][2:6], sys.byteorder)
            if event == zmq.EVENT_ACCEPTED:
                if frames[1].startswith(b"tcp://"):
                    self.tcp_peers[fd] = time.monotonic()
                    if len(self.tcp_peers) > self.max_tcp_peers:
                        over.append(fd)
            elif event == zmq.EVENT_DISCONNECTED:
                self.tcp_peers.pop(fd, None)
        for fd in over:
            if fd in self.tcp_peers:
                _shutdown(fd)
                self.counters["shed_tcp_peers"] += 1
                if self._sheds.allow():
                    log.info("over %d TCP connections: closed the newest", self.max_tcp_peers)


_libc = None


def _shutdown(fd: int) -> None:
    """shutdown(fd, SHUT_RDWR): libzmq sees the end of the stream and closes the socket itself."""
    global _libc
    if sys.platform == "win32":
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.shutdown(ctypes.c_int(fd), ctypes.c_int(2))
