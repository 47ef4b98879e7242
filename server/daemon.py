"""The maskd daemon: one ROUTER socket, one I/O loop, one worker thread that owns the model.

Threads and who owns what:
- the I/O loop (main thread) owns the ROUTER socket: it verifies and parses every request,
  answers ``hello``/``ping``/``status``/``cancel``/``shutdown`` at once (even while the worker
  is busy), puts pixel jobs on a bounded queue (full -> ``busy``), streams progress to clients at
  least once a second, and forwards results;
- the worker thread owns the session (model): it loads it (at start unless ``lazy``), runs jobs
  one at a time through ``core.pipeline`` and hands results back over an inproc socket
  (zero-copy), and unloads the model after ``idle_unload_s`` without work.

A request that cannot be parsed gets an error reply when its sender can be identified and is
dropped otherwise; no request can stop the loop. Large frames are received and sent zero-copy.

What a job computes is the daemon's *worker*: ``pipeline`` (the model, then ``core.pipeline``) is
the only one maskd has. ``register_worker`` adds others under a name for ``maskd serve --worker``,
from an extension module (``core.extensions``): the test suite's ``null`` worker (it echoes the
input's alpha, so transport tests check exact bytes without a model) lives in ``tests/standins.py``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq
from maskd.core.errors import InputError, MaskdError, WeightsError
from maskd.server import __version__, connection
from maskd.server import protocol as P
from maskd.server.transport_guard import LogLimiter, TransportGuard

log = logging.getLogger("maskd")

HEARTBEAT_S = 1.0  # progress is re-sent at least this often while a job is queued or running
LOOP_TICK_MS = 100


class Cancelled(Exception):
    pass


@dataclass
class DaemonConfig:
    spec: object = None  # core.session.SessionSpec
    worker: str = "pipeline"  # a name in WORKERS: "pipeline" unless an extension registered another
    connection_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    ipc: bool = True
    max_pixels: int = 64_000_000
    max_side: int = 32768
    max_queue: int = 8
    idle_unload_s: float | None = None
    lazy: bool = False
    tune_malloc: bool = True
    curve: bool = False  # CURVE encryption (required to bind a non-loopback address)
    owner_pid: int | None = None  # stop when this process ends (a daemon a batch command started)


def tune_malloc() -> bool:
    """glibc: keep big buffers in one arena instead of mmap/munmap per message (see notes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
        ok = libc.mallopt(m_arena_max, 1) and libc.mallopt(m_mmap_max, 0)
        ok = ok and libc.mallopt(m_trim_threshold, 2**31 - 1)
        return bool(ok)
    except OSError:
        return False


@dataclass
class Job:
    job_id: str
    request_id: str
    identity: bytes
    op: str
    header: dict
    buffers: list
    spec: P.ImageSpec
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"
    stage: str = "queued"
    fraction: float = 0.0
    changed: bool = True
    last_sent: float = 0.0
    queued_at: float = field(default_factory=time.monotonic)
    wake: object = None  # worker-side callable that wakes the I/O loop to send progress now
    updates: deque = field(default_factory=deque)  # (stage, fraction) not yet sent
    _done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self) -> bool:
        """True the first time: exactly one final reply per job."""
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True


