"""Transport benchmark: a 4000×4000 RGBA u8 layer (64 MiB up, 16 MiB alpha down) through maskd.

Compares, over TCP and a Unix socket, the pyzmq client and the pure-Python ZMTP client against a
plain socket moving the same bytes to a separate process (the physical ceiling), with the
daemon's trivial ``null`` worker (alpha = the input's alpha channel). Then reports the daemon's RSS
over consecutive 4000×4000 ``refine`` requests.

    python tests/bench/bench_transport.py [--runs 10] [--rss-requests 200] [--real-refine 0]

``--real-refine N`` also runs N refines through the real pipeline (stand-in daemon) for RSS.
Not collected by pytest; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from maskd.plugins import maskd_client as mc  # noqa: E402

from tests.helpers import STANDINS_ENV  # noqa: E402

W = H = 4000
WARMUP = 10  # RSS "start" is taken after this many requests (allocator pools reach their size)
UP = W * H * 4
DOWN = W * H

PLAIN_SERVER = textwrap.dedent("""
    import socket, sys
    UP, DOWN = int(sys.argv[2]), int(sys.argv[3])
    family = socket.AF_UNIX if sys.argv[1] != "tcp" else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind(sys.argv[1] if family == socket.AF_UNIX else ("127.0.0.1", 0))
    s.listen(1)
    print(s.getsockname()[1] if family == socket.AF_INET else "ready", flush=True)
    conn, _ = s.accept()
    buf = bytearray(UP)
    view = memoryview(buf)
    while True:
        got = 0
        while got < UP:
            k = conn.recv_into(view[got:])
            if not k:
                sys.exit(0)
            got += k
        conn.sendall(view[:DOWN])
