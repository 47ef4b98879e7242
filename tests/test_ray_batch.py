"""``maskd remove --ray`` on a local Ray cluster started here: the same files as without Ray.

A 30-file catalogue (small and two large pictures, 8/16-bit, RGBA, gray, JPEG, one corrupt
file) goes once through ``maskd remove`` with a real daemon (the weight-free stand-in model
through the real pipeline, at 128²) and through the real CLI with ``--ray ADDRESS``: every
output must be byte-identical, the corrupt file listed, a re-run must write nothing, and a
model worker killed (SIGKILL) mid-run must not cost a single output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import psutil
import pytest

from tests.conftest import REPO, maskd_command
from tests.daemon_fixtures import short_tmp
from tests.helpers import run_maskd, standin_env

MODEL = ["--model", "stand-in", "--resolution", "128"]
FINISH = ["--margin", "5%"]  # finishing runs too (crop to the subject, 5 % margin)


def _disc(h, w, seed, depth=8, rgba=False, gray=False):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6), min(h, w) * rng.uniform(0.2, 0.35)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(150, 240, 3)
    img[inside] = rng.integers(0, 120, 3)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)  # soft edges: a real refinement band
    if gray:
        img = img[..., 0]
    if rgba:
        a = np.full((h, w), 255, np.uint8)
        a[: h // 6] = 0  # a transparent strip stays transparent
        img = np.dstack([img, a])
    if depth == 16:
        img = img.astype(np.uint16) * 257
    return img


def make_catalogue(root):
    """30 inputs: 29 readable (sizes up to 3000², 8/16-bit, RGBA, gray, JPEG) and one corrupt."""
    specs = []
    for i in range(19):
        specs.append((f"small/p{i:02d}.png", dict(h=60 + 9 * i, w=80 + 7 * i, seed=i)))
    for i in range(3):
        specs.append((f"deep/d{i}.png", dict(h=120 + 10 * i, w=90, seed=40 + i, depth=16)))
    for i in range(3):
        specs.append((f"rgba/a{i}.png", dict(h=100, w=140 + 10 * i, seed=50 + i, rgba=True)))
    specs.append(("gray.png", dict(h=110, w=100, seed=60, gray=True)))
    specs.append(("photo.jpg", dict(h=130, w=170, seed=61)))
    specs.append(("zz-large/big.png", dict(h=3000, w=3000, seed=70)))  # last in order: still to do
    specs.append(("zz-large/big16.png", dict(h=1500, w=2000, seed=71, depth=16)))  # when the kill comes
    for rel, kw in specs:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), _disc(**kw))
    (root / "small" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really a png")
    return len(specs) + 1


def cli(*args, env, timeout=600):
    return run_maskd("remove", *args, env=env, timeout=timeout)


def outputs(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cluster():
    """A Ray head started by this test process (6 logical CPUs on a 2-core machine); its address."""
    import ray

    ray.init(num_cpus=6, include_dashboard=False, object_store_memory=400 * 2**20, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """(inputs, the outputs of ``maskd remove`` without Ray, how many inputs)."""
    root = tmp_path_factory.mktemp("ray")
    src = root / "in"
    count = make_catalogue(src)
    folder = short_tmp(tmp_path_factory, "ray")
    folder.chmod(0o700)
    env = standin_env()
    r = cli(src, "-o", root / "local", *MODEL, *FINISH, "-q", "--connection-file", folder / "c.json", env=env)
    assert r.returncode == 1, r.stdout + r.stderr  # the corrupt file
    assert "29 written" in r.stdout and "broken.png" in r.stdout, r.stdout
    return src, outputs(root / "local"), count


def test_ray_outputs_are_the_local_outputs_and_a_rerun_writes_nothing(cluster, catalogue, tmp_path):
    src, expected, count = catalogue
    assert count == 30 and len(expected) == 29
    out = tmp_path / "out"
    r = cli(src, "-o", out, *MODEL, *FINISH, "--ray", cluster, "--ray-workers", "2", env=standin_env())
    assert r.returncode == 1, r.stdout + r.stderr
    assert "29 written, 0 skipped" in r.stdout and "1 failed" in r.stdout, r.stdout
    assert "broken.png" in r.stdout.split("failures:")[1], r.stdout
    got = outputs(out)
    assert sorted(got) == sorted(expected)
    different = [str(k) for k in expected if got[k] != expected[k]]
    assert not different, f"not byte-identical to maskd remove without Ray: {different}"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    r = cli(src, "-o", out, *MODEL, *FINISH, "--ray", cluster, "-q", env=standin_env())
    assert r.returncode == 1, r.stdout + r.stderr  # the corrupt file is tried again (and fails again)
    assert "0 written, 29 skipped" in r.stdout, r.stdout
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before  # no file written, none left over


def _model_worker_pids() -> list[int]:
    """Ray Data's actor processes (``ray::_MapWorker``) under the cluster this process started."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "MapWorker" in title:
            found.append(p.pid)
    return found


