"""The daemon running the real pipeline: the weight-free stand-in model, and once the generated-weights
``lite`` BiRefNet at a small input size (a real forward, as the editors' tests use it)."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from maskd.plugins import maskd_client as mc

from tests.daemon_fixtures import BACKENDS, short_tmp, start_daemon
from tests.helpers import lite_model_args

W, H = 160, 120


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "pipe"), "--resolution", "256", worker="pipeline")
    yield d
    d.stop()


def disc_image() -> np.ndarray:
    """A red disc on a grey background, RGBA u8, and where the disc is."""
    yy, xx = np.mgrid[0:H, 0:W]
    inside = (yy - 60) ** 2 + (xx - 80) ** 2 < 40**2
    img = np.empty((H, W, 4), np.uint8)
    img[...] = (120, 120, 120, 255)
    img[inside] = (220, 30, 30, 255)
    return img, inside


def alpha_of(result) -> np.ndarray:
    dt = {"u8": np.uint8, "u16": "<u2", "f32": "<f4"}[result.alpha_dtype]
    a = np.frombuffer(result.alpha, dtype=dt).reshape(result.height, result.width)
    return a.astype(np.float32) / {"u8": 255.0, "u16": 65535.0, "f32": 1.0}[result.alpha_dtype]


def check_disc(alpha: np.ndarray, inside: np.ndarray, far_max: float = 0.05) -> None:
    import cv2

    core = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    far = ~cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert alpha[core].mean() > 0.95 and alpha[far].mean() < far_max, (alpha[core].mean(), alpha[far].mean())


@pytest.mark.parametrize("backend", BACKENDS)
def test_segment_through_the_pipeline(stand_in, backend):
    img, inside = disc_image()
    stages = []
    with stand_in.client(backend) as c:
        r = c.segment(
            memoryview(img).cast("B"),
            W,
            H,
            options={"quality": "fast"},
            foreground=True,
            progress=lambda s, f: stages.append(s),
        )
    check_disc(alpha_of(r), inside)
    assert len(r.foreground) == W * H * 3 and r.foreground_dtype == "u8"
    fg = np.frombuffer(r.foreground, np.uint8).reshape(H, W, 3)
    assert abs(int(fg[60, 80, 0]) - 220) < 8  # decontaminated colour of the subject kept
    assert r.info["model"] == "stand-in" and r.info["device"] == "cpu" and r.info["timings"]["total"] > 0
    assert "queued" in stages and "model" in stages


def test_other_dtypes_layouts_and_transfers(stand_in):
    img, inside = disc_image()
    with stand_in.client("zmtp") as c:
        bgra = img[..., [2, 1, 0, 3]].copy()
        check_disc(alpha_of(c.segment(bgra.tobytes(), W, H, layout="BGRA", alpha_dtype="u16")), inside)
        lin = ((img[..., :3].astype(np.float32) / 255.0) ** 2.2).astype("<f4")
        r = c.segment(lin.tobytes(), W, H, layout="RGB", dtype="f32", transfer="linear", alpha_dtype="f32")
        check_disc(alpha_of(r), inside)
        # f16 without numpy on the client side: struct 'e'
        flat = lin.reshape(-1).tolist()
        f16 = struct.pack(f"<{len(flat)}e", *flat)
        check_disc(alpha_of(c.segment(f16, W, H, layout="RGB", dtype="f16", transfer="linear")), inside)
        gray = (img[..., 0].astype(np.uint16) * 257).astype("<u2")
        check_disc(alpha_of(c.segment(gray.tobytes(), W, H, layout="GRAY", dtype="u16")), inside)


def test_roi_and_options(stand_in):
    img, inside = disc_image()
    with stand_in.client() as c:
        a = alpha_of(c.segment(img.tobytes(), W, H, roi=(40, 20, 80, 80)))
        assert a[:, :40].max() == 0 and a[:, 120:].max() == 0
        check_disc(a, inside)
        inv = alpha_of(c.segment(img.tobytes(), W, H, options={"invert": True, "unknown_future": 1}))
        check_disc(1.0 - inv, inside)
        with pytest.raises(mc.MaskdClientError) as e:
            c.segment(img.tobytes(), W, H, options={"quality": "ultra"})
        assert e.value.code == "bad_request" and "ultra" in e.value.message


def test_refine_a_rough_mask(stand_in):
    img, inside = disc_image()
    rough = np.zeros((30, 40), np.uint8)  # a blocky quarter-size mask
    rough[5:25, 10:30] = 255
    with stand_in.client() as c:
        r = c.refine(img.tobytes(), W, H, rough.tobytes(), 40, 30)
    a = alpha_of(r)
    assert a.shape == (H, W)
    check_disc(a, inside, far_max=0.1)  # the refined edge follows the disc, not the blocks


@pytest.mark.slow
def test_real_lite_model_segment(tmp_path_factory, lite_weights):
    """Generated weights (random output): only shape, range and the forward's bookkeeping are checked."""
    folder = short_tmp(tmp_path_factory, "lite")
    d = start_daemon(folder, *lite_model_args(lite_weights), worker="pipeline", model=None)
    try:
        img, _ = disc_image()
        with d.client() as c:
            st = c.status()
            assert st["model_state"] == "ready" and st["model"]["resolution"] == [256, 256]
            hello = c.hello()
            assert "cpu" in hello["devices"] and "lite" in [p["name"] for p in hello["presets"]]
            assert hello["capabilities"]["options"] and "segment" in hello["capabilities"]["ops"]
            r = c.segment(img.tobytes(), W, H, options={"quality": "fast"})
        a = alpha_of(r)
        assert a.shape == (H, W) and 0.0 <= a.min() <= a.max() <= 1.0
        assert r.info["model"] == "lite" and r.info["timings"]["model"] > 0
    finally:
        d.stop()


