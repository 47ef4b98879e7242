"""Finishing throughput: background + shadow + canvas on a 3000×3000 product photo.

The goal (issue 8): finishing one 3000×3000 image takes at most 0.5 s on the project machine.
The matte comes from the weight-free stand-in model through the real pipeline. The stand-in's
matte never goes below 0.25% (a sigmoid floor), which a trained model's does; the main rows remove
that floor so the alpha looks like a real refined matte (exact 0/1 outside a soft band), and the
last row keeps it (the worst case: every pixel is an edge pixel). Only ``core.compose.finish`` is
timed, then (separately) the file encoding the CLI does afterwards.

    .venv/bin/python tests/bench/bench_finishing.py [--size 3000] [--runs 5]

Prints one row per configuration: best and median wall time over the runs, the median CPU time
(all threads of the process), and the stages of the best run. The machine's load average is
printed too: on a shared, busy 2-core machine wall times grow with the load while CPU time does
not; on an idle one the best wall time is at or below the CPU time (OpenCV uses both cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from maskd.core import canvas, compose, imageio, pipeline  # noqa: E402
from maskd.core.shadow import parse_shadow  # noqa: E402

from tests.standins import StandInSession  # noqa: E402

GOAL_S = 0.5


def product_photo(size: int) -> np.ndarray:
    """A bottle-like blue subject with a label on a warm grey backdrop with a soft gradient."""
    import cv2

    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / size
    img = np.empty((h, w, 3), np.float32)
    img[...] = (0.88, 0.86, 0.83)
    img *= (1.0 - 0.08 * yy)[..., None]
    body = (np.abs(xx - 0.5) < 0.17) & (yy > 0.28) & (yy < 0.9)
    neck = (np.abs(xx - 0.5) < 0.06) & (yy > 0.12) & (yy <= 0.28)
    img[body | neck] = (0.12, 0.3, 0.62)
    label = (np.abs(xx - 0.5) < 0.17) & (yy > 0.5) & (yy < 0.7)
    img[label] = (0.95, 0.92, 0.5)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    return (img * 255 + 0.5).astype(np.uint8)


CONFIGS = [
    ("white background", dict(background="white")),
    ("white + soft shadow", dict(background="white", shadow="soft")),
    (
        "marketplace (white, soft shadow, 5%, 2000x2000)",
        dict(background="white", shadow="soft", crop="subject", margin="5%", canvas="2000x2000"),
    ),
    (
        "white + soft shadow, 5%, square at native size",
        dict(background="white", shadow="soft", crop="subject", margin="5%", canvas="1:1"),
    ),
    (
        "blurred original + drop shadow, 2000x2000",
        dict(background="blur", shadow="drop", crop="subject", margin="5%", canvas="2000x2000"),
    ),
    ("picture background (cover) + drop shadow", dict(background="@picture", shadow="drop")),
    ("transparent + soft shadow (RGBA)", dict(shadow="soft", crop="subject", margin="5%")),
    (
        "marketplace, 16-bit input",
        dict(
            background="white", shadow="soft", crop="subject", margin="5%", canvas="2000x2000", sixteen=True
        ),
    ),
    (
        "marketplace, raw stand-in matte (soft everywhere)",
        dict(background="white", shadow="soft", crop="subject", margin="5%", canvas="2000x2000", raw=True),
    ),
]


def stand_in_matte(rgb: np.ndarray) -> np.ndarray:
    """The stand-in's matte without its sigmoid floor (a trained model's background is ~0)."""
    m = StandInSession(1024).matte(rgb)
    return np.clip((m - 0.01) / 0.98, 0.0, 1.0).astype(np.float32)


def options(cfg: dict, picture: str) -> compose.FinishOptions:
    bg = cfg.get("background")
    if bg == "@picture":
        bg = picture
    return compose.FinishOptions(
        background=compose.parse_background(bg) if bg else None,
        shadow=parse_shadow(cfg["shadow"]) if cfg.get("shadow") else None,
        crop=cfg.get("crop", "none"),
        margin=canvas.parse_margin(cfg["margin"]) if cfg.get("margin") else canvas.Margin(),
        canvas=canvas.parse_canvas(cfg["canvas"]) if cfg.get("canvas") else None,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    size = args.size
    image = product_photo(size)
    t = time.perf_counter()
    cut = pipeline.cutout(image, stand_in_matte, pipeline.CutoutOptions())
    prep = time.perf_counter() - t
    alpha, fg = cut.alpha, cut.foreground
    raw = pipeline.cutout(image, StandInSession(1024).matte, pipeline.CutoutOptions())
    edge = float(((alpha > 0) & (alpha < 1)).mean())
    image16 = image.astype(np.uint16) * 257
    with tempfile.TemporaryDirectory() as tmp:
        picture = str(Path(tmp) / "backdrop.jpg")
        rng = np.random.default_rng(0)
        backdrop = (rng.random((1200, 1800, 3)) * 40 + 180).astype(np.uint8)
        imageio.write_image(picture, backdrop)
        print(
            f"finishing of a {size}x{size} image (matte: stand-in model + pipeline in {prep:.1f} s, "
            f"{edge:.1%} soft-edge pixels); load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs; goal ≤ {GOAL_S:.1f} s\n"
        )
        header = (
            f"{'configuration':<50} {'best s':>7} {'median s':>9} {'cpu s':>6} {'output':>16}  "
            f"{'jpg/png enc s':>13}  stages of the best run (ms)"
        )
        print(header)
        print("-" * len(header))
        worst_best = worst_cpu = 0.0
        for name, cfg in CONFIGS:
            opts = options(cfg, picture)
            src = image16 if cfg.get("sixteen") else image
            a_in, fg_in = (raw.alpha, raw.foreground) if cfg.get("raw") else (alpha, fg)
            compose.finish(src, a_in, fg_in, opts)  # warm caches (fitted backdrop, tables)
            walls, cpus, best = [], [], None
            for _ in range(args.runs):
                c0, w0 = time.process_time(), time.perf_counter()
                res = compose.finish(src, a_in, fg_in, opts)
                wall = time.perf_counter() - w0
                walls.append(wall)
                cpus.append(time.process_time() - c0)
                if best is None or wall < best[0]:
                    best = (wall, res.timings)
            out = res.image
            enc0 = time.perf_counter()
            fmt = ".jpg" if out.shape[2] == 3 else ".png"
            data = imageio.to_uint8(out)
            import cv2

            cv2.imencode(fmt, data[..., ::-1] if out.shape[2] == 3 else data[..., [2, 1, 0, 3]])
            enc = time.perf_counter() - enc0
            stages = " ".join(f"{k}={v * 1000:.0f}" for k, v in best[1].items() if v >= 0.0005)
            shape = f"{out.shape[1]}x{out.shape[0]}x{out.shape[2]}"
            print(
                f"{name:<50} {min(walls):>7.3f} {statistics.median(walls):>9.3f} "
                f"{statistics.median(cpus):>6.2f} {shape:>16}  {fmt[1:]} {enc:>9.3f}  {stages}"
            )
            if not cfg.get("raw"):
                worst_best = max(worst_best, min(walls))
                worst_cpu = max(worst_cpu, statistics.median(cpus))
    print(
        f"\nslowest configuration (real-like matte): best run {worst_best:.3f} s wall "
        f"({'within' if worst_best <= GOAL_S else 'OVER'} the {GOAL_S:.1f} s goal at load "
        f"{os.getloadavg()[0]:.1f}), {worst_cpu:.3f} s CPU"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