class Daemon:
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.cfile = connection.connection_path(config.connection_file)
        self.folder = self.cfile.parent
        self.key_hex = connection.new_key()
        self.key = bytes.fromhex(self.key_hex)
        self.guard = P.ReplayGuard()
        self.jobs: dict[str, Job] = {}
        self.queue: queue.Queue = queue.Queue()
        self.running: Job | None = None
        self.model_state = "loading"
        self.model_error = None
        self.session = None
        self.stop_requested = threading.Event()
        self.last_work = time.monotonic()
        self.counters = {"requests": 0, "jobs_done": 0, "jobs_failed": 0, "jobs_cancelled": 0, "rejected": 0}
        self.started = time.time()
        self.endpoints: dict[str, str] = {}
        self.max_message_bytes = config.max_pixels * 16 + 4096
        # pixels held by waiting jobs (the first job is always accepted, whatever its size)
        self.max_queued_bytes = max(2 * 2**30, self.max_message_bytes)
        self.lock = connection.DaemonLock(self.folder)
        self.rejections = LogLimiter()  # a flood of bad requests must not flood the log
        self.owner = _process_identity(config.owner_pid) if config.owner_pid else None
        self._owner_checked = 0.0

    @property
    def queued(self) -> int:
        return sum(1 for j in list(self.jobs.values()) if j.state == "queued" and not j._done)

    # ------------------------------------------------------------------ lifecycle
    def describe_model(self) -> dict:
        if self.session is None:
            return {"name": "none"}
        try:
            return self.session.describe()
        except Exception:
            return {"name": getattr(self.session, "name", "?")}

    def bind(self) -> None:
        """Take the lock, bind tcp (+ipc), write the connection file. Raises MaskdError if another
        daemon holds the lock."""
        if not self.lock.acquire():
            raise AlreadyRunning(f"another maskd daemon already serves {self.cfile}")
        if self.config.tune_malloc and os.environ.get("MASKD_MALLOC_TUNING", "1") != "0":
            tuned = tune_malloc()
            log.info("glibc malloc tuned for large messages: %s", tuned)
        self.ctx = zmq.Context()
        self.guard_transport = TransportGuard(self.ctx, self.key, self.config.curve)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        self.router.setsockopt(zmq.LINGER, 2000)
        self.router.setsockopt(zmq.SNDHWM, 10000)
        host = self.config.host
        self.curve_public = None
        if self.config.curve:
            public, secret = zmq.curve_keypair()
            self.router.curve_server = True
            self.router.curve_secretkey = secret
            self.router.curve_publickey = public
            self.curve_public = public.decode("ascii")
        self.guard_transport.configure(self.router)
        if ":" in host:  # an IPv6 literal (::1): libzmq needs IPV6 and the brackets
            self.router.setsockopt(zmq.IPV6, 1)
            host = f"[{host}]"
        try:
            if self.config.port:
                self.router.bind(f"tcp://{host}:{self.config.port}")
                self.endpoints["tcp"] = f"tcp://{host}:{self.config.port}"
            else:
                port = self.router.bind_to_random_port(f"tcp://{host}")
                self.endpoints["tcp"] = f"tcp://{host}:{port}"
        except zmq.ZMQError as exc:
            raise MaskdError(f"cannot listen on {host}: {exc.strerror}") from None
        if self.config.ipc:
            ipc = connection.ipc_endpoint(self.folder)
            if ipc:
                try:  # we hold the lock: any socket file here is a dead daemon's
                    os.unlink(ipc[6:])
                except FileNotFoundError:
                    pass
                self.router.bind(ipc)
                os.chmod(ipc[6:], 0o600)
                self.endpoints["ipc"] = ipc
        self.wake_in = self.ctx.socket(zmq.PULL)
        self.wake_in.bind("inproc://maskd-worker")
        self.info = {
            "protocol": P.TAG.decode(),
            "protocol_version": list(P.VERSION),
            "maskd_version": __version__,
            "pid": os.getpid(),
            "endpoints": self.endpoints,
            "key": self.key_hex,
            "signature_scheme": "hmac-sha256",
            "transport_auth": "curve" if self.config.curve else "plain",
            "started": self.started,
            "limits": self.limits(),
            "model": getattr(self.config.spec, "source", None),
            "log_file": getattr(self, "log_file", None),
        }
        if self.curve_public:
            self.info["curve_serverkey"] = self.curve_public
        connection.write_atomic(self.cfile, self.info)
        self.guard_transport.start()
        log.info("listening on %s; connection file %s", ", ".join(self.endpoints.values()), self.cfile)

    def limits(self) -> dict:
        return {
            "max_pixels": self.config.max_pixels,
            "max_side": self.config.max_side,
            "max_message_bytes": self.max_message_bytes,
            "max_queue": self.config.max_queue,
        }

    def cleanup(self) -> None:
        try:
            current = connection.read(self.cfile)
            if current and current.get("pid") == os.getpid():
                self.cfile.unlink()
        except OSError:
            pass
        ipc = self.endpoints.get("ipc")
        if ipc:
            try:
                os.unlink(ipc[6:])
            except OSError:
                pass
        if getattr(self, "guard_transport", None) is not None:
            self.guard_transport.stop()
        for s in ("router", "wake_in"):
            sock = getattr(self, s, None)
            if sock is not None:
                sock.close()
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
        self.lock.release()

    def run(self) -> int:
        """Bind, start the worker, serve until ``shutdown``/SIGTERM; returns the exit code."""
        try:
            self.bind()
        except AlreadyRunning:
            raise
        except Exception:
            self.cleanup()
            raise
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_requested.set())
        self.worker = threading.Thread(target=self._worker_main, name="maskd-worker", daemon=True)
        self.worker.start()
        code = 0
        try:
            self._loop()
        finally:
            code = self._shutdown()
        return code

    def _shutdown(self) -> int:
        log.info("stopping")
        for job in list(self.jobs.values()):
            job.cancel.set()
            if job.state == "queued" and job.finish():
                self._send_error(job.identity, job.request_id, "shutting_down", "maskd is stopping")
        self.queue.put(None)
        self.worker.join(timeout=30)
        self._drain_worker()
        # let the last replies reach their clients before the connections close (a pyzmq DEALER
        # with IMMEDIATE drops a reply that arrives together with the disconnect)
        time.sleep(0.2)
        self.cleanup()
        log.info("stopped")
        return 1 if self.model_state == "failed" else 0

    # ------------------------------------------------------------------ I/O loop
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_in, zmq.POLLIN)
        while not self.stop_requested.is_set():
            idle_s = self.config.idle_unload_s
            events = dict(poller.poll(LOOP_TICK_MS))
            if self.wake_in in events:
                self._drain_worker()
            if self.router in events:
                for _ in range(64):  # bounded burst so progress and results still flow
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(frames)
            self._send_progress()
            if self.owner is not None and time.monotonic() - self._owner_checked > 1.0:
                self._owner_checked = time.monotonic()
                if _process_identity(self.owner[0]) != self.owner:
                    log.info("the command that started maskd (pid %d) has ended: stopping", self.owner[0])
                    self.stop_requested.set()
            if not self.worker.is_alive() and not self.stop_requested.is_set():
                self._worker_died()
                break
            if (
                idle_s
                and self.model_state == "ready"
                and self.running is None
                and self.queued == 0
                and time.monotonic() - self.last_work > idle_s
            ):
                self.model_state = "unloading"
                self.queue.put("unload")

    def _worker_died(self) -> None:
        """The worker thread is gone (a bug): answer every waiting client and stop, so that the
        supervisor or the next plug-in start gets a fresh daemon instead of one that hangs."""
        self._drain_worker()
        log.error("the worker thread stopped unexpectedly; maskd is stopping")
        self.model_state = "failed"
        self.model_error = self.model_error or "the worker thread stopped unexpectedly"
        for job in list(self.jobs.values()):
            if job.finish():
                self._send_error(
                    job.identity,
                    job.request_id,
                    "internal",
                    "maskd's worker stopped unexpectedly; the daemon is restarting",
                    True,
                )
        self.jobs.clear()
        self.stop_requested.set()

    def _send(self, identity: bytes, fields: dict, buffers=()) -> bool:
        try:
            self.router.send_multipart(
                [identity, *P.make_message(self.key, fields, buffers)], flags=zmq.NOBLOCK, copy=False
            )
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH (client gone) or EAGAIN (client not reading)
            if self.rejections.allow():
                log.info("could not reply to a client (%s)", exc.strerror)
            return False

    def _send_error(self, identity, request_id, code, message, retryable=None) -> None:
        self._send(identity, P.error_fields(request_id, code, message, retryable))

    def _handle(self, frames: list) -> None:
        self.counters["requests"] += 1
        identity = frames[0].bytes
        body = frames[1:]
        try:
            req = P.parse_request(body, self.key, self.guard)
        except P.ProtocolError as err:
            self.counters["rejected"] += 1
            if self.rejections.allow():
                log.info("rejected a request: %s: %s", err.code, err.message)
            self._send_error(identity, getattr(err, "request_id", None), err.code, err.message, err.retryable)
            return
        try:
            handler = getattr(self, "_op_" + req.op)
            handler(identity, req)
        except P.ProtocolError as err:
            self.counters["rejected"] += 1
            if self.rejections.allow():
                log.info("rejected %s %s: %s: %s", req.op, req.id, err.code, err.message)
            self._send_error(identity, req.id, err.code, err.message, err.retryable)
        except Exception as exc:  # a bug: answer it, log it, keep serving
            log.error("internal error in %s: %s", req.op, traceback.format_exc())
            self._send_error(identity, req.id, "internal", f"internal error in {req.op}: {exc}")

    def _op_ping(self, identity, req) -> None:
        self._send(identity, P.reply_fields(req.id, "result", pong=True, time=time.time()))

    def _op_hello(self, identity, req) -> None:
        fields = P.reply_fields(
            req.id,
            "result",
            protocol=P.TAG.decode(),
            protocol_version=list(P.VERSION),
            maskd_version=__version__,
            pid=os.getpid(),
            limits=self.limits(),
            model=self.describe_model(),
            model_state=self.model_state,
            devices=self._devices(),
            presets=self._presets(),
            capabilities={
                "ops": list(P.OPS),
                "layouts": list(P.LAYOUT_CHANNELS),
                "dtypes": list(P.DTYPES),
                "alpha_dtypes": list(P.ALPHA_DTYPES),
                "transfers": list(P.TRANSFERS),
                "foreground": True,
                "roi": True,
                "progress": True,
                "options": self._option_names(),
                "shadow": ["soft", "contact", "drop", "front"],
            },
        )
        self._send(identity, fields)

    def _presets(self) -> list:
        """The model presets this maskd knows (serving another one needs a restart: `maskd serve --model`)."""
        try:
            from maskd.core import presets

            return [
                {"name": p.name, "licence": p.licence, "resolution": list(p.resolution)}
                for p in presets.PRESETS.values()
            ]
        except Exception:
            return []

    def _devices(self) -> list:
        devices = ["cpu"]
        torch = sys.modules.get("torch")
        if torch is not None:
            try:
                if torch.cuda.is_available():
                    devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
                if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                    devices.append("mps")
            except Exception:
                pass
        return devices

    def _option_names(self) -> list:
        opts = _cutout_options_class()
        return [f.name for f in dataclasses.fields(opts) if f.name not in ("roi", "linear")] if opts else []

    def status_fields(self) -> dict:
        model = self.describe_model()
        return {
            "running": True,
            "pid": os.getpid(),
            "endpoints": self.endpoints,
            "connection_file": str(self.cfile),
            "protocol": P.TAG.decode(),
            "protocol_version": list(P.VERSION),
            "maskd_version": __version__,
            "model": model,
            "model_state": self.model_state,
            "model_error": self.model_error,
            "device": model.get("device"),
            "queue_length": self.queued + (1 if self.running else 0),
            "queued": self.queued,
            "current_job": self.running.job_id if self.running else None,
            "uptime_s": round(time.time() - self.started, 3),
            "counters": dict(self.counters, **self.guard_transport.counters),
            "limits": self.limits(),
            "worker": self.config.worker,
        }

    def _op_status(self, identity, req) -> None:
        self._send(identity, P.reply_fields(req.id, "result", **self.status_fields()))

    def _op_cancel(self, identity, req) -> None:
        target = req.header.get("target")
        job = self.jobs.get(target) if isinstance(target, str) else None
        if job is not None:
            job.cancel.set()
            if job.state == "queued" and job.finish():
                self.counters["jobs_cancelled"] += 1
                self._send_error(job.identity, job.request_id, "cancelled", "the job was cancelled")
                self.jobs.pop(job.job_id, None)
        self._send(identity, P.reply_fields(req.id, "result", found=job is not None))

    def _op_shutdown(self, identity, req) -> None:
        self._send(identity, P.reply_fields(req.id, "result", stopping=True, pid=os.getpid()))
        self.stop_requested.set()

    # -- models / switch_model: which presets are installed, and changing the served one
    def _op_models(self, identity, req) -> None:
        self._send(identity, P.reply_fields(req.id, "result", **model_choice(self)))

    def _op_switch_model(self, identity, req) -> None:
        name = req.header.get("model")
        installed = {m["name"] for m in installed_presets()}
        if not isinstance(name, str) or name not in installed:
            known = ", ".join(sorted(installed)) or "none"
            raise P.ProtocolError(
                "model_unavailable",
                f"The model “{name}” is not installed; installed models: {known}. "
                "Install one with `maskd fetch NAME`.",
            )
        if self.model_state == "failed":
            raise P.ProtocolError("model_unavailable", f"the model could not be loaded: {self.model_error}")
        job_id = req.header.get("job") or req.id
        if job_id in self.jobs:  # resent after a reconnect: replies go to the new connection
            existing = self.jobs[job_id]
            existing.identity, existing.request_id, existing.changed = identity, req.id, True
            return
        ahead = [j for j in self.jobs.values() if not j._done and j.identity != identity]
        job = Job(job_id, req.id, identity, "switch_model", dict(req.header), [], None)
        if ahead or self.running is not None:
            n = len(ahead) or 1
            job.stage = (
                "Waiting for 1 job of another editor" if n == 1 else f"Waiting for {n} jobs of other editors"
            )
            for other in ahead:  # their client hears that the model changes after their job
                other.updates.append(
                    (f"{other.stage} (the model changes to {name} after this job)", other.fraction)
                )
                other.changed = True
        else:
            job.stage = "Loading model"
        self.jobs[job_id] = job
        self.queue.put(job)
        self._send_job_progress(job)

    def _worker_switch(self, job: Job, out) -> None:
        """Worker thread: unload the served model, load the installed preset ``job.header["model"]``
        (the daemon's device/precision/resolution settings stay), or keep the old one on failure."""
        if job.cancel.is_set() or job._done:
            return
        name = job.header["model"]
        self.running = job
        job.state, job.stage, job.fraction, job.changed = "running", "Loading model", 0.0, True
        job.updates.append((job.stage, 0.0))
        out.send(b"wake")
        old_session, old_spec, old_state = self.session, self.config.spec, self.model_state
        try:
            from maskd.core.session import SessionSpec

            base = old_spec or SessionSpec()
            spec = dataclasses.replace(base, model=name, weights=None, variant=None, patch_order=None)
            self.model_state = "loading"
            if old_session is not None:
                old_session.unload()
            session = make_session(dataclasses.replace(self.config, spec=spec))
            session.load()
            self.session, self.config.spec, self.model_state = session, spec, "ready"
            log.info("switched the model to %s on request: %s", name, self.describe_model())
            fields = P.reply_fields(None, "result", job=job.job_id, **model_choice(self))
        except Exception as exc:
            self.session, self.config.spec = old_session, old_spec
            self.model_state = "unloaded" if old_state in ("ready", "unloaded") else old_state
            log.error("could not switch the model to %s: %s", name, traceback.format_exc())
            fields = P.error_fields(
                None, "model_unavailable", f"The model “{name}” could not be loaded: {exc}"
            )
        finally:
            self.running = None
            self.last_work = time.monotonic()
        if job.finish():
            out.send_multipart([b"reply", job.job_id.encode(), P.encode_header(fields)])

    def _op_segment(self, identity, req) -> None:
        self._enqueue(identity, req)

    _op_refine = _op_segment

    def _enqueue(self, identity, req) -> None:
        if self.model_state == "failed":
            raise P.ProtocolError("model_unavailable", f"the model could not be loaded: {self.model_error}")
        spec = P.check_image_request(req.header, req.buffers, self.config.max_pixels, self.config.max_side)
        job_id = req.header.get("job") or req.id
        existing = self.jobs.get(job_id)
        if existing is not None:  # a client resending after a reconnect: re-route, never run twice
            existing.identity, existing.request_id, existing.changed = identity, req.id, True
            log.info("job %s resent; replies go to the new connection", job_id)
            return
        if self.queued >= self.config.max_queue:
            raise P.ProtocolError("busy", f"maskd is busy ({self.queued} jobs queued); try again shortly")
        nbytes = sum(P._nbytes(b) for b in req.buffers)
        waiting = sum(P._nbytes(b) for j in self.jobs.values() if not j._done for b in j.buffers)
        if self.queued and waiting + nbytes > self.max_queued_bytes:
            raise P.ProtocolError(
                "busy",
                f"maskd is busy ({self.queued} jobs, {waiting / 2**20:.0f} MiB waiting); try again shortly",
            )
        job = Job(job_id, req.id, identity, req.op, req.header, req.buffers, spec)
        _check_options(job)  # core's bounds now: a bad option is refused at once, never queued
        self.jobs[job_id] = job
        job.stage, job.fraction = "queued", 0.0
        self.queue.put(job)
        self._send_job_progress(job)

    def _send_job_progress(self, job: Job) -> None:
        position = self.queued if job.state == "queued" else 0
        updates = []
        while job.updates:
            updates.append(job.updates.popleft())
        if not updates or updates[-1] != (job.stage, job.fraction):
            updates.append((job.stage, job.fraction))
        ok = True
        for stage, fraction in updates:
            ok = ok and self._send(
                job.identity,
                P.reply_fields(
                    job.request_id,
                    "progress",
                    job=job.job_id,
                    stage=stage,
                    fraction=round(fraction, 4),
                    state=job.state,
                    position=position,
                ),
            )
        job.last_sent, job.changed = time.monotonic(), False
        if not ok and not job.cancel.is_set():
            log.info("client of job %s is gone; cancelling it", job.job_id)
            job.cancel.set()
            if job.state == "queued" and job.finish():
                self.counters["jobs_cancelled"] += 1
                self.jobs.pop(job.job_id, None)

    def _send_progress(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job._done:
                continue
            if job.changed or now - job.last_sent >= HEARTBEAT_S:
                self._send_job_progress(job)

    def _drain_worker(self) -> None:
        while True:
            try:
                frames = self.wake_in.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            kind = frames[0].bytes
            if kind == b"reply":
                job_id = frames[1].bytes.decode()
                job = self.jobs.pop(job_id, None)
                if job is None:
                    continue
                if job.updates:  # progress the client has not seen yet goes first
                    self._send_job_progress(job)
                header = json.loads(frames[2].bytes)
                header["id"] = job.request_id
                self._send(job.identity, header, frames[3:])
            # b"state" / b"wake": nothing to forward; the loop sends progress next

    # ------------------------------------------------------------------ worker thread
    def _worker_main(self) -> None:
        out = self.ctx.socket(zmq.PUSH)
        out.connect("inproc://maskd-worker")
        try:
            self._worker_load(out)
            while True:
                item = self.queue.get()
                if item is None:
                    break
                if isinstance(item, Job) and item.op == "switch_model":
                    self._worker_switch(item, out)
                    continue
                if item == "unload":
                    if self.session is not None and self.running is None:
                        log.info("idle for %.0f s: unloading the model", self.config.idle_unload_s)
                        self.session.unload()
                    self.model_state = "unloaded"
                    continue
                try:
                    self._worker_run(item, out)
                except Exception:  # never let one job take the worker (and every later job) down
                    log.error("worker: job %s: %s", getattr(item, "job_id", "?"), traceback.format_exc())
                    if isinstance(item, Job) and item.finish():
                        self.counters["jobs_failed"] += 1
                        fields = P.error_fields(None, "internal", "processing failed unexpectedly")
                        out.send_multipart([b"reply", item.job_id.encode(), P.encode_header(fields)])
        finally:
            out.close(linger=2000)

    def _worker_load(self, out) -> None:
        try:
            self.session = make_session(self.config)
            if not self.config.lazy:
                t0 = time.perf_counter()
                self.session.load()
                log.info("model loaded in %.1f s: %s", time.perf_counter() - t0, self.describe_model())
            self.model_state = "ready" if not self.config.lazy else "unloaded"
            if self.config.idle_unload_s is None:  # GPU memory is precious; CPU RAM reload costs more
                device = str(self.describe_model().get("device") or "cpu")
                self.config.idle_unload_s = 1800.0 if device.startswith(("cuda", "mps")) else 0.0
        except Exception as exc:
            self.model_error = str(exc) if isinstance(exc, MaskdError) else f"{type(exc).__name__}: {exc}"
            self.model_state = "failed"
            log.error("error: could not load the model: %s", self.model_error)
            if not isinstance(exc, MaskdError):
                log.debug("%s", traceback.format_exc())
            self.stop_requested.set()
        out.send_multipart([b"state"])

    def _worker_run(self, job: Job, out) -> None:
        if job.cancel.is_set() or job._done:
            return
        started = time.monotonic()
        self.running = job
        job.state, job.stage, job.fraction, job.changed = "running", "starting", 0.0, True
        job.wake = lambda: out.send(b"wake")
        t0 = time.perf_counter()
        fields = None
        buffers = []
        try:
            if self.model_state == "unloaded" and self.config.worker == "pipeline" and job.op == "segment":
                job.stage, job.changed = "loading model", True
                job.updates.append((job.stage, 0.0))
                job.wake()
                self.session.load()
                self.model_state = "ready"
            fields, buffers = run_job(self, job)
            fields["info"]["timings"]["total"] = round(time.perf_counter() - t0, 4)
            fields["info"]["queue_wait"] = round(started - job.queued_at, 4)
            self.counters["jobs_done"] += 1
        except Cancelled:
            self.counters["jobs_cancelled"] += 1
            fields = P.error_fields(None, "cancelled", "the job was cancelled")
        except MemoryError:
            self.counters["jobs_failed"] += 1
            fields = P.error_fields(
                None,
                "out_of_memory",
                f"out of memory on a {job.spec.width}x"
                f"{job.spec.height} image; try a smaller image or fewer editors at once",
            )
        except WeightsError as exc:
            self.counters["jobs_failed"] += 1
            fields = P.error_fields(None, "model_unavailable", str(exc))
        except (InputError, P.ProtocolError) as exc:
            self.counters["jobs_failed"] += 1
            code = getattr(exc, "code", "bad_request")
            fields = P.error_fields(None, code, str(exc))
        except Exception as exc:
            self.counters["jobs_failed"] += 1
            if _is_oom(exc):
                device = self.describe_model().get("device")
                fields = P.error_fields(
                    None,
                    "out_of_memory",
                    f"the {device} ran "
                    f"out of memory on a {job.spec.width}x{job.spec.height} image; try "
                    "a smaller image, --precision fp16, or --device cpu",
                )
                _free_accelerator_memory()
            elif isinstance(exc, MaskdError):
                fields = P.error_fields(None, "bad_request", str(exc))
            else:
                log.error("job %s failed: %s", job.job_id, traceback.format_exc())
                fields = P.error_fields(None, "internal", f"processing failed: {type(exc).__name__}: {exc}")
            buffers = []
        finally:
            self.running = None
            self.last_work = time.monotonic()
            job.buffers = []  # release the request's frames now
        if job.finish():
            try:
                out.send_multipart(
                    [b"reply", job.job_id.encode(), P.encode_header(fields), *buffers], copy=False
                )
            except Exception:
                log.error("job %s: could not send the result: %s", job.job_id, traceback.format_exc())
                fields = P.error_fields(None, "internal", "processing failed while sending the result")
                out.send_multipart([b"reply", job.job_id.encode(), P.encode_header(fields)])
        log.info(
            "job %s %s %dx%d: %s in %.3f s",
            job.job_id[:8],
            job.op,
            job.spec.width,
            job.spec.height,
            fields.get("code", "ok"),
            time.perf_counter() - t0,
        )


def installed_presets() -> list:
    """The presets whose weights are in the local cache (no network): what a switch may load."""
    try:
        from maskd.core import presets, weights

        return [
            {"name": p.name, "resolution": list(p.resolution), "licence": p.licence, "notes": p.notes}
            for p in presets.PRESETS.values()
            if weights.cached_path(p.repo_id, p.filename) is not None
        ]
    except Exception:
        return []


def model_choice(daemon: Daemon) -> dict:
    """The ``models`` reply: installed presets, the served one and its state."""
    served = daemon.describe_model().get("name")
    switching = next((j.header.get("model") for j in daemon.jobs.values() if j.op == "switch_model"), None)
    return {
        "installed": installed_presets(),
        "served": served,
        "model_state": daemon.model_state,
        "switching": switching,
    }


class AlreadyRunning(MaskdError):
    pass


def _process_identity(pid: int):
    """(pid, start time) of a live process, None when gone: a reused pid is another process."""
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return (pid, proc.create_time())
    except Exception:
        return None


def _is_oom(exc: Exception) -> bool:
    name = type(exc).__name__
    return name in ("OutOfMemoryError",) or "out of memory" in str(exc).lower()


def _free_accelerator_memory() -> None:
    if "torch" in sys.modules:  # nothing to give back before torch is loaded (a session without torch)
        from maskd.core.device import release_memory

        release_memory()


def _cutout_options_class():
    try:
        from maskd.core.pipeline import CutoutOptions

        return CutoutOptions
    except ImportError:
        return None


def make_session(config: DaemonConfig):
    """The session ``config`` asks for: its worker's own, else ``core.session.open_session``."""
    from maskd.core.session import SessionSpec, open_session

    spec = config.spec or SessionSpec()
    worker = find_worker(config.worker)
    return worker.session(spec) if worker.session else open_session(spec)


# ---------------------------------------------------------------------- the work itself


def _options(job: Job, device: str = "cpu") -> object:
    """Client options -> CutoutOptions, ignoring names this daemon does not know (additive protocol).

    The refinement runs where the model runs (``device``, the session's: a GPU's daemon refines
    on the GPU); clients do not choose it.
    """
    cls = _cutout_options_class()
    given = job.header.get("options") or {}
    roi = job.header.get("roi")
    linear = job.spec.transfer == "linear"
    if cls is None:
        return dict(given, roi=roi, linear=linear)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in given.items() if k in known and k not in ("roi", "linear", "device")}
    if "device" in known:
        kwargs["device"] = device if str(device).startswith(("cuda", "mps")) else "cpu"
    if "roi" in known:
        kwargs["roi"] = tuple(roi) if roi else None
    if "linear" in known:
        kwargs["linear"] = linear
    if "decontaminate" in known and not job.header.get("foreground"):
        kwargs["decontaminate"] = False  # colours nobody asked for are not worth their time
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise P.ProtocolError("bad_request", f"bad options: {exc}") from None