def test_idle_unload_and_reload(tmp_path_factory):
    d = start_daemon(
        short_tmp(tmp_path_factory, "idle"),
        "--resolution",
        "128",
        "--idle-unload",
        "0.005",
        worker="pipeline",
    )
    try:
        img, inside = disc_image()
        with d.client() as c:
            c.segment(img.tobytes(), W, H)
            deadline = time.monotonic() + 30
            while c.status()["model_state"] != "unloaded" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.status()["model_state"] == "unloaded"
            stages = []
            r = c.segment(img.tobytes(), W, H, progress=lambda s, f: stages.append(s))
            check_disc(alpha_of(r), inside)
            assert "loading model" in stages
        assert "unloading the model" in d.log()
    finally:
        d.stop()


def test_bad_weights_fail_at_serve_with_a_clear_message(tmp_path):
    from tests.daemon_fixtures import RunningDaemon

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage!")
    d = RunningDaemon(tmp_path / "run", tmp_path / "run" / "connection.json")
    r = d.cli("serve", "--weights", str(bad), "--variant", "lite", "--device", "cpu", timeout=120)
    assert r.returncode == 1
    assert "bad.safetensors" in r.stderr and "Traceback" not in r.stderr
    assert not d.connection_file.exists()


def test_refinement_runs_on_the_sessions_device_not_the_clients_choice():
    """A GPU daemon refines on its GPU (core.refine_torch); a client cannot move the work."""
    from types import SimpleNamespace

    from maskd.server import daemon

    def job(options):
        return SimpleNamespace(
            header={"options": options, "roi": None, "foreground": True},
            spec=SimpleNamespace(transfer="srgb"),
        )

    assert daemon._options(job({}), "cuda:0").device == "cuda:0"
    assert daemon._options(job({}), "mps").device == "mps"
    assert daemon._options(job({}), "cpu").device == "cpu"
    assert daemon._options(job({"device": "cuda"}), "cpu").device == "cpu"
    assert daemon._options(job({"quality": "fast"}), "cuda:1").quality == "fast"
