"""``maskd stop``: ask the daemon to shut down and wait until its process is gone.

A daemon that does not answer but still runs (wedged) gets SIGTERM, then SIGKILL after a grace
period. Stopping when nothing runs is not an error.
"""

from __future__ import annotations

import time

HELP = "Stop the running daemon"


def add_arguments(p) -> None:
    p.add_argument("--connection-file", metavar="PATH", help="default: the per-user connection file")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long to wait for a clean stop before terminating (default 30)",
    )


def _wait_gone(pid: int, timeout: float) -> bool:
    from maskd.server import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not connection.pid_alive(pid):
            return True
        time.sleep(0.05)
    return not connection.pid_alive(pid)


def _looks_like_maskd(pid: int) -> bool:
    try:
        import psutil

        cmd = " ".join(psutil.Process(pid).cmdline())
        return "maskd" in cmd or " server serve" in cmd or "-m server" in cmd
    except Exception:
        return False


def _terminate(pid: int, timeout: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    except psutil.NoSuchProcess:
        pass
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def stop(connection_file=None, timeout: float = 30.0) -> tuple[bool, str]:
    """Stop the daemon; returns (stopped_something, message)."""
    from maskd.plugins import maskd_client as mc
    from maskd.server import connection

    cfile = connection.connection_path(connection_file).absolute()
    info = connection.read(cfile)
    pid = None
    try:
        with mc.connect(str(cfile), timeout=10.0) as client:
            pid = client.status().get("pid")
            try:
                client.shutdown()
            except mc.MaskdClientError:
                pass  # it may close before its answer arrives; waiting for the process tells
    except mc.MaskdClientError:
        pass
    if pid is None:
        pid = info.get("pid") if info else None
        if not pid or not connection.pid_alive(pid):
            if info is not None:
                try:
                    cfile.unlink()
                except OSError:
                    pass
                return False, f"maskd is not running (removed the stale connection file {cfile})"
            return False, "maskd is not running"
        if not _looks_like_maskd(pid):
            return False, f"maskd is not answering and pid {pid} is not a maskd process; nothing stopped"
        ok = _terminate(pid, timeout)
        return ok, (
            f"maskd (pid {pid}) did not answer; terminated it" if ok else f"could not stop maskd (pid {pid})"
        )
    if _wait_gone(pid, timeout):
        return True, f"maskd stopped (pid {pid})"
    ok = _terminate(pid, 10.0)
    return ok, (
        f"maskd (pid {pid}) did not stop within {timeout:.0f} s; terminated it"
        if ok
        else f"could not stop maskd (pid {pid})"
    )


def run(args) -> int:
    stopped, message = stop(args.connection_file, args.timeout)
    print(message)
    return 0 if stopped or "not running" in message else 1
