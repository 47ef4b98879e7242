"""The batch pipeline's promises (issues 15 and 17), with the real CLI and a real daemon subprocess:

- an input is never replaced by an output, whatever ``-o`` and ``--overwrite`` say;
- a bad output location or a bad combination fails before any model call, with one line;
- a glob keeps the sub-folders below its fixed prefix, as a folder input does;
- ``maskd refine`` skips an existing output unless ``--overwrite``;
- the daemon is asked only for what the output needs (``--mode mask``: no colours);
- Ctrl-C cancels a batch that started its own daemon, stops that daemon, says how far it got,
  and a re-run does only the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tests.conftest import REPO, maskd_command, maskd_env
from tests.daemon_fixtures import short_tmp, start_daemon
from tests.helpers import run_maskd, standin_env
from tests.test_remove import disc


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "bt"), "--resolution", "128", worker="pipeline")
    yield d
    d.stop()


def run_cli(env, *args, timeout=300):
    return run_maskd(*args, env=env, timeout=timeout)


def jobs_seen(daemon) -> int:
    with daemon.client() as c:
        counters = c.status()["counters"]
    return counters["jobs_done"] + counters["jobs_failed"] + counters["jobs_cancelled"]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_clear_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# ---------------------------------------------------------------------------------- issue 17


@pytest.mark.parametrize("case", ["same-file", "glob-into-its-folder", "file-into-its-folder"])
def test_remove_never_replaces_an_input(daemon, tmp_path, case):
    shots = tmp_path / "shots"
    disc(shots / "a.png")
    disc(shots / "b.png")
    before = {p.name: digest(p) for p in shots.iterdir()}
    args = {
        "same-file": [shots / "a.png", "-o", shots / "a.png"],
        "glob-into-its-folder": [shots / "*.png", "-o", shots],
        "file-into-its-folder": [shots / "a.png", "-o", shots],
    }[case]
    jobs = jobs_seen(daemon)
    r = run_cli(daemon.env(), "remove", *args, "--overwrite", "-q")
    assert r.returncode == 1
    assert "would replace the input" in one_clear_line(r)
    assert {p.name: digest(p) for p in shots.iterdir()} == before  # nothing written, nothing replaced
    assert jobs_seen(daemon) == jobs  # refused before any model call


def test_remove_never_replaces_an_input_through_a_hard_link_or_the_background(daemon, tmp_path):
    disc(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    os.link(tmp_path / "a.png", tmp_path / "out" / "a.png")
    r = run_cli(daemon.env(), "remove", tmp_path / "a.png", "-o", tmp_path / "out", "--overwrite", "-q")
    assert r.returncode == 1 and "would replace the input" in one_clear_line(r)
    disc(tmp_path / "bg" / "b.png")
    r = run_cli(
        daemon.env(), "remove", tmp_path / "a.png", "-o", tmp_path / "bg", "--background",
        tmp_path / "bg" / "a.png", "--overwrite", "-q",
    )  # fmt: skip
    assert r.returncode != 0 and not (tmp_path / "bg" / "a.png").exists()


# ---------------------------------------------------------------------------------- issue 15


def test_uncreatable_output_folder_fails_before_the_model(daemon, tmp_path):
    disc(tmp_path / "in" / "a.png")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    jobs = jobs_seen(daemon)
    r = run_cli(daemon.env(), "remove", tmp_path / "in", "-o", tmp_path / "blocker" / "out")
    assert r.returncode == 1
    line = one_clear_line(r)
    assert "cannot create the output folder" in line and "is not a folder" in line
    assert jobs_seen(daemon) == jobs


def test_unwritable_output_folder_fails_before_the_model(daemon, tmp_path):
    disc(tmp_path / "in" / "a.png")
    disc(tmp_path / "in" / "b.png")
    if os.geteuid() == 0:  # root writes through any mode bits; /proc takes no new files from anyone
        out = "/proc"
    else:
        out = tmp_path / "locked"
        out.mkdir(mode=0o555)
    jobs = jobs_seen(daemon)
    r = run_cli(daemon.env(), "remove", tmp_path / "in", "-o", out)
    assert r.returncode == 1
    assert "cannot write into the output folder" in one_clear_line(r)
    assert jobs_seen(daemon) == jobs  # not once per file after each model pass: never


def test_jpeg_without_background_is_refused_before_the_model(daemon, tmp_path):
    disc(tmp_path / "a.png")
    jobs = jobs_seen(daemon)
    r = run_cli(daemon.env(), "remove", tmp_path / "a.png", "-o", tmp_path / "x.jpg")
    assert r.returncode == 1 and "cannot hold transparency" in one_clear_line(r)
    assert jobs_seen(daemon) == jobs and not (tmp_path / "x.jpg").exists()


def test_glob_keeps_sub_folders_like_a_folder_input(daemon, tmp_path):
    disc(tmp_path / "shots" / "day1" / "a.png")
    disc(tmp_path / "shots" / "day2" / "a.png")
    disc(tmp_path / "shots" / "day2" / "deep" / "c.png")
    r = run_cli(daemon.env(), "remove", tmp_path / "shots" / "**" / "*.png", "-o", tmp_path / "g", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli(daemon.env(), "remove", tmp_path / "shots", "-o", tmp_path / "f", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    tree = sorted(str(p.relative_to(tmp_path / "g")) for p in (tmp_path / "g").rglob("*.png"))
    assert tree == ["day1/a.png", "day2/a.png", "day2/deep/c.png"]
    assert tree == sorted(str(p.relative_to(tmp_path / "f")) for p in (tmp_path / "f").rglob("*.png"))


def test_refine_skips_an_existing_output_unless_overwrite(tmp_path):
    inside = disc(tmp_path / "photo.png")
    cv2.imwrite(str(tmp_path / "mask.png"), inside.astype(np.uint8) * 255)
    out = tmp_path / "alpha.png"
    out.write_bytes(b"keep me")
    args = ["refine", tmp_path / "photo.png", "--mask", tmp_path / "mask.png", "-o", out, "--device", "cpu"]
    r = run_cli(maskd_env(), *args)
    assert r.returncode == 0 and "skipped" in r.stdout and out.read_bytes() == b"keep me"
    r = run_cli(maskd_env(), *args, "--overwrite")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == inside.shape


# ---------------------------------------------------------------------------------- issue 16


def test_mask_mode_asks_the_daemon_for_the_alpha_alone(daemon, tmp_path, monkeypatch):
    """The request of ``--mode mask`` carries ``foreground: false`` and ``decontaminate: false``;
    the real daemon's reply then holds one buffer (the alpha). ``--mode cutout`` asks for colours."""
    from maskd.plugins import maskd_client as mc
    from maskd.server import cli

    seen = []
    original = mc.Client._request

    def spy(self, fields, buffers=(), *a, **k):
        reply, out = original(self, fields, buffers, *a, **k)
        if fields.get("op") == "segment":
            seen.append((fields, [memoryview(b).nbytes for b in out]))
        return reply, out

    monkeypatch.setattr(mc.Client, "_request", spy)
    monkeypatch.setenv("MASKD_CONNECTION_FILE", str(daemon.connection_file))
    disc(tmp_path / "p.png", h=90, w=120)
    for mode in ("mask", "rgba", "cutout"):
        assert (
            cli.main(["remove", str(tmp_path / "p.png"), "-o", str(tmp_path / mode), "--mode", mode, "-q"])
            == 0
        )
    (mask, mask_sizes), (rgba, rgba_sizes), (cut, cut_sizes) = seen
    for fields in (mask, rgba):
        assert fields["foreground"] is False and fields["options"]["decontaminate"] is False
    assert mask_sizes == [90 * 120 * 4] and rgba_sizes == [90 * 120 * 4]  # f32 alpha, nothing else
    assert cut["foreground"] is True and cut["options"]["decontaminate"] is True
    assert cut_sizes == [90 * 120 * 4, 90 * 120 * 3 * 4]


