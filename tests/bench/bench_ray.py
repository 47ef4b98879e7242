"""Images/s of ``maskd remove`` locally (one daemon) vs ``--ray`` on this machine, the overhead Ray
adds per image, and the per-stage costs that docs/scale.md's throughput estimate is built from.

Both runs use the weight-free stand-in model (the model is not what is compared: on a cluster it
runs on GPUs), so the figures are the pipeline around it: reading, the model's input, the
full-resolution refinement and colours, finishing, the atomic write, and — for Ray — the
dataset, the tasks, the object store and the actor. Each way runs on a small and a large batch:
the difference of the two times over the difference of the counts is the per-image cost, the
rest is the fixed cost (start, connection, plan). The local daemon and the Ray instance are
started once, before any timing.

    flock /tmp/maskd-bench.lock python tests/bench/bench_ray.py [--side 1500] [--small 4 --large 16]

Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers import STANDINS_ENV  # noqa: E402
from tests.test_ray_batch import _disc  # noqa: E402

MODEL = ["--model", "stand-in"]  # at its default 1024² grid, like a real model's


def make_inputs(folder: Path, count: int, side: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = _disc(side, side * 4 // 3, seed=i)
        cv2.imwrite(str(folder / f"p{i:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr[-3000:]}")
    return seconds


def stages(path: Path, repeat: int = 3) -> dict[str, float]:
    """Median seconds of each step for one file, in this process (``repeat`` runs)."""
    runs = [_stages_once(path) for _ in range(repeat)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _stages_once(path: Path) -> dict[str, float]:
    from maskd.core import imageio, pipeline
    from maskd.server import batch

    from tests.standins import StandInSession

    out = {}
    t = time.perf_counter()
    image = imageio.read_image(path)
    out["read"] = time.perf_counter() - t
    t = time.perf_counter()
    rgb = pipeline._model_input(image, False)
    out["model input"] = time.perf_counter() - t
    matte = StandInSession(1024).matte(rgb)
    t = time.perf_counter()
    res = pipeline.cutout(image, lambda _: matte, pipeline.CutoutOptions())
    out["refinement + colours"] = time.perf_counter() - t
    t = time.perf_counter()
    rgba = np.concatenate([res.foreground, res.alpha[..., None]], axis=2)
    dst = path.with_name(".stage-out.png")
    imageio.write_image(dst, batch.to_file_dtype(rgba, 8, dst))
    out["write PNG"] = time.perf_counter() - t
    dst.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=1500, help="image height (width = 4/3 of it)")
    ap.add_argument("--small", type=int, default=4)
    ap.add_argument("--large", type=int, default=16)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="logical CPUs given to Ray")
    ap.add_argument("--stages-only", action="store_true", help="only the per-stage costs")
    a = ap.parse_args()
    if a.stages_only:
        with tempfile.TemporaryDirectory(prefix="md-bench-ray-") as tmp:
            make_inputs(Path(tmp), 1, a.side)
            print_stages(stages(Path(tmp) / "p000.jpg"))
        return
    import ray

    cmd = [sys.executable, "-m", "maskd.server"]
    env = dict(os.environ, PYTHONPATH=str(REPO), **STANDINS_ENV)
    with tempfile.TemporaryDirectory(prefix="md-bench-ray-") as tmp:
        tmp = Path(tmp)
        for n in (a.small, a.large):
            make_inputs(tmp / f"in{n}", n, a.side)
        cfile = tmp / "daemon" / "c.json"
        cfile.parent.mkdir(mode=0o700)
        r = subprocess.run(cmd + ["serve", *MODEL, "--connection-file", str(cfile)], env=env, cwd=REPO)
        assert r.returncode == 0
        ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        env = dict(
            os.environ, PYTHONPATH=str(REPO), **STANDINS_ENV
        )  # with the token mode ray.init chose (RAY_AUTH_MODE)
        times = {}
        try:
            for rnd in range(2):  # the first round warms caches; the second is reported
                for n in (a.small, a.large):
                    for way in ("local", "ray"):
                        out = tmp / f"out-{way}-{n}-{rnd}"
                        extra = ["--connection-file", str(cfile)] if way == "local" else ["--ray", address]
                        base = cmd + ["remove", str(tmp / f"in{n}"), "-o", str(out), *MODEL, "-q"]
                        times[way, n] = timed(base + extra, env)
        finally:
            ray.shutdown()
            subprocess.run(cmd + ["stop", "--connection-file", str(cfile)], env=env, cwd=REPO)
        per_stage = stages(tmp / f"in{a.small}" / "p000.jpg")
    w, h = a.side * 4 // 3, a.side
    print(f"{w}×{h} JPEG inputs, stand-in model, {os.cpu_count()} CPUs here, Ray given {a.cpus} logical CPUs")
    print(f"{'':8}{a.small:>4} files {a.large:>4} files   per image   fixed   images/s (large batch)")
    per = {}
    for way in ("local", "ray"):
        ts, tl = times[way, a.small], times[way, a.large]
        per[way] = (tl - ts) / (a.large - a.small)
        fixed = ts - a.small * per[way]
        print(
            f"{way:8}{ts:9.1f} s {tl:9.1f} s {per[way]:9.2f} s {fixed:6.1f} s {a.large / tl:10.2f}"
            f"   (steady state {1 / per[way]:.2f})"
        )
    print(f"Ray adds {per['ray'] - per['local']:+.2f} s per image (negative: its tasks run side by side)")
    print_stages(per_stage)


def print_stages(per_stage: dict[str, float]) -> None:
    print("one file's stages in one process (median of 3; one core's work):")
    for name, seconds in per_stage.items():
        print(f"  {name:22} {seconds:6.3f} s")
    print(f"  {'total CPU per image':22} {sum(per_stage.values()):6.3f} s")


if __name__ == "__main__":
    main()