def _check_options(job: Job) -> None:
    """The request's options and shadow style within core's bounds (core/limits.py), or bad_request."""
    try:
        opts = _options(job)
        if hasattr(opts, "validate"):
            opts.validate()
        if job.header.get("shadow"):
            from maskd.core.shadow import parse_shadow

            parse_shadow(str(job.header["shadow"]))
    except InputError as exc:  # already written for a person (it names the option and its range)
        raise P.ProtocolError("bad_request", str(exc)) from None
    except (AttributeError, TypeError, ValueError) as exc:  # AttributeError: options not a dict
        raise P.ProtocolError("bad_request", f"bad options: {exc}") from None


def run_job(daemon: Daemon, job: Job):
    """``_run_job`` with ``job.cancel`` as the cancel check of every ``core.cancel.point()`` (long
    loops, each model block): a cancelled job stops within a fraction of a second."""
    from maskd.core import cancel

    def check() -> None:
        if job.cancel.is_set():
            raise Cancelled()

    with cancel.checking(check):
        return _run_job(daemon, job)


def _run_job(daemon: Daemon, job: Job):
    """Decode the pixels, run the daemon's worker (the pipeline), encode the answer."""
    spec = job.spec
    image = P.decode_image(job.buffers[0], spec)
    alpha_dtype = job.header.get("alpha_dtype", "u8")
    shadow_text = job.header.get("shadow")  # optional: also return a generated shadow (server.finishing)
    if shadow_text:
        from maskd.core.shadow import parse_shadow

        parse_shadow(str(shadow_text))  # a bad style fails now (bad_request), not after the model
    last = [0.0]

    def progress(stage: str, fraction: float) -> None:
        if job.cancel.is_set():
            raise Cancelled()
        now = time.monotonic()
        if stage != job.stage or now - last[0] > 0.1:
            job.stage, job.fraction, job.changed = str(stage), float(fraction), True
            job.updates.append((job.stage, job.fraction))  # every stage reaches the client
            last[0] = now
            if job.wake is not None:
                job.wake()

    progress("decoding", 0.0)
    result_alpha, fg, timings = find_worker(daemon.config.worker).work(daemon, job, image, progress)
    if job.cancel.is_set():
        raise Cancelled()
    buffers, fg_meta, shadow_meta = _encode_result(job, result_alpha, fg, shadow_text, alpha_dtype)
    model = daemon.describe_model()
    info = {
        "timings": timings,
        "model": model.get("name"),
        "device": model.get("device"),
        "resolution": model.get("resolution"),
        "worker": daemon.config.worker,
    }
    fields = P.reply_fields(
        None,
        "result",
        job=job.job_id,
        width=spec.width,
        height=spec.height,
        alpha_dtype=alpha_dtype,
        foreground=fg_meta,
        shadow=shadow_meta,
        buffers=[b.nbytes for b in buffers],
        info=info,
    )
    return fields, buffers