# ---------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_cancels_stops_its_daemon_and_a_rerun_does_the_rest(tmp_path_factory, tmp_path):
    folder = short_tmp(tmp_path_factory, "int")
    env = standin_env(MASKD_CONNECTION_FILE=folder / "connection.json")
    total = 24
    for i in range(total):
        disc(tmp_path / "in" / f"{i:02d}.png", h=600, w=800)
    out = tmp_path / "out"
    args = ["remove", tmp_path / "in", "-o", out, "--model", "stand-in", "--resolution", "256", "-q"]
    proc = subprocess.Popen(
        maskd_command() + [*map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(out.glob("*.png"))):  # the first file is finished
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.02)
    pid = json.loads((folder / "connection.json").read_text())["pid"]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    written = sorted(p.name for p in out.glob("*.png"))
    assert f"interrupted: {len(written)} of {total} file(s) finished" in stderr, stderr
    assert "Traceback" not in stderr and 0 < len(written) < total
    assert not list(out.glob(".*")), "no temporary files left behind"
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    st = run_cli(env, "status", "--json", timeout=60)
    assert json.loads(st.stdout)["running"] is False

    r = run_cli(env, *args, timeout=600)  # at once: no stuck daemon in the way
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{total - len(written)} written, {len(written)} skipped" in r.stdout
    assert len(list(out.glob("*.png"))) == total


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
