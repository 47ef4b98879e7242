"""Benchmark: a folder of layered 3000×2000 files through ``maskd remove``'s layered path.

    python tests/bench/bench_layered.py [--files 20] [--size 3000x2000] [--daemon CONNECTION_FILE]

Writes ``--files`` files (XCF, OpenRaster and KRA in turn; each: a photo layer, an offset logo
layer, a flat white Background — so the default layer choice has to look at pixels), then runs
``server.layered_batch.process_layered`` over them with its progress bar and summary, and prints
per format how long a file takes *beyond the model*: reading, choosing the layer, writing the
masked file atomically (everything but the alpha function). The goal is at most 1 s per file.

The alpha comes from a cheap local function by default (so the numbers are the layered-file cost
alone); ``--daemon`` uses a running maskd daemon instead (its time is reported apart).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from maskd.core.layered import add_masks  # noqa: E402
from maskd.server.layered_batch import process_layered  # noqa: E402

from tests.editors.layered.synth import SynthLayer, photo, write_kra, write_ora, write_xcf  # noqa: E402

WRITERS = {".xcf": lambda w, h, layers: write_xcf(w, h, layers, 11), ".ora": write_ora, ".kra": write_kra}


def local_alpha(rgba: np.ndarray) -> np.ndarray:
    """A soft matte from the pixels (what a model would give), at numpy speed."""
    lum = rgba[..., :3].mean(axis=2, dtype=np.float32) / 255.0
    return np.clip((lum - 0.35) * 4.0, 0.0, 1.0)


def make_files(folder: Path, count: int, width: int, height: int) -> list[Path]:
    photos = [photo(height, width, seed) for seed in range(3)]
    logo = photo(height // 5, width // 4, 9)
    white = np.full((height, width, 4), 255, np.uint8)
    suffixes = list(WRITERS)
    paths = []
    t0 = time.perf_counter()
    for i in range(count):
        suffix = suffixes[i % len(suffixes)]
        layers = [
            SynthLayer("logo", logo, (width // 10, height // 10), 0.8),
            SynthLayer("photo", photos[i % 3]),
            SynthLayer("Background", white),
        ]
        path = folder / f"shot{i:02d}{suffix}"
        path.write_bytes(WRITERS[suffix](width, height, layers))
        paths.append(path)
    size = sum(p.stat().st_size for p in paths) / 1e6
    print(
        f"made {count} files of {width}×{height} ({size:.0f} MB) in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--size", default="3000x2000", help="WIDTHxHEIGHT")
    ap.add_argument("--daemon", metavar="CONNECTION_FILE", help="take the alpha from this running daemon")
    ap.add_argument("--keep", metavar="FOLDER", help="write the files here and keep them")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="maskd-bench-layered-"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = make_files(folder, args.files, width, height)

    alpha_fn, client = local_alpha, None
    if args.daemon:
        from maskd.server.client import DaemonClient

        client = DaemonClient.connect(args.daemon)
        options = {"quality": "default", "refine": True, "decontaminate": False}
        alpha_fn = lambda rgba: client.segment(rgba, options).alpha  # noqa: E731

    out = folder / "out"
    summary = process_layered(paths, alpha_fn, output=str(out), progress=True)
    if client is not None:
        client.close()

    rows = {}
    for r in summary.results:
        rows.setdefault(r.source.suffix, []).append(r)
    header = (
        f"{'format':8} {'files':>5} {'wall s/file':>12} {'alpha':>7} {'beyond model':>13} "
        f"{'CPU s/file':>11} {'alpha':>7} {'beyond model':>13}"
    )
    print("\n" + header)
    worst = 0.0
    for suffix, results in sorted(rows.items()):
        total = np.mean([r.seconds_total for r in results])
        alpha = np.mean([r.seconds_alpha for r in results])
        cpu = np.mean([r.cpu_total for r in results])
        cpu_alpha = np.mean([r.cpu_alpha for r in results])
        worst = max(worst, total - alpha)
        print(
            f"{suffix:8} {len(results):5d} {total:12.2f} {alpha:7.2f} {total - alpha:13.2f} "
            f"{cpu:11.2f} {cpu_alpha:7.2f} {cpu - cpu_alpha:13.2f}"
        )
    overall = summary.overhead_per_file()
    cpu_overall = np.mean([r.cpu_total - r.cpu_alpha for r in summary.results])
    blank = ""
    print(
        f"{'all':8} {len(summary.results):5d} {blank:12} {blank:7} {overall:13.2f} {blank:11} {blank:7} "
        f"{cpu_overall:13.2f}"
    )
    verdict = "OK" if worst <= 1.0 else "OVER"
    print(
        f"\ngoal: at most 1 s per file beyond the model — worst format {worst:.2f} s wall: {verdict}"
        f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    # the in-place path (same work, written over the input) for one file of each format
    for path in paths[:3]:
        t0 = time.perf_counter()
        add_masks(path, path, alpha_fn, layers=["logo"])
        print(f"in-place {path.suffix}: {time.perf_counter() - t0:.2f} s (logo layer)", file=sys.stderr)
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0 if not summary.failed else 1


if __name__ == "__main__":
    sys.exit(main())