def _encode_result(job: Job, result_alpha, fg, shadow_text, alpha_dtype: str):
    """The reply's buffers (alpha, then colours and a shadow when asked for) and their metadata."""
    spec = job.spec
    buffers = [P.encode_alpha(result_alpha, alpha_dtype)]
    fg_meta = None
    if fg is not None:
        fg_dtype = job.header.get("foreground_dtype") or spec.dtype
        if fg_dtype not in P.DTYPES:
            fg_dtype = spec.dtype
        buffers.append(P.encode_colours(fg, fg_dtype))
        fg_meta = {"layout": "RGB", "dtype": fg_dtype, "transfer": spec.transfer}
    shadow_meta = None
    if shadow_text:
        from maskd.server.finishing import shadow_reply

        shadow_meta, shadow_alpha = shadow_reply(result_alpha, shadow_text)
        buffers.append(P.encode_alpha(shadow_alpha, alpha_dtype))
        shadow_meta["buffer"] = len(buffers) - 1
    return buffers, fg_meta, shadow_meta


def _pipeline_work(daemon: Daemon, job: Job, image: np.ndarray, progress):
    """The ``pipeline`` worker: the session's matte refined by ``core.pipeline`` (or the client's
    mask refined, for ``refine``); (alpha, colours or None, stage timings)."""
    opts = _options(job, str(getattr(daemon.session, "device", "cpu")))
    from maskd.core import pipeline

    if job.op == "segment":
        res = pipeline.cutout(image, daemon.session.matte, opts, progress)
    else:
        mask = P.decode_mask(job.buffers[1], job.header["mask"])
        res = pipeline.refine(image, mask, opts, progress)
    progress("encoding", 1.0)
    fg = res.foreground if job.header.get("foreground") else None
    timings = {k: round(float(v), 4) for k, v in (getattr(res, "timings", None) or {}).items()}
    if res.device != opts.device:
        log.warning("job %s: the GPU ran out of memory for the refinement; the CPU did it", job.job_id)
    return res.alpha, fg, timings