def _written(out) -> int:
    return sum(1 for p in out.rglob("*.png") if not p.name.startswith("."))


def test_a_model_worker_killed_mid_run_costs_no_output(cluster, catalogue, tmp_path):
    """The one model worker is frozen (SIGSTOP) as soon as it exists; once no more outputs appear
    (proof it held work back) it is killed (SIGKILL): Ray restarts it, retries its files, and
    every output is still written, identical."""
    src, expected, _ = catalogue
    out = tmp_path / "out"
    args = [src, "-o", out, *MODEL, *FINISH, "--ray", cluster, "--ray-workers", "1", "-q"]
    earlier = set(_model_worker_pids())
    proc = subprocess.Popen(
        maskd_command() + ["remove", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=standin_env(),
        cwd=REPO,
    )
    worker, held = None, None
    try:
        deadline = time.monotonic() + 300
        while worker is None and proc.poll() is None and time.monotonic() < deadline:
            pids = [p for p in _model_worker_pids() if p not in earlier]
            if pids:
                worker = pids[0]
                os.kill(worker, signal.SIGSTOP)
            time.sleep(0.01)
        assert worker is not None, "the model worker was never seen while the batch ran"
        held, since = _written(out), time.monotonic()
        while time.monotonic() - since < 3.0 and time.monotonic() < deadline:  # until nothing moves
            time.sleep(0.1)
            if _written(out) != held:
                held, since = _written(out), time.monotonic()
        assert held < 29, "the frozen worker held nothing back: the batch did not need it any more"
        os.kill(worker, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stdout + stderr
    assert "29 written" in stdout and "broken.png" in stdout, stdout + stderr
    got = outputs(out)
    assert sorted(got) == sorted(expected)
    assert all(got[k] == expected[k] for k in expected)
    print(f"model worker {worker} frozen with {held} of 29 outputs written, then killed; the batch completed")


def test_a_folder_after_ray_is_refused_with_a_hint_and_ray_is_not_loaded_without_it(tmp_path):
    (tmp_path / "in").mkdir()
    r = cli("--ray", tmp_path / "in", "-o", tmp_path / "out", env=standin_env())
    assert r.returncode == 2 and "is not a Ray address" in r.stderr and "--ray=ADDRESS" in r.stderr
    assert "Traceback" not in r.stderr
    code = "import sys, maskd.server.commands.remove, maskd.server.cli; print('ray' in sys.modules)"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=standin_env(), cwd=REPO
    )
    assert r.stdout.strip() == "False", r.stdout + r.stderr  # the plain command never imports Ray


def test_the_real_model_under_ray_gives_the_local_daemons_bytes(cluster, tmp_path, tmp_path_factory):
    """The real BiRefNet path (generated ``lite`` weights, on the CPU, at 128²) under Ray: each
    model worker pins torch's threads as a local ``maskd serve`` has them, so the outputs are the
    bytes of ``maskd remove`` with a daemon started with the same weights and options."""
    from tests.helpers import generated_weights_path

    weights = generated_weights_path("lite")
    model = ["--weights", weights, "--variant", "lite", "--device", "cpu", "--resolution", "128"]
    src = tmp_path / "in"
    src.mkdir()
    for i, (h, w) in enumerate([(90, 120), (140, 100), (64, 64)]):
        assert cv2.imwrite(str(src / f"m{i}.png"), _disc(h, w, seed=80 + i))
    folder = short_tmp(tmp_path_factory, "raym")
    folder.chmod(0o700)
    env = standin_env()
    r = cli(src, "-o", tmp_path / "local", *model, "-q", "--connection-file", folder / "c.json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(src, "-o", tmp_path / "ray", *model, "--ray", cluster, "--ray-workers", "1", "-q", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    expected, got = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert len(expected) == 3 and sorted(got) == sorted(expected)
    different = [str(k) for k in expected if got[k] != expected[k]]
    assert not different, f"the model under Ray differs from the local daemon: {different}"