""")


class PlainSocket:
    """A plain socket to another process that receives 64 MiB into a reused buffer and sends 16 MiB back."""

    def __init__(self, kind: str):
        tmp = tempfile.mkdtemp(prefix="bench-")
        path = os.path.join(tmp, "s.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PLAIN_SERVER, "tcp" if kind == "tcp" else path, str(UP), str(DOWN)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if kind == "tcp":
            self.sock = socket.create_connection(("127.0.0.1", int(line)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(path)
        self.reply = memoryview(bytearray(DOWN))

    def round_trip(self, payload) -> float:
        t0 = time.perf_counter()
        self.sock.sendall(payload)
        got = 0
        while got < DOWN:
            got += self.sock.recv_into(self.reply[got:])
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(10)


def start_daemon(folder: Path, *extra: str, tune: bool = True) -> Path:
    cfile = folder / "connection.json"
    env = dict(
        os.environ,
        MASKD_CONNECTION_FILE=str(cfile),
        PYTHONPATH=str(REPO),
        MASKD_MALLOC_TUNING="1" if tune else "0",
        **STANDINS_ENV,
    )
    r = subprocess.run(
        [sys.executable, "-m", "maskd.server", "serve", *extra],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if r.returncode:
        sys.exit(f"maskd serve failed: {r.stdout}{r.stderr}")
    return cfile


def stop_daemon(cfile: Path) -> None:
    env = dict(os.environ, MASKD_CONNECTION_FILE=str(cfile), PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "maskd.server", "stop"], env=env, capture_output=True, cwd=REPO)


class MaskdPath:
    def __init__(self, cfile: Path, backend: str, transport: str):
        self.client = mc.connect(str(cfile), backend=backend, transport=transport, timeout=60)
        self.worker_s: list[float] = []

    def round_trip(self, payload) -> float:
        t0 = time.perf_counter()
        r = self.client.segment(payload, W, H)
        seconds = time.perf_counter() - t0
        assert len(r.alpha) == DOWN and r.alpha[:3] == bytes(payload[3:12:4])
        self.worker_s.append(r.info["timings"]["total"])
        return seconds

    def close(self) -> None:
        self.client.close()


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def rss_run(cfile: Path, requests: int, payload, label: str) -> dict:
    import json

    pid = json.loads(cfile.read_text())["pid"]
    mask = bytes(DOWN // 4)  # a quarter-size rough mask (2000×2000 u8)
    samples = []
    t0 = time.perf_counter()
    with mc.connect(str(cfile), timeout=600) as c:
        for i in range(requests):
            c.refine(payload, W, H, mask, W // 2, H // 2, options={"quality": "fast"})
            if i in (0, WARMUP - 1) or (i + 1) % max(1, requests // 10) == 0:
                samples.append((i + 1, rss_mb(pid)))
    seconds = time.perf_counter() - t0
    warm = dict(samples).get(WARMUP, samples[0][1])
    return {
        "label": label,
        "requests": requests,
        "first": samples[0][1],
        "warm": warm,
        "end": samples[-1][1],
        "max": max(s for _, s in samples),
        "samples": samples,
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rss-requests", type=int, default=200)
    ap.add_argument("--real-refine", type=int, default=0, metavar="N")
    ap.add_argument("--skip-untuned", action="store_true")
    args = ap.parse_args()

    payload = bytearray(UP)
    payload[3::4] = bytes(range(256)) * (DOWN // 256)
    base = Path(tempfile.mkdtemp(prefix="mb-"))
    daemons = {True: start_daemon(base / "t", "--model", "stand-in", "--worker", "null", tune=True)}
    if not args.skip_untuned:
        daemons[False] = start_daemon(base / "u", "--model", "stand-in", "--worker", "null", tune=False)
    paths = {}
    try:
        for kind in ("tcp", "ipc"):
            paths[(kind, "plain socket (ceiling)")] = PlainSocket(kind)
            for tune, cfile in daemons.items():
                for backend in ("pyzmq", "zmtp"):
                    label = f"maskd, {backend} client" + ("" if tune else ", daemon malloc NOT tuned")
                    paths[(kind, label)] = MaskdPath(cfile, backend, kind)
        times = {key: [] for key in paths}
        for i in range(args.runs + 2):  # round robin, so load changes hit every path alike
            for key, path in paths.items():
                t = path.round_trip(payload)
                if i >= 2:
                    times[key].append(t)
    finally:
        for path in paths.values():
            path.close()
        for cfile in daemons.values():
            stop_daemon(cfile)

    print(f"\n### 4000×4000 RGBA u8 round trip (64 MiB up, 16 MiB alpha down), median of {args.runs}\n")
    print(
        "`worker` = the daemon's own time for the trivial worker (decode, copy the alpha channel out, "
        "encode); `transport` = round trip − worker.\n"
    )
    print("| transport | path | round trip ms | worker ms | transport ms | transport × plain |")
    print("|---|---|---|---|---|---|")
    plain = {k: statistics.median(t) for (k, label), t in times.items() if label.startswith("plain")}
    for (kind, label), t in sorted(times.items(), key=lambda kv: (kv[0][0], statistics.median(kv[1]))):
        med = statistics.median(t)
        worker = statistics.median(paths[(kind, label)].worker_s[2:]) if label.startswith("maskd") else 0.0
        print(
            f"| {kind} | {label} | {med * 1e3:.1f} | {worker * 1e3:.1f} | {(med - worker) * 1e3:.1f} | "
            f"{(med - worker) / plain[kind]:.2f} |"
        )

    results = []
    if args.rss_requests:
        cfile = start_daemon(base / "rss", "--model", "stand-in", "--worker", "null")
        try:
            results.append(rss_run(cfile, args.rss_requests, payload, "null worker"))
        finally:
            stop_daemon(cfile)
    if args.real_refine:
        cfile = start_daemon(base / "rssp", "--model", "stand-in")
        try:
            results.append(rss_run(cfile, args.real_refine, payload, "real pipeline refine (quality=fast)"))
        finally:
            stop_daemon(cfile)
    if results:
        print("\n### Daemon RSS over consecutive 4000×4000 `refine` requests (MiB)\n")
        print(f"| worker | requests | RSS after 1st | after {WARMUP} | at end | max | s/request |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['label']} | {r['requests']} | {r['first']:.0f} | {r['warm']:.0f} | {r['end']:.0f} | "
                f"{r['max']:.0f} | {r['seconds'] / r['requests']:.2f} |"
            )
        for r in results:
            print(f"\n{r['label']}: " + ", ".join(f"{n}:{m:.0f}" for n, m in r["samples"]))


if __name__ == "__main__":
    main()
