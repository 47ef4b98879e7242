"""What ``maskd remove --mode mask`` costs the daemon and the wire on a 4000×4000 photo, before and
after it asked for the alpha alone (issue 16).

Before: the CLI asked for decontaminated colours whatever the mode (``foreground: true``,
``decontaminate: true``): float32 RGB computed, sent and thrown away. After: the request built by
``server.options.matte_options`` for ``--mode mask`` (``foreground: false``, ``decontaminate:
false``). Both go, alternating, to one real daemon (the stand-in model through the real pipeline)
started in a private folder; prints the reply's buffers and the round-trip time.

    python tests/bench/bench_mask_reply.py [--runs 2] [--side 4000]

Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from maskd.plugins import maskd_client as mc  # noqa: E402
from maskd.server import options  # noqa: E402

from tests.helpers import standin_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--side", type=int, default=4000)
    a = ap.parse_args()
    n = a.side
    yy, xx = np.mgrid[0:n, 0:n]
    photo = np.full((n, n, 3), 200, np.uint8)
    photo[(yy - n // 2) ** 2 + (xx - n // 2) ** 2 < (n // 3) ** 2] = (30, 60, 200)
    args = SimpleNamespace(mode="mask", quality="default")
    after = options.matte_options(args, colours=options.Mode(args.mode).needs_colours)
    before = dict(after, decontaminate=True)
    folder = Path(tempfile.mkdtemp(prefix="md-bench-"))
    cfile = folder / "connection.json"
    serve = [sys.executable, "-m", "maskd.server", "serve", "--worker", "pipeline", "--model", "stand-in"]
    subprocess.run(
        serve + ["--connection-file", str(cfile)], check=True, capture_output=True, env=standin_env()
    )
    rows = {"before (colours asked for)": [], "after (alpha alone)": []}
    try:
        with mc.connect(str(cfile), timeout=600) as client:
            seen = {}
            original = client._request

            def spy(fields, buffers=(), *rest, **kw):
                reply, out = original(fields, buffers, *rest, **kw)
                seen["sizes"] = [memoryview(b).nbytes for b in out]
                return reply, out

            client._request = spy
            for _ in range(a.runs):
                for name, opts, fg in (
                    ("before (colours asked for)", before, True),
                    ("after (alpha alone)", after, False),
                ):
                    t0 = time.perf_counter()
                    client.segment(
                        memoryview(photo).cast("B"), n, n, layout="RGB", options=opts,
                        alpha_dtype="f32", foreground=fg, foreground_dtype="f32",
                    )  # fmt: skip
                    rows[name].append((time.perf_counter() - t0, list(seen["sizes"])))
    finally:
        subprocess.run([sys.executable, "-m", "maskd.server", "stop", "--connection-file", str(cfile)])
    print(
        f"| {n}×{n} `--mode mask` | reply buffers (bytes) | reply total | round trip (median of {a.runs}) |"
    )
    print("|---|---|---|---|")
    for name, values in rows.items():
        sizes = values[0][1]
        seconds = statistics.median(t for t, _ in values)
        print(f"| {name} | {json.dumps(sizes)} | {sum(sizes) / 1e6:.0f} MB | {seconds:.2f} s |")


if __name__ == "__main__":
    main()
