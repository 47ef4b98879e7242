"""``maskd status``: is the daemon running, where, and what does it hold.

Exit code: 0 when running, 3 when not (like ``systemctl status``); with ``--json`` always 0 and the
object's ``running`` field says.
"""

from __future__ import annotations

import json

HELP = "Show whether the daemon runs, where, and what it holds"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--connection-file", metavar="PATH", help="default: the per-user connection file")


def gather(connection_file=None) -> dict:
    """Status as one dict (``running`` false with a ``reason`` when no daemon answers)."""
    from maskd.plugins import maskd_client as mc
    from maskd.server import connection
    from maskd.server import protocol as P

    cfile = connection.connection_path(connection_file).absolute()
    base = {
        "running": False,
        "pid": None,
        "endpoints": {},
        "connection_file": str(cfile),
        "protocol": P.TAG.decode(),
        "protocol_version": list(P.VERSION),
        "model": None,
        "model_state": None,
        "device": None,
        "queue_length": 0,
    }
    info = connection.read(cfile)
    try:
        with mc.connect(str(cfile), timeout=5.0) as client:
            st = client.status()
    except mc.MaskdClientError as exc:
        base["reason"] = exc.message
        if info is not None and exc.code == "unavailable":
            base["stale_connection_file"] = True
            base["pid"] = info.get("pid")
            base["pid_alive"] = connection.pid_alive(info.get("pid"))
            if base["pid_alive"] and connection.lock_held(cfile.parent):
                base["stale_connection_file"] = False  # its daemon lives: it just does not answer
                base["not_answering"] = unresponsive_advice(info.get("pid"))
        return base
    for k in ("v", "id", "kind"):
        st.pop(k, None)
    base.update(st)
    base["running"] = True
    base["connection_file"] = str(cfile)
    return base


def unresponsive_advice(pid) -> str:
    """What to tell about a daemon that holds its lock but does not answer (stopped or stuck)."""
    stopped = False
    try:
        import psutil

        stopped = psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except Exception:
        pass
    if stopped:
        return (
            f"maskd (pid {pid}) is stopped (SIGSTOP or Ctrl-Z), so it cannot answer: "
            f"`kill -CONT {pid}` resumes it, `maskd stop` ends it."
        )
    return f"maskd (pid {pid}) runs but does not answer (stuck?): `maskd stop` ends it."


def run(args) -> int:
    st = gather(args.connection_file)
    if args.json:
        print(json.dumps(st, sort_keys=True))
        return 0
    if not st["running"]:
        if st.get("not_answering"):
            print(st["not_answering"])
            return 3
        print(st.get("reason") or "maskd is not running.")
        if st.get("stale_connection_file"):
            state = "alive but not answering" if st.get("pid_alive") else "dead"
            print(
                f"A stale connection file remains at {st['connection_file']} (pid {st['pid']}, "
                f"{state}); `maskd serve` replaces it."
            )
        return 3
    model = st.get("model") or {}
    lines = [
        f"maskd is running (pid {st['pid']}, version {st.get('maskd_version')}, protocol "
        f"{st['protocol']} {'.'.join(map(str, st['protocol_version']))})",
        f"  model:      {model.get('name')} ({st.get('model_state')}) at {model.get('resolution')} "
        f"on {st.get('device')}, {model.get('dtype')}",
        f"  endpoints:  {', '.join((st.get('endpoints') or {}).values())}",
        f"  connection: {st['connection_file']}",
        f"  queue:      {st.get('queue_length')} job(s)"
        + (f", running {st['current_job']}" if st.get("current_job") else ""),
        f"  uptime:     {st.get('uptime_s', 0):.0f} s; "
        f"{st.get('counters', {}).get('jobs_done', 0)} jobs done",
    ]
    print("\n".join(lines))
    return 0
