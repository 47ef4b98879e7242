"""``maskd remove`` end to end: real CLI, real daemon (stand-in model through the real pipeline)."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest

from tests.daemon_fixtures import short_tmp, start_daemon
from tests.helpers import REPO, maskd_command, run_maskd, standin_env


def disc(path, h=90, w=120, depth=8):
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 < (h // 3) ** 2
    img = np.full((h, w, 3), (200, 200, 200), np.uint8)
    img[inside] = (30, 60, 200)  # BGR for cv2
    if depth == 16:
        img = img.astype(np.uint16) * 257
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return inside


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "rm"), "--resolution", "128", worker="pipeline")
    yield d
    d.stop()


def remove(daemon_env, *args, timeout=300):
    return run_maskd("remove", *args, env=daemon_env, timeout=timeout)


def test_folder_batch_with_a_bad_file_skip_and_overwrite(daemon, tmp_path):
    src = tmp_path / "in"
    inside = disc(src / "a.png")
    disc(src / "sub" / "b.jpg")
    disc(src / "sub" / "deep16.png", depth=16)
    (src / "sub" / "broken.png").write_bytes(b"not a png at all")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    r = remove(daemon.env(), src, "-o", out, "-q")
    assert r.returncode == 1, r.stdout + r.stderr  # one failure -> exit 1, the rest still written
    assert "3 written" in r.stdout and "1 failed" in r.stdout and "broken.png" in r.stdout
    a = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (90, 120, 4) and a.dtype == np.uint8
    alpha = a[..., 3].astype(np.float32) / 255
    assert alpha[inside].mean() > 0.9 and alpha[~inside].mean() < 0.1
    assert abs(int(a[45, 60, 0]) - 30) < 10  # decontaminated subject colour (BGR) survives
    assert (out / "sub" / "b.png").exists()
    deep = cv2.imread(str(out / "sub" / "deep16.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape[2] == 4
    mtime = (out / "a.png").stat().st_mtime_ns
    r = remove(daemon.env(), src / "a.png", "-o", out, "-q")
    assert r.returncode == 0 and "0 written, 1 skipped" in r.stdout
    assert (out / "a.png").stat().st_mtime_ns == mtime
    r = remove(daemon.env(), src / "a.png", "-o", out, "-q", "--overwrite")
    assert r.returncode == 0 and "1 written" in r.stdout


def test_mask_mode_background_and_globs(daemon, tmp_path):
    inside = disc(tmp_path / "shots" / "one.png")
    disc(tmp_path / "shots" / "two.png")
    r = remove(daemon.env(), tmp_path / "shots" / "*.png", "-o", tmp_path / "masks", "--mode", "mask", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    m = cv2.imread(str(tmp_path / "masks" / "one.png"), cv2.IMREAD_UNCHANGED)
    assert m.ndim == 2 and m[inside].mean() > 230 and m[~inside].mean() < 25
    assert (tmp_path / "masks" / "two.png").exists()
    out = tmp_path / "on-red.jpg"
    r = remove(daemon.env(), tmp_path / "shots" / "one.png", "-o", out, "--background", "#ff0000", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    img = cv2.imread(str(out))
    assert img.shape == (90, 120, 3)
    assert img[2, 2, 2] > 200 and img[2, 2, 0] < 40  # background became red (BGR)
    r = remove(daemon.env(), tmp_path / "shots" / "one.png", "-o", tmp_path / "x.jpg", "-q")
    assert r.returncode == 1 and "transparency" in r.stderr  # refused before the model (issue 15)
    assert not (tmp_path / "x.jpg").exists()


def test_rgba_mode_keeps_original_colours(daemon, tmp_path):
    disc(tmp_path / "p.png")
    r = remove(daemon.env(), tmp_path / "p.png", "-o", tmp_path / "o", "--mode", "rgba", "-q")
    assert r.returncode == 0
    a = cv2.imread(str(tmp_path / "o" / "p.png"), cv2.IMREAD_UNCHANGED)
    src = cv2.imread(str(tmp_path / "p.png"))
    assert np.array_equal(a[..., :3], src)


def test_missing_inputs_are_reported(daemon, tmp_path):
    r = remove(daemon.env(), tmp_path / "nope.png", tmp_path / "*.tif", "-o", tmp_path / "o")
    assert r.returncode == 2
    assert "no such file" in r.stderr and "no matching" in r.stderr and "Traceback" not in r.stderr


def test_starts_and_stops_its_own_daemon(tmp_path_factory, tmp_path):
    folder = short_tmp(tmp_path_factory, "own")
    env = standin_env(MASKD_CONNECTION_FILE=folder / "connection.json")
    disc(tmp_path / "in" / "a.png")
    r = remove(env, tmp_path / "in", "-o", tmp_path / "out", "--model", "stand-in", "--resolution", "128")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "starting it for this batch" in r.stderr and (tmp_path / "out" / "a.png").exists()
    st = subprocess.run(
        maskd_command() + ["status", "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    assert json.loads(st.stdout)["running"] is False  # it stopped what it started


def test_same_stem_inputs_never_overwrite_each_other(daemon, tmp_path):
    disc(tmp_path / "in" / "a.png")
    disc(tmp_path / "in" / "a.jpg")
    r = remove(daemon.env(), tmp_path / "in", "-o", tmp_path / "out", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a-jpg.png", "a-png.png"]
    r = remove(daemon.env(), tmp_path / "in", "-o", tmp_path / "out2", "--format", "jpg")
    assert r.returncode == 1 and "cannot hold transparency" in r.stderr and "Traceback" not in r.stderr
