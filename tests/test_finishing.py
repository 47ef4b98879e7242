"""Finishing through the real CLI: ``maskd remove`` against a real stand-in daemon, and ``maskd finish``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.daemon_fixtures import short_tmp, start_daemon
from tests.helpers import maskd_env, run_maskd

H, W = 120, 160
CY, CX, R = 60, 70, 30  # the subject: a disc


def product(path, depth=8, shift=0):
    """A blue disc on a light grey backdrop (BGR for cv2); returns the disc's mask."""
    yy, xx = np.mgrid[0:H, 0:W]
    inside = (yy - CY) ** 2 + (xx - CX - shift) ** 2 < R**2
    img = np.full((H, W, 3), (215, 215, 215), np.uint8)
    img[inside] = (200, 90, 30)
    if depth == 16:
        img = img.astype(np.uint16) * 257
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return inside


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "fin"), "--resolution", "128", worker="pipeline")
    yield d
    d.stop()


def cli(env, *args, timeout=300):
    return run_maskd(*args, env=env, timeout=timeout)


def test_marketplace_batch_writes_finished_files_and_sidecars(daemon, tmp_path):
    src = tmp_path / "shots"
    product(src / "a.png")
    product(src / "more" / "b.jpg", shift=20)
    out = tmp_path / "out"
    r = cli(
        daemon.env(),
        "remove",
        src,
        "-o",
        out,
        "--preset",
        "marketplace",
        "--canvas",
        "300x300",
        "--format",
        "jpg",
        "-q",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 written" in r.stdout
    for name in ("a", "more/b"):
        img = cv2.imread(str(out / f"{name}.jpg"))
        assert img.shape == (300, 300, 3)
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["output_size"] == {"width": 300, "height": 300}
        box = meta["subject"]
        # the 60 px disc fitted into 270×270 (5% margins) → 270 px, centred
        assert max(box["width"], box["height"]) == 270 and min(box["width"], box["height"]) > 260
        assert abs(box["x"] + box["width"] / 2 - 150) <= 1 and abs(box["y"] + box["height"] / 2 - 150) <= 1
        src_box = meta["subject_in_source"]
        assert abs(src_box["width"] - 2 * R) <= 8 and abs(src_box["height"] - 2 * R) <= 8  # stand-in matte
        assert meta["options"]["background"] == "#ffffffff" and meta["options"]["shadow"]["opacity"] > 0
        assert meta["shadow"] is not None
        assert img[3, 3].min() > 245  # white background (corner)
        assert img[150, 150, 0] > 150 and img[150, 150, 2] < 90  # the blue subject (BGR), centred
        below = img[288:292, 140:160].astype(float).mean()
        assert below < img[292, 3].astype(float).mean() - 3  # the shadow under the subject's base
    assert json.loads((out / "a.json").read_text())["source"].endswith("a.png")


def test_sixteen_bit_crop_margin_transparent_webp_and_tiff(daemon, tmp_path):
    inside = product(tmp_path / "deep.png", depth=16)
    ys, xs = np.nonzero(inside)
    r = cli(
        daemon.env(),
        "remove",
        tmp_path / "deep.png",
        "-o",
        tmp_path / "o16",
        "--crop",
        "subject",
        "--margin",
        "10px",
        "--shadow",
        "contact",
        "--background",
        "white",
        "-q",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    deep = cv2.imread(str(tmp_path / "o16" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.ndim == 3 and deep.shape[2] == 3
    assert abs(deep.shape[0] - (np.ptp(ys) + 21)) <= 8 and abs(deep.shape[1] - (np.ptp(xs) + 21)) <= 8
    assert not (tmp_path / "o16" / "deep.json").exists()  # sidecars only when asked (or with a preset)
    r = cli(
        daemon.env(),
        "remove",
        tmp_path / "deep.png",
        "-o",
        tmp_path / "ow",
        "--shadow",
        "drop",
        "--canvas",
        "1:1",
        "--format",
        "webp",
        "--sidecar",
        "-q",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    webp = cv2.imread(str(tmp_path / "ow" / "deep.webp"), cv2.IMREAD_UNCHANGED)
    assert webp.shape[2] == 4 and webp.shape[0] == webp.shape[1]  # transparent, square
    assert webp[0, 0, 3] == 0 and webp[32, 32, 3] == 255  # transparent corner, opaque subject
    assert (tmp_path / "ow" / "deep.json").exists()
    r = cli(
        daemon.env(),
        "remove",
        tmp_path / "deep.png",
        "-o",
        tmp_path / "ot",
        "--background",
        "#00000000",
        "--shadow",
        "soft",
        "--format",
        "tif",
        "-q",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    tif = cv2.imread(str(tmp_path / "ot" / "deep.tif"), cv2.IMREAD_UNCHANGED)
    assert tif.dtype == np.uint16 and tif.shape == (H, W, 4)
    base_row = ys.max() + 2
    assert tif[base_row, CX, 3] > 3000  # the shadow is in the alpha, on a transparent background
    assert tif[3, 3, 3] == 0


def test_option_errors_are_plain_messages(daemon, tmp_path):
    product(tmp_path / "p.png")
    r = cli(daemon.env(), "remove", tmp_path / "p.png", "-o", tmp_path / "o", "--margin", "60%")
    assert r.returncode == 2 and "margin" in r.stderr and "Traceback" not in r.stderr
    r = cli(daemon.env(), "remove", tmp_path / "p.png", "-o", tmp_path / "o", "--shadow", "huge")
    assert r.returncode == 2 and "unknown style" in r.stderr
    r = cli(
        daemon.env(),
        "remove",
        tmp_path / "p.png",
        "-o",
        tmp_path / "o",
        "--mode",
        "mask",
        "--shadow",
        "soft",
        "-q",
    )
    assert r.returncode == 1 and "--mode mask" in r.stderr and "Traceback" not in r.stderr
    r = cli(
        daemon.env(),
        "remove",
        tmp_path / "p.png",
        "-o",
        tmp_path / "o",
        "--shadow",
        "soft",
        "--format",
        "jpg",
        "-q",
    )
    assert r.returncode == 1 and "transparency" in r.stderr


def test_mask_mode_is_cropped_and_placed_like_the_picture(daemon, tmp_path):
    product(tmp_path / "p.png")
    r = cli(
        daemon.env(),
        "remove",
        tmp_path / "p.png",
        "-o",
        tmp_path / "m",
        "--mode",
        "mask",
        "--canvas",
        "100x100",
        "--margin",
        "10%",
        "--sidecar",
        "-q",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    m = cv2.imread(str(tmp_path / "m" / "p.png"), cv2.IMREAD_UNCHANGED)
    assert m.shape == (100, 100) and m[50, 50] > 240 and m[2, 2] < 10
    meta = json.loads((tmp_path / "m" / "p.json").read_text())
    assert abs(meta["subject"]["width"] - 80) <= 2


def test_finish_command_works_on_existing_cutouts_without_a_daemon(tmp_path):
    cut = np.zeros((80, 100, 4), np.uint8)
    cut[20:60, 30:70] = (40, 200, 90, 255)
    cut[19, 30:70, 3] = 128  # a soft top edge
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "c.png"), cut)
    cv2.imwrite(str(tmp_path / "in" / "flat.png"), cut[..., :3])  # no alpha: refused, batch goes on
    env = maskd_env(MASKD_CONNECTION_FILE=tmp_path / "nowhere" / "connection.json")
    r = cli(
        env,
        "finish",
        tmp_path / "in",
        "-o",
        tmp_path / "out",
        "--background",
        "#ff0000",
        "--crop",
        "subject",
        "--margin",
        "5px",
        "--sidecar",
        "-q",
    )
    assert r.returncode == 1 and "1 written" in r.stdout and "no alpha channel" in r.stdout
    img = cv2.imread(str(tmp_path / "out" / "c.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (51, 50, 3)  # 41×40 subject (soft row included) + 5 px each side
    assert tuple(img[25, 25]) == (40, 200, 90) and tuple(img[1, 1]) == (0, 0, 255)
    meta = json.loads((tmp_path / "out" / "c.json").read_text())
    assert meta["subject"] == {"x": 5, "y": 5, "width": 40, "height": 41}


def test_saved_layers_recompose_to_the_finished_picture(tmp_path):
    from maskd.core import compose, imageio

    cut = np.zeros((90, 120, 4), np.uint16)
    cut[20:70, 40:80] = (9000, 30000, 52000, 65535)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "k.png"), cut)
    env = maskd_env(MASKD_CONNECTION_FILE=tmp_path / "nowhere" / "connection.json")
    r = cli(
        env,
        "finish",
        tmp_path / "in" / "k.png",
        "-o",
        tmp_path / "out",
        "--background",
        "#d0e0f0",
        "--shadow",
        "drop,color=#203040",
        "--save-layers",
        "-q",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    final = imageio.to_float(imageio.read_image(out / "k.png"))
    subject = imageio.to_float(imageio.read_image(out / "k.subject.png"))
    shadow = imageio.to_float(imageio.read_image(out / "k.shadow.png"))
    background = imageio.to_float(imageio.read_image(out / "k.background.png"))
    assert final.shape == (90, 120, 3) and subject.shape == (90, 120, 4) and shadow.shape == (90, 120, 4)
    assert background.shape == (90, 120, 3) and np.allclose(
        background, [0xD0 / 255, 0xE0 / 255, 0xF0 / 255], atol=1e-4
    )
    assert shadow[71, 60, 3] > 0.2 and shadow[10, 10, 3] == 0  # under the base, not in the corner
    assert np.allclose(shadow[71, 60, :3], [0x20 / 255, 0x30 / 255, 0x40 / 255], atol=1e-4)
    col, _ = compose.composite_reference(
        subject[..., :3], subject[..., 3], background, 1.0, shadow[71, 60, :3], shadow[..., 3]
    )
    assert np.abs(col - final).max() < 2e-3  # the layers stack up to the written picture


def test_daemon_returns_a_shadow_buffer_when_asked(daemon):
    """The protocol addition the editors' "Add shadow layer" builds on: ``shadow`` in a segment
    request → a ``shadow`` result field and one more buffer (the shadow's alpha)."""
    img = np.full((H, W, 4), 255, np.uint8)
    img[..., :3] = 215
    yy, xx = np.mgrid[0:H, 0:W]
    inside = (yy - CY) ** 2 + (xx - CX) ** 2 < R**2
    img[inside, :3] = (30, 90, 200)
    with daemon.client() as client:
        hello = client.hello()
        assert "soft" in hello["capabilities"]["shadow"]
        fields = {
            "width": W,
            "height": H,
            "layout": "RGBA",
            "dtype": "u8",
            "transfer": "srgb",
            "options": {},
            "roi": None,
            "foreground": True,
            "shadow": "contact",
            "op": "segment",
            "alpha_dtype": "u8",
        }
        reply, out = client._call(fields, [img.tobytes()], None, 60, "shadow-job")
        assert reply["shadow"]["buffer"] == 2 and reply["shadow"]["color"] == "#000000"
        assert len(out) == 3 and len(reply["buffers"]) == 3
        shadow = np.frombuffer(bytes(out[2]), np.uint8).reshape(H, W)
        base = np.flatnonzero(inside[:, CX]).max()
        assert shadow[base + 1 : base + 3, CX].max() > 60  # under the disc's base
        assert shadow[:CY, :].max() == 0  # nothing above the subject's middle
        with pytest.raises(Exception, match="unknown style"):
            client._call(dict(fields, shadow="huge"), [img.tobytes()], None, 60, "bad-shadow")
        # the public client call: without colours the shadow is buffer 1, never taken for colours
        plain = client.segment(img.tobytes(), W, H, shadow="contact")
        assert plain.foreground is None and plain.shadow_info["buffer"] == 1
        assert np.array_equal(np.frombuffer(plain.shadow, np.uint8).reshape(H, W), shadow)
        both = client.segment(img.tobytes(), W, H, shadow="contact", foreground=True)
        assert len(both.foreground) == W * H * 3 and both.shadow == plain.shadow
        assert client.segment(img.tobytes(), W, H).shadow is None