@dataclass(frozen=True)
class Worker:
    """What a job computes. ``work(daemon, job, image, progress) -> (alpha, colours or None,
    timings)``; ``progress(stage, fraction)`` raises ``Cancelled`` once the job is cancelled.
    ``session(spec)``: the session this worker serves instead of ``open_session(spec)``."""

    work: Callable[[Daemon, Job, np.ndarray, Callable[[str, float], None]], tuple]
    session: Callable[[object], object] | None = None  # SessionSpec -> MatteSession


WORKERS: dict[str, Worker] = {"pipeline": Worker(_pipeline_work)}


def register_worker(name: str, work, session=None) -> None:
    """Make ``maskd serve --worker name`` run ``work`` (an extension's worker: ``core.extensions``)."""
    WORKERS[name] = Worker(work, session)


def find_worker(name: str) -> Worker:
    """The worker registered as ``name`` (extension modules are imported first when needed)."""
    if name not in WORKERS:
        from maskd.core import extensions

        extensions.load()
    if name not in WORKERS:
        raise MaskdError(f"--worker {name}: no such worker (maskd has: {', '.join(sorted(WORKERS))})")
    return WORKERS[name]


LOG_MAX_BYTES = 5 * 1024 * 1024  # then maskd.log -> maskd.log.1 (one old log kept)


def setup_logging(log_file: str | None, foreground: bool) -> None:
    """Log to ``log_file`` (rotated by size while running, not only at start) and/or stderr."""
    handlers = []
    if log_file:
        from logging.handlers import RotatingFileHandler

        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=1, encoding="utf-8"))
    if foreground or not log_file:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s maskd[%(process)d] %(levelname)s %(message)s",
    )
