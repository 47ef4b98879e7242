"""``maskd serve``: start the daemon.

By default it starts the daemon in the background and returns once the model is loaded and the
daemon answers (the model loads at start, so the first cut-out is fast and a bad weights file is
reported here, not in the editor); ``--lazy`` defers loading to the first request. With
``--foreground`` it runs in this process until ``maskd stop``, SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

from maskd.core.errors import MaskdError

HELP = "Start the daemon (loads the model once, serves GIMP, Krita and the CLI)"
DEFAULT_MAX_PIXELS = 64_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        metavar="PRESET",
        help="model preset or Hugging Face repo id (default: general)",
    )
    m.add_argument("--weights", metavar="PATH", help="a local .safetensors/.pth file or snapshot folder")
    m.add_argument("--variant", metavar="PRESET", help="the preset whose architecture --weights follows")
    m.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    m.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    m.add_argument(
        "--resolution",
        type=int,
        metavar="N",
        help="model input size override (multiple of 32; smaller = faster, coarser)",
    )
    m.add_argument(
        "--patch-order",
        choices=["wg-hg-c", "c-hg-wg"],
        metavar="ORDER",
        help="decoder patch order the checkpoint was trained with: wg-hg-c (uploaded before "
        "2024-11) or c-hg-wg (later); default: the preset's. Only for a --weights file "
        "whose preset guess is wrong (`maskd models` lists each preset's order)",
    )
    m.add_argument("--lazy", action="store_true", help="load the model at the first request, not at start")
    m.add_argument(
        "--idle-unload",
        type=float,
        metavar="MIN",
        help="free the model's memory after MIN idle minutes, reload on the next request "
        "(0 = never; default: 30 on a GPU, never on CPU)",
    )
    d = p.add_argument_group("daemon")
    d.add_argument("--foreground", action="store_true", help="run in this process (logs to stderr)")
    d.add_argument("--log-file", metavar="PATH", help="default: maskd.log beside the connection file")
    d.add_argument(
        "--connection-file",
        metavar="PATH",
        help="default: $MASKD_CONNECTION_FILE, else $XDG_RUNTIME_DIR/maskd/connection.json",
    )
    d.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"largest image accepted (default {DEFAULT_MAX_PIXELS:,})",
    )
    d.add_argument("--max-queue", type=int, default=8, metavar="N", help="jobs waiting before `busy`")
    d.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else needs --curve)"
    )
    d.add_argument(
        "--curve",
        action="store_true",
        help="encrypt with ZeroMQ CURVE (needed for a non-loopback --host; clients then need "
        "pyzmq and a copy of the connection file)",
    )
    d.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    d.add_argument("--no-ipc", action="store_true", help="TCP only (no Unix socket)")
    d.add_argument(
        "--start-timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="how long to wait for the model to load before giving up",
    )
    # what a job computes: "pipeline", or a worker an extension registered (server.daemon.register_worker)
    d.add_argument("--worker", default="pipeline", help=argparse.SUPPRESS)
    d.add_argument("--daemonized", action="store_true", help=argparse.SUPPRESS)
    # a batch command that starts a daemon for itself: the daemon ends when that process does
    d.add_argument("--owner-pid", type=int, help=argparse.SUPPRESS)


def _check_args(args) -> None:
    if args.resolution is not None and (args.resolution < 32 or args.resolution % 32):
        raise MaskdError(
            f"--resolution {args.resolution}: must be a positive multiple of 32 (e.g. 512, 1024)"
        )
    if args.weights and not Path(args.weights).exists():
        raise MaskdError(f"--weights {args.weights}: no such file or folder")
    if args.model and args.weights:
        raise MaskdError(
            "give --model or --weights, not both (--variant names the architecture of --weights)"
        )
    from maskd.server.daemon import find_worker

    find_worker(args.worker)  # an unknown name fails here, not in the daemon it would start
    if args.max_pixels < 64 * 64:
        raise MaskdError(f"--max-pixels {args.max_pixels} is too small")
    try:
        addr = ipaddress.ip_address(args.host)
    except ValueError:
        raise MaskdError(f"--host {args.host}: give a literal IP address such as 127.0.0.1") from None
    if not addr.is_loopback and not args.curve:
        raise MaskdError(
            f"--host {args.host}: binding a non-loopback address without encryption is "
            "refused (requests are signed but pixels would travel in clear). Add --curve, "
            "or reach maskd through an SSH tunnel."
        )
    if args.curve:
        import zmq

        if not zmq.has("curve"):
            raise MaskdError("--curve: this pyzmq/libzmq was built without CURVE (libsodium) support")


def _connection_file(args) -> Path:
    from maskd.server import connection

    return connection.connection_path(args.connection_file).absolute()


def _running(cfile: Path):
    """The status of a daemon answering at ``cfile``, or None."""
    from maskd.plugins import maskd_client as mc

    try:
        with mc.connect(str(cfile), timeout=5.0) as client:
            return client.status()
    except mc.MaskdClientError:
        return None


def _stuck(cfile: Path) -> str | None:
    """Advice when a daemon holds this connection file's lock but does not answer (a second
    daemon could not start, and waiting for one would only time out)."""
    from maskd.server import connection
    from maskd.server.commands.status import unresponsive_advice

    info = connection.read(cfile)
    pid = info.get("pid") if info else None
    if pid and connection.pid_alive(pid) and connection.lock_held(cfile.parent):
        return unresponsive_advice(pid)
    return None


def _config(args, cfile: Path):
    from maskd.core.session import SessionSpec
    from maskd.server.daemon import DaemonConfig

    spec = SessionSpec(
        model=args.model,
        weights=args.weights,
        variant=args.variant,
        device=args.device,
        precision=args.precision,
        resolution=args.resolution,
        patch_order=getattr(args, "patch_order", None),
    )
    idle = None if args.idle_unload is None else args.idle_unload * 60.0
    return DaemonConfig(
        spec=spec,
        worker=args.worker,
        connection_file=cfile,
        host=args.host,
        port=args.port,
        ipc=not args.no_ipc,
        max_pixels=args.max_pixels,
        max_queue=args.max_queue,
        idle_unload_s=idle,
        lazy=args.lazy,
        curve=args.curve,
        owner_pid=getattr(args, "owner_pid", None),
    )


def _describe(st: dict) -> str:
    model = st.get("model") or {}
    ends = ", ".join((st.get("endpoints") or {}).values())
    return (
        f"pid {st.get('pid')}, model {model.get('name')} on {model.get('device')} "
        f"({st.get('model_state')}); {ends}"
    )


def apply_installed_defaults(args) -> None:
    """Without --model/--weights, serve the model the installer set up (its manifest says which
    weights file and device), so `maskd remove photo.jpg` works right after installing, offline too."""
    if args.model or args.weights:
        return
    from maskd.installers.defaults import installed_serve_args

    extra = installed_serve_args()
    if not extra:
        return
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    try:
        installed, _ = parser.parse_known_args(extra)
    except SystemExit:  # a manifest this version cannot read: keep the built-in defaults
        return
    args.model, args.weights = installed.model, installed.weights
    args.variant = args.variant or installed.variant
    if args.device == "auto" and installed.device:
        args.device = installed.device
    if args.weights and not Path(args.weights).exists():
        raise MaskdError(
            f"the installed weights file {args.weights} is missing; run the installer again, "
            "or give --model/--weights"
        )


def run(args) -> int:
    apply_installed_defaults(args)
    _check_args(args)
    cfile = _connection_file(args)
    st = _running(cfile)
    if st is not None:
        print(f"maskd is already running ({_describe(st)}). Use `maskd stop` first to change its settings.")
        return 0
    stuck = _stuck(cfile)
    if stuck:
        print(f"maskd serve: {stuck}", file=sys.stderr)
        return 1
    if args.foreground or args.daemonized:
        return _run_here(args, cfile)
    return _spawn(args, cfile)


def _run_here(args, cfile: Path) -> int:
    from maskd.server import connection
    from maskd.server.daemon import AlreadyRunning, Daemon, setup_logging

    log_file = args.log_file or str(cfile.parent / connection.LOG_NAME)
    connection.prepare_dir(cfile.parent)
    setup_logging(log_file, foreground=not args.daemonized)
    daemon = Daemon(_config(args, cfile))
    daemon.log_file = log_file
    try:
        return daemon.run()
    except AlreadyRunning as exc:
        print(f"maskd serve: {exc} (it is starting or not answering; `maskd status` tells)", file=sys.stderr)
        return 0


def _child_argv(args, log_file: str, cfile: Path) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "maskd.server",
        "serve",
        "--daemonized",
        "--log-file",
        log_file,
        "--connection-file",
        str(cfile),
    ]
    for name in (
        "model",
        "weights",
        "variant",
        "device",
        "precision",
        "resolution",
        "patch_order",
        "idle_unload",
        "max_pixels",
        "max_queue",
        "host",
        "port",
        "worker",
        "owner_pid",
    ):
        value = getattr(args, name)
        if value is not None:
            if name == "weights":
                value = os.path.abspath(value)
            argv += ["--" + name.replace("_", "-"), str(value)]
    argv += ["--lazy"] if args.lazy else []
    argv += ["--no-ipc"] if args.no_ipc else []
    argv += ["--curve"] if args.curve else []
    return argv


def _spawn(args, cfile: Path) -> int:
    from maskd.server import connection

    connection.prepare_dir(cfile.parent)
    log_file = os.path.abspath(args.log_file or str(cfile.parent / connection.LOG_NAME))
    repo_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = repo_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log_size = os.path.getsize(log_file) if os.path.exists(log_file) else 0
    with open(log_file, "ab") as log:
        kwargs = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": log, "env": env, "close_fds": True}
        if sys.platform == "win32":
            kwargs["creationflags"] = 0x00000008 | 0x00000200
        else:
            kwargs["start_new_session"] = True
        proc = subprocess.Popen(_child_argv(args, log_file, cfile), **kwargs)
    started = time.monotonic()
    deadline = started + args.start_timeout
    said_loading = False
    while time.monotonic() < deadline:
        code = proc.poll()
        st = _running(cfile)
        if st is not None:
            state = st.get("model_state")
            if state in ("ready", "unloaded"):
                if st.get("pid") != proc.pid:  # another daemon won the lock: ours sees it and exits
                    _let_exit(proc)
                print(f"maskd is ready ({_describe(st)}). Stop it with `maskd stop`.")
                return 0
            if state == "loading" and not said_loading:
                print("maskd: loading the model…", file=sys.stderr, flush=True)
                said_loading = True
        if code is not None:
            if code == 0:  # another daemon won the lock (two editors autostarting): wait for it
                stuck = _stuck(cfile) if st is None else None
                if stuck:
                    print(f"maskd serve: {stuck}", file=sys.stderr)
                    return 1
                if st is None:
                    deadline = min(deadline, time.monotonic() + 60)
                time.sleep(0.1)
                continue
            print(f"maskd serve: the daemon exited (code {code}) before it was ready:", file=sys.stderr)
            print(_log_tail(log_file, log_size), file=sys.stderr)
            print(f"(full log: {log_file})", file=sys.stderr)
            return 1
        time.sleep(0.1)
    try:
        proc.terminate()
    except OSError:
        pass
    print(
        f"maskd serve: the daemon was not ready after {time.monotonic() - started:.0f} s (see {log_file}); "
        "stopped it. Raise --start-timeout for a slow first load.",
        file=sys.stderr,
    )
    return 1


def _let_exit(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait (bounded) for a daemon that lost the lock race to exit by itself, so that when
    ``maskd serve`` returns only the daemon that serves is left."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def _log_tail(path: str, start: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if " ERROR " in ln or "Error" in ln or "error:" in ln]
    picked = errors[-5:] if errors else lines[-10:]
    cleaned = []
    for ln in picked:
        if " ERROR " in ln:  # drop the log prefix: the message is what the user needs
            ln = ln.split(" ERROR ", 1)[1].removeprefix("error: ")
        cleaned.append("  " + ln)
    return "\n".join(cleaned)
