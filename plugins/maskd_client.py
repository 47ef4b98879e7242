"""maskd client: the one file the GIMP and Krita plugins carry (standard library only).

It talks to the maskd daemon over ZeroMQ. When ``pyzmq`` is importable it is used; otherwise the
client speaks ZMTP 3 itself over TCP or a Unix socket, so it runs in any Python 3.10+ (GIMP's
bundled Python on Windows/macOS/Flatpak, Krita's) without numpy or compiled modules.

Usage::

    import maskd_client as mc

    config = mc.load_plugin_config(os.path.dirname(__file__))      # maskd_config.json
    try:
        client = mc.ensure_daemon(config, progress=lambda stage, f: print(stage, f))
        result = client.segment(rgba_bytes, width, height, layout="RGBA", dtype="u8",
                                options={"quality": "default", "decontaminate": True},
                                alpha_dtype="u8", foreground=False,
                                progress=lambda stage, fraction: None)
        alpha = result.alpha           # bytes, width*height samples of alpha_dtype, row-major
        print(result.info["timings"], result.info["model"], result.info["device"])
    except mc.MaskdClientError as exc:
        show_message(str(exc))         # exc.code, exc.retryable
    finally:
        client.close()

Pixel conventions: buffers are row-major, tightly packed, little-endian samples; ``layout`` is one
of RGBA, BGRA, RGB, GRAY, GRAYA and ``dtype`` one of u8, u16, f16, f32 (f16 needs no numpy:
``struct`` format ``'e'``). Integer samples are sRGB-encoded; float samples from editors are usually
linear light, so say which with ``transfer="linear"`` (default ``"srgb"``). The daemon converts.
An existing alpha channel in the pixels is respected: pixels that are fully transparent there
stay transparent in the result.

Timeouts: "daemon not running" is reported in well under a second; once a request is sent, the
daemon streams progress at least every second, and the client gives up after ``timeout`` seconds of
silence (plus time to move the payload at a pessimistic 20 MB/s). A connection that dies before the
reply is reopened once (the connection file is re-read) and the request resent with the same job
id; the daemon never runs one job id twice.

Environment: ``MASKD_CONNECTION_FILE`` (where the daemon's connection file is),
``MASKD_CLIENT_BACKEND=pyzmq|zmtp`` (force a transport implementation),
``MASKD_TRANSPORT=tcp|ipc`` (force an endpoint).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from typing import NamedTuple

__all__ = [
    "MaskdClientError",
    "Client",
    "Result",
    "connect",
    "ensure_daemon",
    "load_plugin_config",
    "default_connection_file",
    "read_connection_file",
    "PROTOCOL_VERSION",
    "crop_pixels",
    "place_pixels",
    "Bounds",
    "parse_colour",
    "srgb_to_linear",
    "linear_to_srgb",
]

CLIENT_VERSION = "0.1.0"
PROTOCOL_TAG = b"MASKD/1"  # first frame of every message; the major version lives in it
PROTOCOL_VERSION = (1, 0)  # (major, minor); minor versions only add fields
CONFIG_NAME = "maskd_config.json"
# `python -m` module names that installations made before the `maskd` namespace wrote into plugin
# configs and autostart entries, and today's names for them
OLD_MODULES = {"server": "maskd.server", "installers.service": "maskd.installers.service"}
LAYOUT_CHANNELS = {"RGBA": 4, "BGRA": 4, "RGB": 3, "GRAY": 1, "GRAYA": 2}
DTYPE_BYTES = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
ALPHA_DTYPES = ("u8", "u16", "f32")

PROBE_TIMEOUT = 0.5  # seconds to decide "nothing listens"
# seconds for the transport handshake (PLAIN login through the daemon's ZAP handler) once the
# endpoint answered the probe: generous, a busy machine (a CPU forward on every core) is slow
HANDSHAKE_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 15.0  # seconds of silence from the daemon before giving up
PESSIMISTIC_BYTES_PER_S = 20e6
BIG_FRAME = 1 << 20


class MaskdClientError(Exception):
    """A failure the plugin shows to the user: ``code`` (stable), ``message``, ``retryable``.

    Codes: ``unavailable`` (daemon not running / unreachable), ``timeout``, ``connection_lost``,
    ``bad_request``, ``auth``, ``too_large``, ``busy``, ``cancelled``, ``out_of_memory``,
    ``model_unavailable``, ``internal``, ``version``.
    """

    def __init__(self, code: str, message: str, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class _ConnectionLost(Exception):
    """The transport died before a reply came (internal: triggers the one reconnect)."""


class Result:
    """A finished ``segment``/``refine``: ``alpha`` bytes (W×H of ``alpha_dtype``), optional
    ``foreground`` bytes (W×H×3 straight colours, ``foreground_dtype``, same transfer as the
    input), optional ``shadow`` bytes (W×H of ``alpha_dtype``: a generated shadow's alpha, to fill
    with ``shadow_info["color"]`` on a layer under the subject), and ``info`` (``timings``,
    ``model``, ``device``, ...)."""

    def __init__(
        self,
        alpha,
        foreground,
        info,
        width,
        height,
        alpha_dtype,
        foreground_dtype=None,
        shadow=None,
        shadow_info=None,
    ):
        self.alpha = alpha
        self.foreground = foreground
        self.info = info
        self.width = width
        self.height = height
        self.alpha_dtype = alpha_dtype
        self.foreground_dtype = foreground_dtype
        self.shadow = shadow
        self.shadow_info = shadow_info or {}

    def __repr__(self) -> str:
        return (
            f"Result({self.width}x{self.height} alpha={self.alpha_dtype}, "
            f"foreground={'yes' if self.foreground is not None else 'no'})"
        )


# --------------------------------------------------------------------------- connection file


def default_connection_file() -> str:
    """``$MASKD_CONNECTION_FILE``, else ``$XDG_RUNTIME_DIR/maskd/connection.json``, else
    ``<tmp>/maskd-<uid>/connection.json``."""
    override = os.environ.get("MASKD_CONNECTION_FILE")
    if override:
        return override
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "maskd", "connection.json")
    uid = os.getuid() if hasattr(os, "getuid") else (os.environ.get("USERNAME") or "user")
    return os.path.join(tempfile.gettempdir(), f"maskd-{uid}", "connection.json")


def _trusted_owner(uid: int) -> bool:
    """Files and folders we rely on must be ours (or root's: root can read everything anyway)."""
    return uid in (os.getuid(), 0)


def check_private_dir(folder: str, what: str = "maskd folder") -> None:
    """Refuse a folder another user could have planted: a symlink, one owned by someone else,
    or one that others may write to (they could swap the connection file or the socket)."""
    if not hasattr(os, "getuid"):  # Windows: the per-user profile folder's ACLs protect it
        return
    try:
        st = os.lstat(folder)
    except OSError as exc:
        raise MaskdClientError("unavailable", f"cannot check the {what} {folder}: {exc}", True) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise MaskdClientError("auth", f"the {what} {folder} is not a plain folder (a symlink?); refusing it")
    if not _trusted_owner(st.st_uid):
        raise MaskdClientError(
            "auth",
            f"the {what} {folder} belongs to another user (uid {st.st_uid}); refusing it. Remove it, "
            "or set MASKD_CONNECTION_FILE to a path in a folder of your own.",
        )
    if st.st_mode & 0o022:
        raise MaskdClientError(
            "auth",
            f"the {what} {folder} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            "refusing it. `chmod go-w` it, or set MASKD_CONNECTION_FILE to a private folder.",
        )


def make_private_dir(folder: str, what: str = "maskd folder") -> None:
    """Create ``folder`` 0700 if missing, then check it as ``check_private_dir`` does (a folder
    someone else created first, e.g. ``/tmp/maskd-<uid>``, is refused, never reused)."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise MaskdClientError("unavailable", f"cannot create the {what} {folder}: {exc}", True) from None
    check_private_dir(folder, what)


def read_connection_file(path: str | None = None) -> dict:
    """The daemon's connection file, refused when another user owns it or its folder, or when
    others may write either (a planted file would send our pixels to their fake daemon)."""
    path = path or default_connection_file()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise MaskdClientError(
            "unavailable",
            f"maskd is not running (no connection file at {path}). Start it with `maskd serve`.",
            True,
        ) from None
    except OSError as exc:
        raise MaskdClientError(
            "unavailable", f"cannot read the maskd connection file {path}: {exc}", True
        ) from None
    try:
        with os.fdopen(fd, encoding="utf-8") as fh:
            if hasattr(os, "getuid"):
                st = os.fstat(fh.fileno())
                if not _trusted_owner(st.st_uid) or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode):
                    raise MaskdClientError(
                        "auth",
                        f"the maskd connection file {path} belongs to another user or others may "
                        f"write it (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); refusing it",
                    )
            info = json.load(fh)
    except (OSError, ValueError) as exc:
        raise MaskdClientError(
            "unavailable", f"cannot read the maskd connection file {path}: {exc}", True
        ) from None
    check_private_dir(os.path.dirname(os.path.abspath(path)), "connection file's folder")
    if not isinstance(info, dict) or "key" not in info or "endpoints" not in info:
        raise MaskdClientError("unavailable", f"{path} is not a maskd connection file", True)
    info["_path"] = path
    return info


def current_command(command: list) -> list[str]:
    """``command`` with an earlier layout's ``-m server`` (see ``OLD_MODULES``) mapped to today's
    module, so a config written before the upgrade keeps working until the installer rewrites it."""
    out = [str(c) for c in command]
    for i in range(1, len(out)):
        if out[i - 1] == "-m" and out[i] in OLD_MODULES:
            out[i] = OLD_MODULES[out[i]]
    return out


def load_plugin_config(folder: str) -> dict:
    """The plugin's ``maskd_config.json`` (written by the installer), with defaults filled in."""
    config = {"daemon_command": [], "connection_file": None, "autostart": True}
    path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = json.load(fh)
        if isinstance(loaded, dict):
            config.update(loaded)
        if isinstance(config["daemon_command"], list):
            config["daemon_command"] = current_command(config["daemon_command"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise MaskdClientError(
            "bad_request",
            f"the plugin configuration {path} is unreadable: {exc}. "
            "Reinstall the plugins with `maskd install-plugins`.",
        ) from None
    return config


# --------------------------------------------------------------------------- signing / framing


def sign(key: bytes, header: bytes) -> bytes:
    """HMAC-SHA256 over the tag and the JSON header frame (buffers are covered by their declared sizes)."""
    return hmac.new(key, PROTOCOL_TAG + header, hashlib.sha256).digest()


PLAIN_USER = b"maskd"


def transport_password(key: bytes) -> bytes:
    """The ZMTP PLAIN password that gets a connection past the daemon's ZAP check: derived from
    the key (never the key itself), so only readers of the connection file can connect at all."""
    return hmac.new(key, b"maskd transport v1", hashlib.sha256).hexdigest().encode("ascii")


def curve_client_secret(key: bytes) -> bytes:
    """The CURVE client secret key (Z85) of a ``--curve`` daemon's clients, derived from the key:
    the daemon's ZAP check accepts only its public half."""
    from zmq.utils import z85

    return z85.encode(hmac.new(key, b"maskd curve client v1", hashlib.sha256).digest())


def _encode_header(fields: dict) -> bytes:
    return json.dumps(fields, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _split_endpoint(endpoint: str):
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        return "tcp", (host.strip("[]"), int(port))
    if endpoint.startswith("ipc://"):
        return "ipc", endpoint[6:]
    raise MaskdClientError("bad_request", f"unsupported endpoint {endpoint!r}")


def _probe(endpoint: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail in well under a second when nothing listens at ``endpoint`` (plain socket connect)."""
    kind, addr = _split_endpoint(endpoint)
    try:
        if kind == "tcp":
            s = socket.create_connection(addr, timeout=timeout)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(addr)
        s.close()
    except OSError as exc:
        raise MaskdClientError(
            "unavailable",
            f"maskd is not running (nothing listens at {endpoint}: "
            f"{exc.strerror or exc}). Start it with `maskd serve`.",
            True,
        ) from None


# --------------------------------------------------------------------------- transports


class _ZmtpTransport:
    """A ZMTP 3.1 DEALER peer over a plain socket (PLAIN mechanism with ``password``: RFC 24)."""

    def __init__(self, endpoint: str, timeout: float, password: bytes = b""):
        kind, addr = _split_endpoint(endpoint)
        self.endpoint = endpoint
        self.password = password
        self._pool: dict[int, bytearray] = {}
        try:
            if kind == "tcp":
                self.sock = socket.create_connection(addr, timeout=timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(addr)
            self._handshake()
        except (OSError, _ConnectionLost) as exc:
            self.close()
            raise MaskdClientError("unavailable", f"cannot reach maskd at {endpoint}: {exc}", True) from None

    def _handshake(self) -> None:
        mechanism = b"PLAIN" if self.password else b"NULL"
        greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x01" + mechanism.ljust(20, b"\x00") + b"\x00" * 32
        self.sock.sendall(greeting)
        peer = self._read_exact(64)
        if peer[0] != 0xFF or peer[9] != 0x7F or peer[10] < 3:
            raise _ConnectionLost("the peer does not speak ZMTP 3")
        if bytes(peer[12:32]).rstrip(b"\x00") != mechanism:
            raise _ConnectionLost(f"the peer wants a security mechanism other than {mechanism.decode()}")
        if self.password:  # HELLO(user, password) -> WELCOME, then the metadata goes in INITIATE
            user, password = (
                bytes([len(PLAIN_USER)]) + PLAIN_USER,
                bytes([len(self.password)]) + self.password,
            )
            self._send_frame(b"\x05HELLO" + user + password, command=True)
            self._expect(b"WELCOME")
        props = b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
        self._send_frame((b"\x08INITIATE" if self.password else b"\x05READY") + props, command=True)
        self._expect(b"READY")

    def _expect(self, command: bytes) -> None:
        try:
            name, body = self._read_command()
        except _ConnectionLost as exc:  # libzmq closes at once when its ZAP handler says no
            raise _ConnectionLost(f"the daemon refused the handshake ({exc}): wrong key?") from None
        if name == b"ERROR":
            raise _ConnectionLost(f"the peer refused the handshake: {body[1:].decode('utf-8', 'replace')}")
        if name != command:
            raise _ConnectionLost(f"unexpected ZMTP command {name!r}")

    def _read_exact(self, n: int, into: bytearray | None = None):
        buf = bytearray(n) if into is None else into
        view = memoryview(buf)[:n]
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError:
                raise
            except OSError as exc:
                raise _ConnectionLost(str(exc)) from None
            if k == 0:
                raise _ConnectionLost("the daemon closed the connection")
            got += k
        return buf if into is None else view

    def _frame_header(self, size: int, more: bool = False, command: bool = False) -> bytes:
        flags = (1 if more else 0) | (4 if command else 0)
        if size > 255:
            return struct.pack(">BQ", flags | 2, size)
        return struct.pack(">BB", flags, size)

    def _send_frame(self, body: bytes, command: bool = False) -> None:
        self.sock.sendall(self._frame_header(len(body), command=command) + body)

    def _read_frame(self, slot: int = -1):
        flags = self._read_exact(1)[0]
        if flags & 2:
            size = struct.unpack(">Q", self._read_exact(8))[0]
        else:
            size = self._read_exact(1)[0]
        if size >= BIG_FRAME and slot >= 0:  # reuse big receive buffers: no page faults per image
            buf = self._pool.get(slot)
            if buf is None or len(buf) < size:
                buf = self._pool[slot] = bytearray(size)
            return flags, self._read_exact(size, buf)
        body = self._read_exact(size) if size else bytearray()
        return flags, body

    def _read_command(self):
        flags, body = self._read_frame()
        if not flags & 4:
            raise _ConnectionLost("expected a ZMTP command frame")
        n = body[0]
        return bytes(body[1 : 1 + n]), body[1 + n :]

    def send(self, frames) -> None:
        try:
            pending = []
            last = len(frames) - 1
            for i, frame in enumerate(frames):
                size = memoryview(frame).nbytes
                pending.append(self._frame_header(size, more=i < last))
                if size > 65536:
                    self.sock.sendall(b"".join(pending))
                    self.sock.sendall(frame)
                    pending = []
                else:
                    pending.append(bytes(frame))
            if pending:
                self.sock.sendall(b"".join(pending))
        except TimeoutError:
            raise _ConnectionLost("sending to the daemon timed out") from None
        except OSError as exc:
            raise _ConnectionLost(str(exc)) from None

    def recv(self, timeout: float):
        """One message (list of bytes-like frames), or None after ``timeout`` seconds of silence.
        Big frames are views of reused buffers: valid until the next ``recv``."""
        self.sock.settimeout(max(timeout, 0.001))
        frames = []
        try:
            while True:
                flags, body = self._read_frame(len(frames))
                if flags & 4:  # command: PING -> PONG, ERROR is fatal, others ignored
                    n = body[0] if body else 0
                    name = bytes(body[1 : 1 + n])
                    if name == b"PING":
                        self._send_frame(b"\x04PONG" + bytes(body[1 + n + 2 :]), command=True)
                    elif name == b"ERROR":
                        raise _ConnectionLost("the daemon reported a protocol error")
                    continue
                frames.append(body)
                if not flags & 1:
                    return frames
        except TimeoutError:
            if frames:
                raise _ConnectionLost("the daemon stopped sending in the middle of a message") from None
            return None

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
            self.sock = None


class _PyzmqTransport:
    """A pyzmq DEALER (zero-copy sends, a monitor to notice a vanished daemon at once)."""

    def __init__(self, endpoint: str, timeout: float, key: bytes = b"", curve_serverkey: str | None = None):
        import zmq

        self.zmq = zmq
        self.endpoint = endpoint
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        if endpoint.startswith("tcp://["):
            self.sock.setsockopt(zmq.IPV6, 1)
        if curve_serverkey:  # an encrypted (non-loopback) daemon: the key pair derived from the key
            secret = curve_client_secret(key)
            self.sock.curve_publickey, self.sock.curve_secretkey = zmq.curve_public(secret), secret
            self.sock.curve_serverkey = curve_serverkey.encode("ascii")
        elif key:
            self.sock.plain_username, self.sock.plain_password = PLAIN_USER, transport_password(key)
        self.mon = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)
        self.sock.connect(endpoint)
        if not self.sock.poll(int(timeout * 1000), zmq.POLLOUT):
            self.close()
            raise MaskdClientError(
                "unavailable", f"cannot reach maskd at {endpoint} (no handshake within {timeout:.1f} s)", True
            )
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.mon, zmq.POLLIN)

    def _check_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self.mon.poll(0):
            event = recv_monitor_message(self.mon)
            if event["event"] & (self.zmq.EVENT_DISCONNECTED | self.zmq.EVENT_CLOSED):
                raise _ConnectionLost("the daemon closed the connection")

    def send(self, frames) -> None:
        zmq = self.zmq
        self._check_monitor()
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            raise _ConnectionLost("the daemon is not connected") from None
        except zmq.ZMQError as exc:
            raise _ConnectionLost(str(exc)) from None

    def recv(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            events = dict(self.poller.poll(int(left * 1000) + 1))
            if self.sock in events:
                return self._take()
            if self.mon in events:
                try:
                    self._check_monitor()
                except _ConnectionLost:
                    # a reply sent just before the daemon closed may still be in flight
                    if self.sock.poll(200, self.zmq.POLLIN):
                        return self._take()
                    raise

    def _take(self):
        return [f.bytes if len(f) < 65536 else f.buffer for f in self.sock.recv_multipart(copy=False)]

    def close(self) -> None:
        for s in ("mon", "sock"):
            sock = getattr(self, s, None)
            if sock is not None:
                try:
                    if s == "sock":
                        sock.disable_monitor()
                except Exception:
                    pass
                sock.close(0)
                setattr(self, s, None)
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
            self.ctx = None


def _pick_backend(backend: str | None) -> str:
    backend = (backend or os.environ.get("MASKD_CLIENT_BACKEND") or "auto").lower()
    if backend in ("auto", "pyzmq"):
        try:
            import zmq  # noqa: F401

            return "pyzmq"
        except Exception:
            if backend == "pyzmq":
                raise MaskdClientError(
                    "bad_request", "MASKD_CLIENT_BACKEND=pyzmq but pyzmq is not importable"
                ) from None
    return "zmtp"


def _pick_endpoint(info: dict, transport: str | None) -> str:
    endpoints = info.get("endpoints") or {}
    transport = (transport or os.environ.get("MASKD_TRANSPORT") or "auto").lower()
    ipc = endpoints.get("ipc")
    ipc_ok = bool(ipc) and hasattr(socket, "AF_UNIX") and os.path.exists(ipc[6:])
    if transport == "ipc":
        if not ipc_ok:
            raise MaskdClientError("unavailable", "the daemon offers no usable ipc endpoint", True)
        return ipc
    if transport == "auto" and ipc_ok:
        return ipc
    if not endpoints.get("tcp"):
        raise MaskdClientError("unavailable", "the connection file lists no endpoint", True)
    return endpoints["tcp"]


# --------------------------------------------------------------------------- client


class Client:
    """One connection to the daemon. Not shared between threads, except ``cancel`` (thread-safe)."""

    def __init__(
        self,
        connection_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        backend: str | None = None,
        transport: str | None = None,
    ):
        self.connection_file = connection_file or default_connection_file()
        self.timeout = float(timeout)
        self.backend = _pick_backend(backend)
        self._transport_choice = transport
        self._conn = None
        self.info: dict = {}
        self.hello_info: dict = {}
        self._current_job = None
        self.last_job = None  # the id of the latest segment/refine (for ``cancel`` after an interrupt)
        self._open()

    # -- connection
    def _open(self) -> None:
        self.info = read_connection_file(self.connection_file)
        self.key = bytes.fromhex(self.info["key"])
        self.endpoint = _pick_endpoint(self.info, self._transport_choice)
        _probe(self.endpoint)
        curve = self.info.get("curve_serverkey")
        if curve:
            if self.backend != "pyzmq":
                raise MaskdClientError(
                    "unavailable",
                    "this maskd encrypts its connections (CURVE), which "
                    "needs pyzmq; install pyzmq for this Python or use a local maskd",
                )
            self._conn = _PyzmqTransport(self.endpoint, HANDSHAKE_TIMEOUT, self.key, curve)
        else:
            key = self.key if self.info.get("transport_auth") == "plain" else b""
            if self.backend == "pyzmq":
                self._conn = _PyzmqTransport(self.endpoint, HANDSHAKE_TIMEOUT, key)
            else:
                password = transport_password(key) if key else b""
                self._conn = _ZmtpTransport(self.endpoint, HANDSHAKE_TIMEOUT, password)
        try:
            self.hello_info = self._request(
                {"op": "hello", "client": f"maskd_client/{CLIENT_VERSION}"}, timeout=min(self.timeout, 10.0)
            )[0]
        except _ConnectionLost as exc:
            self.close()
            raise MaskdClientError(
                "unavailable", f"maskd at {self.endpoint} did not answer: {exc}", True
            ) from None

    def _reopen(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._open()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def limits(self) -> dict:
        return self.hello_info.get("limits", {})

    # -- one request
    def _request(self, fields: dict, buffers=(), progress=None, timeout=None, job_id=None):
        """Send one signed request and wait for its reply; returns (header, buffers)."""
        if self._conn is None:
            raise _ConnectionLost("not connected")
        req_id = uuid.uuid4().hex
        sizes = [memoryview(b).nbytes for b in buffers]
        header = dict(fields, v=list(PROTOCOL_VERSION), id=req_id, ts=time.time(), buffers=sizes)
        if job_id:
            header["job"] = job_id
        raw = _encode_header(header)
        self._conn.send([PROTOCOL_TAG, sign(self.key, raw), raw, *buffers])
        silence = (timeout or self.timeout) + sum(sizes) / PESSIMISTIC_BYTES_PER_S
        while True:
            frames = self._conn.recv(silence)
            if frames is None:
                self._conn.close()  # the stream may be mid-message: never reuse it
                self._conn = None
                raise MaskdClientError(
                    "timeout",
                    f"maskd did not answer for {silence:.0f} s "
                    f"({fields.get('op')}); it may be overloaded or stuck",
                    True,
                )
            if len(frames) < 3 or bytes(frames[0]) != PROTOCOL_TAG:
                continue
            head = bytes(frames[2])
            if not hmac.compare_digest(bytes(frames[1]), sign(self.key, head)):
                raise MaskdClientError(
                    "auth",
                    "a reply from maskd failed signature verification "
                    "(a different daemon owns this endpoint?)",
                )
            reply = json.loads(head)
            if reply.get("id") != req_id:
                continue  # a late reply to an earlier, abandoned request
            kind = reply.get("kind")
            if kind == "progress":
                if progress is not None:  # raising here cancels the job (``_pixel_op``)
                    progress(reply.get("stage", ""), float(reply.get("fraction", 0.0)))
                continue
            if kind == "error":
                raise MaskdClientError(
                    reply.get("code", "internal"),
                    reply.get("message", "maskd failed"),
                    bool(reply.get("retryable", False)),
                )
            return reply, frames[3:]

    def _call(self, fields, buffers=(), progress=None, timeout=None, job_id=None):
        try:
            return self._request(fields, buffers, progress, timeout, job_id)
        except _ConnectionLost:
            pass
        try:  # one reconnect (the daemon may have restarted with a new key/port) and retry
            self._reopen()
        except MaskdClientError as exc:
            raise MaskdClientError(
                exc.code if exc.code != "unavailable" else "connection_lost",
                f"lost the connection to maskd during {fields.get('op')} and could not "
                f"reconnect: {exc.message}",
                True,
            ) from None
        try:
            return self._request(fields, buffers, progress, timeout, job_id)
        except _ConnectionLost as exc:
            raise MaskdClientError(
                "connection_lost",
                f"lost the connection to maskd twice during {fields.get('op')}: {exc}",
                True,
            ) from None

    # -- small ops
    def hello(self) -> dict:
        """Protocol version, capabilities, limits, model and device."""
        self.hello_info = self._call({"op": "hello", "client": f"maskd_client/{CLIENT_VERSION}"})[0]
        return self.hello_info

    def ping(self) -> float:
        """Round-trip time in seconds."""
        t0 = time.perf_counter()
        self._call({"op": "ping"}, timeout=min(self.timeout, 5.0))
        return time.perf_counter() - t0

    def status(self) -> dict:
        """Model state (loading/ready/unloaded), device, queue length, current job, counters."""
        return self._call({"op": "status"})[0]

    def shutdown(self) -> dict:
        return self._call({"op": "shutdown"})[0]

    def cancel(self, job_id: str | None = None) -> bool:
        """Cancel a queued or running job (default: this client's current one). Safe from any thread:
        it uses its own short connection. Returns whether the daemon knew the job.

        This is the one way to stop a job (server/PROTOCOL.md, "Cancelling"): a segment/refine
        interrupted by Ctrl-C (KeyboardInterrupt) or by a raising progress callback calls it."""
        job_id = job_id or self._current_job
        if not job_id:
            return False
        other = Client.__new__(Client)
        other.connection_file, other.timeout, other.backend = self.connection_file, 5.0, self.backend
        other._transport_choice, other._conn, other._current_job = self._transport_choice, None, None
        other._open()
        try:
            return bool(other._call({"op": "cancel", "target": job_id})[0].get("found"))
        finally:
            other.close()

    # -- models: what is installed, and changing the served one (daemons before 0.2 lack both)
    def models(self) -> dict:
        """``installed`` (presets whose weights are here: [{name, resolution, licence, notes}]),
        ``served`` (the preset the daemon serves), ``model_state``, ``switching``.
        An older daemon without the request: only the served model, from ``hello``."""
        try:
            return self._call({"op": "models"}, timeout=min(self.timeout, 10.0))[0]
        except MaskdClientError as exc:
            if exc.code != "bad_request":
                raise
        served = (self.hello_info or {}).get("model")
        name = served.get("name") if isinstance(served, dict) else served
        return {"installed": [{"name": name}] if name else [], "served": name, "model_state": None}

    def switch_model(self, name: str, progress=None, timeout=None) -> dict:
        """Make the daemon serve the installed preset ``name`` (a preset name, never a path).
        Waits for jobs queued before it (``progress`` hears "Waiting for …" and "Loading model");
        returns the ``models`` reply after the switch."""
        job_id = uuid.uuid4().hex
        self._current_job = job_id
        try:
            fields = {"op": "switch_model", "model": str(name)}
            return self._call(fields, progress=progress, timeout=timeout, job_id=job_id)[0]
        finally:
            self._current_job = None

    # -- pixel ops
    def _check_image(self, pixels, width, height, layout, dtype):
        if layout not in LAYOUT_CHANNELS:
            raise MaskdClientError(
                "bad_request", f"layout {layout!r} is not one of {sorted(LAYOUT_CHANNELS)}"
            )
        if dtype not in DTYPE_BYTES:
            raise MaskdClientError("bad_request", f"dtype {dtype!r} is not one of {sorted(DTYPE_BYTES)}")
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise MaskdClientError("bad_request", f"image size {width}x{height} is empty")
        expected = width * height * LAYOUT_CHANNELS[layout] * DTYPE_BYTES[dtype]
        nbytes = memoryview(pixels).nbytes
        if nbytes != expected:
            raise MaskdClientError(
                "bad_request",
                f"pixel buffer has {nbytes} bytes; {width}x{height} {layout} {dtype} needs {expected}",
            )
        limits = self.limits
        if limits.get("max_pixels") and width * height > limits["max_pixels"]:
            raise MaskdClientError(
                "too_large",
                f"{width}x{height} is over the daemon's limit of "
                f"{limits['max_pixels']:,} pixels (maskd serve --max-pixels)",
            )
        if limits.get("max_message_bytes") and nbytes > limits["max_message_bytes"]:
            raise MaskdClientError(
                "too_large",
                f"a {nbytes:,}-byte image is over the daemon's message "
                f"limit of {limits['max_message_bytes']:,} bytes",
            )
        return width, height

    def _pixel_op(self, op, buffers, fields, alpha_dtype, progress, job_id, timeout):
        if alpha_dtype not in ALPHA_DTYPES:
            raise MaskdClientError("bad_request", f"alpha_dtype {alpha_dtype!r} is not one of {ALPHA_DTYPES}")
        job_id = job_id or uuid.uuid4().hex
        self._current_job = self.last_job = job_id
        try:
            reply, out = self._call(
                dict(fields, op=op, alpha_dtype=alpha_dtype), buffers, progress, timeout, job_id
            )
        except MaskdClientError:
            raise
        except BaseException:  # Ctrl-C, or a progress callback that raised: the daemon stops the job
            try:
                self.cancel(job_id)
            except MaskdClientError:
                pass
            raise
        finally:
            self._current_job = None
        sizes = reply.get("buffers") or []
        bad = any(memoryview(b).nbytes != n for b, n in zip(out, sizes))
        if len(out) < 1 or len(out) != len(sizes) or bad:
            raise MaskdClientError("internal", "maskd sent a malformed result (buffer sizes differ)", True)
        alpha = bytes(out[0])
        fg_meta = reply.get("foreground") or {}
        fg = bytes(out[1]) if fg_meta and len(out) > 1 else None
        shadow_meta = reply.get("shadow") or {}
        index = shadow_meta.get("buffer")
        shadow = bytes(out[index]) if isinstance(index, int) and 0 < index < len(out) else None
        return Result(
            alpha,
            fg,
            reply.get("info", {}),
            reply.get("width"),
            reply.get("height"),
            reply.get("alpha_dtype", alpha_dtype),
            fg_meta.get("dtype"),
            shadow,
            shadow_meta,
        )

    def segment(
        self,
        pixels,
        width,
        height,
        layout="RGBA",
        dtype="u8",
        options=None,
        roi=None,
        alpha_dtype="u8",
        foreground=False,
        progress=None,
        job_id=None,
        transfer="srgb",
        timeout=None,
        foreground_dtype=None,
        shadow=None,
    ) -> Result:
        """Cut out the subject: pixels in, full-resolution alpha out.

        ``options``: the pipeline options (``refine``, ``quality`` fast/default/quality,
        ``decontaminate``, ``threshold``, ``grow``, ``feather``, ``fill_holes``, ``invert``).
        ``roi``: (x, y, w, h) in image pixels; alpha outside it is 0. ``foreground=True`` also
        returns decontaminated colours (as ``foreground_dtype``, default the input's dtype).
        ``shadow``: a shadow style (``"soft"``, ``"drop,direction=135"``: ``maskd remove --shadow``
        syntax) also returns that shadow's alpha (``Result.shadow``). ``progress(stage, fraction)``
        may raise to cancel.
        """
        width, height = self._check_image(pixels, width, height, layout, dtype)
        fields = {
            "width": width,
            "height": height,
            "layout": layout,
            "dtype": dtype,
            "transfer": transfer,
            "options": dict(options or {}),
            "roi": list(roi) if roi else None,
            "foreground": bool(foreground),
            "foreground_dtype": foreground_dtype,
        }
        if shadow:
            fields["shadow"] = str(shadow)
        return self._pixel_op("segment", [pixels], fields, alpha_dtype, progress, job_id, timeout)

    def refine(
        self,
        pixels,
        width,
        height,
        mask,
        mask_width=None,
        mask_height=None,
        mask_dtype="u8",
        layout="RGBA",
        dtype="u8",
        options=None,
        roi=None,
        alpha_dtype="u8",
        foreground=False,
        progress=None,
        job_id=None,
        transfer="srgb",
        timeout=None,
        foreground_dtype=None,
        shadow=None,
    ) -> Result:
        """Refine a rough single-channel ``mask`` (any size, ``mask_dtype`` u8/u16/f16/f32) into a
        full-resolution alpha that follows the image's edges; no model is needed."""
        width, height = self._check_image(pixels, width, height, layout, dtype)
        mask_width, mask_height = int(mask_width or width), int(mask_height or height)
        if mask_dtype not in DTYPE_BYTES:
            raise MaskdClientError(
                "bad_request", f"mask_dtype {mask_dtype!r} is not one of {sorted(DTYPE_BYTES)}"
            )
        need = mask_width * mask_height * DTYPE_BYTES[mask_dtype]
        if memoryview(mask).nbytes != need:
            raise MaskdClientError(
                "bad_request",
                f"mask buffer has {memoryview(mask).nbytes} bytes; "
                f"{mask_width}x{mask_height} {mask_dtype} needs {need}",
            )
        fields = {
            "width": width,
            "height": height,
            "layout": layout,
            "dtype": dtype,
            "transfer": transfer,
            "options": dict(options or {}),
            "roi": list(roi) if roi else None,
            "foreground": bool(foreground),
            "foreground_dtype": foreground_dtype,
            "mask": {"width": mask_width, "height": mask_height, "dtype": mask_dtype},
        }
        if shadow:
            fields["shadow"] = str(shadow)
        return self._pixel_op("refine", [pixels, mask], fields, alpha_dtype, progress, job_id, timeout)


def connect(
    connection_file: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    backend: str | None = None,
    transport: str | None = None,
) -> Client:
    """Connect to the running daemon (raises ``MaskdClientError("unavailable")`` in < 1 s if none)."""
    return Client(connection_file, timeout=timeout, backend=backend, transport=transport)


# --------------------------------------------------------------------------- colour facts
# The one home of maskd's colour facts: core (``maskd.core.colour``), the CLI, the daemon and both
# plugins (which carry only this file) read them from here, so a colour name or an sRGB value
# means the same everywhere. Standard library only; core adds the numpy/torch array versions.

SRGB_LINEAR_BELOW = 0.04045  # sRGB-encoded values up to this are on the curve's linear segment
LINEAR_LINEAR_BELOW = 0.0031308  # the same point in linear light (0.04045 / 12.92)
SRGB_SLOPE = 12.92  # slope of the linear segment
SRGB_GAMMA = 2.4  # exponent of the power segment
SRGB_OFFSET = 0.055  # offset of the power segment: ((v + 0.055) / 1.055) ** 2.4

# CSS colour keywords (their sRGB values), for --background, --shadow color=… and the plugins
NAMED_COLOURS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "lightgray": (211, 211, 211),
    "lightgrey": (211, 211, 211),
    "darkgray": (169, 169, 169),
    "darkgrey": (169, 169, 169),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "lime": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
TRANSPARENT_NAMES = ("transparent", "none")
COLOUR_FORMS = "a name (white, black, green, …), #rgb, #rrggbb, #rrggbbaa, r,g,b or r,g,b,a"


def srgb_to_linear(value: float) -> float:
    """One sRGB-encoded value in [0, 1] → linear light (the IEC 61966-2-1 curve)."""
    if value <= SRGB_LINEAR_BELOW:
        return value / SRGB_SLOPE
    return ((value + SRGB_OFFSET) / (1 + SRGB_OFFSET)) ** SRGB_GAMMA


def linear_to_srgb(value: float) -> float:
    """One linear-light value in [0, 1] → sRGB-encoded (the inverse of ``srgb_to_linear``)."""
    if value <= LINEAR_LINEAR_BELOW:
        return value * SRGB_SLOPE
    return (1 + SRGB_OFFSET) * value ** (1 / SRGB_GAMMA) - SRGB_OFFSET


def _hex_colour(h: str):
    if len(h) in (3, 4):
        h = "".join(c * 2 for c in h)
    if len(h) not in (6, 8) or any(c not in "0123456789abcdef" for c in h):
        return None
    values = [int(h[i : i + 2], 16) / 255 for i in range(0, len(h), 2)]
    return tuple(values) + ((1.0,) if len(values) == 3 else ())


def _numbers_colour(text: str):
    parts = [p.strip() for p in text.replace("rgba(", "").replace("rgb(", "").rstrip(")").split(",")]
    if len(parts) not in (3, 4):
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if not all(0 <= v <= 255 for v in values[:3]):
        return None
    rgb = tuple(v / 255 for v in values[:3])
    if len(values) == 3:
        return rgb + (1.0,)
    a = values[3] / 255 if values[3] > 1 else values[3]
    return rgb + (a,) if 0 <= a <= 1 else None


def parse_colour(text) -> tuple:
    """A colour as the user writes it → (r, g, b, a) sRGB floats in [0, 1]; ``ValueError`` if it is none.

    Forms: a name from ``NAMED_COLOURS``, ``transparent``/``none`` (alpha 0), ``#rgb``, ``#rgba``,
    ``#rrggbb``, ``#rrggbbaa`` (the ``#`` may be left out), ``r,g,b`` or ``r,g,b,a`` with channels
    0..255 and alpha 0..1 or 0..255 (``rgb(…)``/``rgba(…)`` around them is accepted).
    """
    t = str(text).strip().lower()
    if t in TRANSPARENT_NAMES:
        return (0.0, 0.0, 0.0, 0.0)
    if t in NAMED_COLOURS:
        return tuple(v / 255 for v in NAMED_COLOURS[t]) + (1.0,)
    found = _hex_colour(t[1:] if t.startswith("#") else t) if "," not in t else None
    found = found or _numbers_colour(t)
    if found is None:
        raise ValueError(f"colour {text!r}: use {COLOUR_FORMS}")
    return found


def colour_hex(rgb) -> str:
    """``#rrggbb`` for (r, g, b) floats in [0, 1] (clipped, rounded to 8 bits)."""
    return "#" + "".join(f"{min(255, max(0, int(round(c * 255)))):02x}" for c in rgb[:3])


# --------------------------------------------------------------------------- rectangles of pixels
# Both plugins send a region and keep part of the reply (or the reverse): rectangles are
# (x, y, width, height) in one coordinate system, buffers row-major and tightly packed.


class Bounds(NamedTuple):
    """A rectangle of pixels: left, top, width, height — maskd's one rectangle type.

    Core (canvas, shadow, compose), the server and both plugins use it. It is a tuple, so
    ``x, y, w, h = bounds`` works and it compares equal to a plain ``(x, y, w, h)``.
    """

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def from_corners(cls, x0: int, y0: int, x1: int, y1: int) -> Bounds:
        """The rectangle from its top-left corner (inclusive) to its bottom-right (exclusive)."""
        return cls(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def contains(self, other) -> bool:
        """Whether ``other`` (any (x, y, w, h)) lies inside this rectangle."""
        x, y, w, h = other
        return x >= self.x and y >= self.y and x + w <= self.right and y + h <= self.bottom

    def union(self, other) -> Bounds:
        """The smallest rectangle holding both; ``None`` for ``other`` is nothing."""
        if other is None:
            return self
        o = Bounds(*other)
        return Bounds.from_corners(
            min(self.x, o.x), min(self.y, o.y), max(self.right, o.right), max(self.bottom, o.bottom)
        )

    def intersection(self, other) -> Bounds:
        """The part both share (width or height 0 when they do not overlap)."""
        o = Bounds(*other)
        return Bounds.from_corners(
            max(self.x, o.x), max(self.y, o.y), min(self.right, o.right), min(self.bottom, o.bottom)
        )


def _inside(rect, region):
    """``region`` (unpacked), after checking that ``rect`` lies inside it."""
    if not Bounds(*region).contains(rect):
        raise ValueError(f"rectangle {tuple(rect)} is not inside {tuple(region)}")
    return tuple(region)


def crop_pixels(data, region, rect, pixel_bytes: int | None = None) -> bytes:
    """The part of ``data`` (the pixels of ``region``) inside ``rect`` (which lies inside ``region``).

    ``pixel_bytes`` defaults to what the buffer's size says (``len(data) // (width·height)``).
    """
    x, y, w, h = rect
    rx, ry, rw, rh = _inside(rect, region)
    if (x, y, w, h) == (rx, ry, rw, rh):
        return bytes(data)
    step = pixel_bytes or len(data) // max(1, rw * rh)
    view = memoryview(data).cast("B")
    row, width, left = rw * step, w * step, (x - rx) * step
    return b"".join(view[(y - ry + j) * row + left : (y - ry + j) * row + left + width] for j in range(h))


def place_pixels(data, rect, region, pixel_bytes: int) -> bytes:
    """``data`` (the pixels of ``rect``) inside ``region``, zero bytes (transparent) around it."""
    x, y, w, h = rect
    rx, ry, rw, rh = _inside(rect, region)
    view = memoryview(data).cast("B")
    row, src_row, left = rw * pixel_bytes, w * pixel_bytes, (x - rx) * pixel_bytes
    out = bytearray(row * rh)
    for j in range(h):
        start = (y - ry + j) * row + left
        out[start : start + src_row] = view[j * src_row : (j + 1) * src_row]
    return bytes(out)


# --------------------------------------------------------------------------- autostart


def _wait_ready(client: Client, progress, deadline: float) -> Client:
    while True:
        st = client.status()
        state = st.get("model_state")
        if state in ("ready", "unloaded", None):
            return client
        if state == "failed":
            raise MaskdClientError(
                "model_unavailable", st.get("model_error") or "maskd could not load its model"
            )
        if progress is not None:
            progress("loading model", 0.0)
        if time.monotonic() > deadline:
            raise MaskdClientError("timeout", "maskd is still loading its model; try again in a moment", True)
        time.sleep(0.25)


def ensure_daemon(
    config: dict | None = None, progress=None, timeout: float = DEFAULT_TIMEOUT, start_timeout: float = 300.0
) -> Client:
    """Connect to the daemon, starting it from ``config["daemon_command"]`` when it is not running
    and ``config["autostart"]`` is true. ``progress(stage, fraction)`` hears "starting engine" and
    "loading model". Without autostart a missing daemon is reported in under a second."""
    config = dict(config or {})
    cfile = config.get("connection_file") or default_connection_file()
    deadline = time.monotonic() + start_timeout
    try:
        return _wait_ready(connect(cfile, timeout=timeout), progress, deadline)
    except MaskdClientError as exc:
        if exc.code != "unavailable":
            raise
        command = config.get("daemon_command") or []
        if not config.get("autostart", True) or not command:
            raise MaskdClientError("unavailable", MESSAGES["not_running"], True) from None
    if progress is not None:
        progress("starting engine", 0.0)
    env = dict(os.environ, MASKD_CONNECTION_FILE=cfile)
    log_dir = os.path.dirname(cfile) or "."
    make_private_dir(log_dir, "connection folder")  # a folder someone else planted is refused
    try:  # never through a symlink: it could point at any file of ours
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        log = os.fdopen(os.open(os.path.join(log_dir, "autostart.log"), flags, 0o600), "ab")
    except OSError:
        log = subprocess.DEVNULL
    log_path = os.path.join(log_dir, "autostart.log")
    kwargs = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": log, "env": env, "close_fds": True}
    if sys.platform == "win32":
        kwargs["creationflags"] = 0x00000008 | 0x00000200  # DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    try:
        proc = subprocess.Popen([str(c) for c in command], **kwargs)
    except OSError as exc:
        _log_line(log, f"could not run {command!r}: {exc}")
        raise MaskdClientError("unavailable", MESSAGES["start_missing"], False) from None
    finally:
        if log is not subprocess.DEVNULL:
            log.close()
    stage = "starting engine"
    while True:
        try:
            client = connect(cfile, timeout=timeout)
            return _wait_ready(client, progress, deadline)
        except MaskdClientError as exc:
            if exc.code != "unavailable":
                raise
        code = proc.poll()
        if code not in (None, 0):
            raise MaskdClientError("unavailable", MESSAGES["start_failed"].format(code=code, log=log_path))
        if time.monotonic() > deadline:
            raise MaskdClientError("timeout", f"maskd did not start within {start_timeout:.0f} s", True)
        if progress is not None:
            progress(stage, 0.0)
        time.sleep(0.2)


# --------------------------------------------------------------------------- words for people
# ONE table of the words both plugins show (GIMP's dialog, Krita's docker): the same option has the
# same name in both editors. Where each editor has its own noun for a thing (GIMP's "layer mask",
# Krita's "transparency mask"), both are here, side by side.

LABELS = {
    "title": "Remove Background",
    "output": "Output",
    "output.mask.gimp": "Layer mask",
    "output.mask.krita": "Transparency mask",
    "output.apply": "Apply to the layer",
    "output.layer": "New layer with the cut-out",
    "output.selection": "Selection",
    "existing_mask": "Existing mask",
    "existing_mask.intersect": "Combine with it",
    "existing_mask.replace": "Replace it",
    "model": "Model",
    "model.default": "Engine's model",
    "quality": "Quality",
    "quality.default": "Default",
    "quality.fast": "Fast",
    "quality.quality": "Best",
    "refine": "Refine edges (hair, fur)",
    "decontaminate": "Clean edge colours",
    "use_selection": "Only inside the selection",
    "group.edges": "Edges",
    "group.finishing": "Product photo",
    "shadow": "Add shadow layer",
    "shadow_style": "Shadow style",
    "shadow.soft": "Soft",
    "shadow.contact": "Contact only",
    "shadow.drop": "Drop",
    "shadow.front": "Front",
    "shadow_color": "Shadow colour",
    "background": "Add background layer",
    "background_color": "Background colour",
    "run": "Remove Background",
    "cancel": "Cancel",
}

# What the daemon and the plugins call each step, as a person reads it in a progress bar.
STAGES = {
    "connecting to engine": "Connecting to the engine",
    "starting engine": "Starting the engine",
    "loading model": "Loading model",
    "queued": "Waiting for the engine",
    "reading pixels": "Reading the layer",
    "sending pixels": "Sending the layer",
    "decoding": "Preparing the image",
    "model": "Finding the subject",
    "upsample": "Refining edges",
    "back-projection": "Refining edges",
    "foreground": "Cleaning edge colours",
    "encoding": "Finishing",
    "done": "Done",
}

MESSAGES = {
    "not_running": (
        "The maskd engine is not running. Start it with “maskd serve”, or run "
        "“maskd install-plugins” so that the plug-in can start it."
    ),
    "start_missing": (
        "The maskd engine could not be started: its program is missing. "
        "Install maskd again and run “maskd install-plugins”."
    ),
    "start_failed": "The maskd engine failed to start (exit {code}). The reason is in {log}",
    "model_fallback": "The model “{wanted}” is not installed; using “{served}” instead.",
}


def label(key: str) -> str:
    """The shown words for ``key`` (a key of ``LABELS``)."""
    return LABELS[key]


def stage_text(stage: str) -> str:
    """A daemon/plugin stage as a person reads it ("model" -> "Finding the subject"); unknown
    stages (a newer daemon's) keep their words, capitalised."""
    text = str(stage or "")
    head, sep, rest = text.partition(" (")
    words = STAGES.get(head.lower(), head[:1].upper() + head[1:])
    return words + (sep + rest if sep else "")


def start_command_problem(config: dict) -> str | None:
    """Why the plugin could not start the engine (no autostart, no command, the program missing),
    or None when ``config["daemon_command"]`` can be run. Checked without running it."""
    command = [str(c) for c in (config or {}).get("daemon_command") or []]
    if not (config or {}).get("autostart", True) or not command:
        return MESSAGES["not_running"]
    program = command[0]
    if os.sep in program or (os.altsep and os.altsep in program):
        found = os.path.isfile(program) and os.access(program, os.X_OK)
    else:
        import shutil

        found = shutil.which(program) is not None
    if not found:
        return MESSAGES["start_missing"]
    return None


def _log_line(log, text: str) -> None:
    """One line in the autostart log (details a person does not need in the message)."""
    if log is subprocess.DEVNULL:
        return
    try:
        log.write((time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n").encode("utf-8", "replace"))
        log.flush()
    except OSError:
        pass
