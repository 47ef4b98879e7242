"""core.compose: compositing maths on synthetic inputs (linear light, straight alpha, 16-bit)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from maskd.core import compose, imageio
from maskd.core.canvas import CanvasSpec, Margin
from maskd.core.compose import BackgroundSpec, FinishOptions, finish, parse_background, parse_colour
from maskd.core.errors import InputError
from maskd.core.shadow import parse_shadow


def srgb(v):
    return float(imageio.linear_to_srgb(np.float32(v)))


def lin(v):
    return float(imageio.srgb_to_linear(np.float32(v)))


def flat(h, w, rgb, dtype=np.float32):
    img = np.empty((h, w, 3), np.float32)
    img[...] = rgb
    if dtype == np.uint8:
        return (img * 255 + 0.5).astype(np.uint8)
    if dtype == np.uint16:
        return (img * 65535 + 0.5).astype(np.uint16)
    return img


def test_half_white_over_black_blends_in_linear_light():
    img = flat(4, 4, (1.0, 1.0, 1.0))
    alpha = np.full((4, 4), 0.5, np.float32)
    res = finish(img, alpha, None, FinishOptions(background=parse_background("black")))
    assert res.image.shape == (4, 4, 3)
    # linear 0.5 is sRGB 0.7354, not the 0.5 of a naive sRGB blend
    assert res.image[0, 0, 0] == pytest.approx(srgb(0.5), abs=1e-5)
    assert res.image[0, 0, 0] == pytest.approx(0.7353569, abs=1e-4)


def test_straight_colours_are_not_darkened_by_alpha():
    # a straight (un-premultiplied) red at alpha 0.25: on transparency the colour stays red and
    # alpha carries the coverage; over white the linear mix is 0.25·red + 0.75·white
    img = flat(3, 3, (1.0, 0.0, 0.0))
    alpha = np.full((3, 3), 0.25, np.float32)
    cut = finish(img, alpha, None, FinishOptions())
    assert cut.image.shape == (3, 3, 4)
    assert np.allclose(cut.image[1, 1], [1.0, 0.0, 0.0, 0.25], atol=1e-6)
    white = finish(img, alpha, None, FinishOptions(background=parse_background("white")))
    assert white.image[1, 1, 0] == pytest.approx(1.0, abs=1e-6)
    assert white.image[1, 1, 1] == pytest.approx(srgb(0.75), abs=1e-5)


def test_foreground_colours_are_used_instead_of_the_photo():
    img = flat(3, 3, (0.0, 0.0, 1.0))  # blue fringe in the photo
    fg = flat(3, 3, (0.0, 1.0, 0.0))  # decontaminated: green
    alpha = np.full((3, 3), 1.0, np.float32)
    res = finish(img, alpha, fg, FinishOptions(background=parse_background("white")))
    assert np.allclose(res.image[1, 1], [0.0, 1.0, 0.0])


def test_semi_transparent_background_colour_gives_porter_duff_alpha():
    img = flat(2, 2, (0.0, 0.0, 0.0))
    alpha = np.full((2, 2), 0.5, np.float32)
    res = finish(img, alpha, None, FinishOptions(background=parse_background("#ffffff80")))
    bg_a = 0x80 / 255
    out_a = 0.5 + bg_a * 0.5
    assert res.image.shape[2] == 4
    assert res.image[0, 0, 3] == pytest.approx(out_a, abs=1e-6)
    # premultiplied linear: black·0.5 + white·bg_a·0.5, straightened by out_a
    assert res.image[0, 0, 0] == pytest.approx(srgb(bg_a * 0.5 / out_a), abs=1e-5)


def test_linear_input_stays_linear_and_user_colours_are_srgb():
    img = flat(2, 2, (1.0, 1.0, 1.0))
    alpha = np.full((2, 2), 0.5, np.float32)
    res = finish(img, alpha, None, FinishOptions(background=parse_background("#808080"), linear=True))
    grey_lin = lin(0x80 / 255)
    assert res.image[0, 0, 0] == pytest.approx(0.5 + 0.5 * grey_lin, abs=1e-6)
    bare = finish(
        img,
        np.zeros((2, 2), np.float32),
        None,
        FinishOptions(background=parse_background("#808080"), linear=True),
    )
    assert bare.image[0, 0, 0] == pytest.approx(grey_lin, abs=1e-6)


def test_sixteen_bit_input_keeps_sixteen_bit_precision():
    # values 1 apart on the 16-bit scale must stay apart (no 8-bit round trip anywhere)
    img = np.zeros((1, 4, 3), np.uint16)
    img[0, :, :] = np.array([30000, 30001, 30002, 30003], np.uint16)[:, None]
    alpha = np.array([[1.0, 1.0, 0.6, 0.6]], np.float32)
    res = finish(img, alpha, None, FinishOptions(background=parse_background("#204060")))
    out = res.image
    assert out.dtype == np.float32
    assert np.allclose(out[0, :2, 0], np.array([30000, 30001]) / 65535, atol=1e-7)
    bg = np.array([0x20, 0x40, 0x60]) / 255
    for x in (2, 3):
        f = img[0, x, 0] / 65535
        want = srgb(lin(f) * 0.6 + lin(bg[0]) * 0.4)
        assert out[0, x, 0] == pytest.approx(want, abs=2e-6)
    assert imageio.to_uint16(out)[0, 3, 0] - imageio.to_uint16(out)[0, 2, 0] in (0, 1)


def test_uint8_input_edge_pixels_match_float64_reference():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    alpha = rng.random((20, 30)).astype(np.float32)
    alpha[:5] = 0.0
    alpha[-5:] = 1.0
    res = finish(img, alpha, None, FinishOptions(background=parse_background("#3366cc")))
    f = img.astype(np.float64) / 255
    lf = np.where(f <= 0.04045, f / 12.92, ((f + 0.055) / 1.055) ** 2.4)
    bg = np.array([0x33, 0x66, 0xCC]) / 255
    lb = np.where(bg <= 0.04045, bg / 12.92, ((bg + 0.055) / 1.055) ** 2.4)
    a = alpha[..., None].astype(np.float64)
    mix = lf * a + lb * (1 - a)
    want = np.where(mix <= 0.0031308, mix * 12.92, 1.055 * mix ** (1 / 2.4) - 0.055)
    assert np.abs(res.image - want).max() < 2e-5


@pytest.mark.parametrize("background", ["white", "#ffffff80", None, "image", "image-contain", "blur"])
def test_fast_paths_equal_the_reference_composite(background, tmp_path):
    """Opaque copies, the flat-colour shadow path and the edge gathers give what the plain
    whole-image Porter–Duff formula gives."""
    rng = np.random.default_rng(7)
    h, w = 120, 160
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(1.2 - np.hypot((yy - 55) / 35, (xx - 80) / 45), 0, 1).astype(np.float32)
    fg = rng.random((h, w, 3)).astype(np.float32)
    if background in ("image", "image-contain"):
        pic = rng.integers(0, 65536, (50, 90, 4), dtype=np.uint16)
        path = tmp_path / "bg.png"
        imageio.write_image(path, pic)
        spec = parse_background(str(path) + (":contain" if background == "image-contain" else ""))
    else:
        spec = parse_background(background) if background else None
    opts = FinishOptions(background=spec, shadow=parse_shadow("drop,color=#402010"))
    res = finish(img, alpha, fg, opts, layers=True)
    bgl = res.background
    s = res.shadow
    assert s is not None and s.max() > 0.1
    col, out_a = compose.composite_reference(
        res.subject[..., :3], res.subject[..., 3], bgl[..., :3], bgl[..., 3], parse_colour("#402010")[:3], s
    )
    if res.image.shape[2] == 4:
        assert np.abs(res.image[..., 3] - out_a).max() < 1e-4
        visible = out_a > 1e-3
        assert np.abs(res.image[..., :3] - col)[visible].max() < 2e-3
    else:
        assert np.allclose(out_a, 1.0, atol=1e-6)
        assert np.abs(res.image - col).max() < 2e-3


def test_flatten_without_alpha_uses_the_matte_colour():
    img = flat(2, 2, (0.0, 0.0, 0.0))
    alpha = np.array([[0.0, 1.0], [0.5, 0.0]], np.float32)
    res = finish(img, alpha, None, FinishOptions(alpha=False))
    assert res.image.shape == (2, 2, 3)
    assert np.allclose(res.image[0, 0], 1.0) and np.allclose(res.image[0, 1], 0.0)
    assert res.image[1, 0, 0] == pytest.approx(srgb(0.5), abs=1e-5)
    kept = finish(img, alpha, None, FinishOptions(background=parse_background("white"), alpha=True))
    assert kept.image.shape == (2, 2, 4) and np.allclose(kept.image[..., 3], 1.0)


def test_blurred_original_background_keeps_the_subject_out():
    h, w = 80, 80
    img = flat(h, w, (0.1, 0.6, 0.2), np.uint8)
    img[20:60, 20:60] = (255, 0, 255)  # the subject: magenta
    alpha = np.zeros((h, w), np.float32)
    alpha[20:60, 20:60] = 1.0
    res = finish(img, alpha, None, FinishOptions(background=BackgroundSpec(kind="blur", blur=0.05)))
    ring = res.image[15, 15:65]  # just outside the subject: background colour, no magenta bleed
    assert np.abs(ring - imageio.to_float(img[0, 0])).max() < 0.06
    assert np.allclose(res.image[40, 40], [1.0, 0.0, 1.0])


def test_background_image_fits():
    pic = np.zeros((10, 40, 3), np.float32)
    pic[:, :20] = (1.0, 0.0, 0.0)
    pic[:, 20:] = (0.0, 0.0, 1.0)
    img = flat(20, 20, (0.0, 1.0, 0.0))
    alpha = np.zeros((20, 20), np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "wide.png"
        imageio.write_image(path, pic)
        cover, contain, stretch = (
            finish(img, alpha, None, FinishOptions(background=parse_background(f"{path}:{fit}"))).image
            for fit in ("cover", "contain", "stretch")
        )
    assert cover.shape == (20, 20, 3)  # cover fills: the middle 20 of 80 columns, half red half blue
    assert cover[10, 2, 0] > 0.9 and cover[10, 17, 2] > 0.9
    assert contain.shape == (20, 20, 4)  # contain letterboxes: transparent bars above and below
    assert contain[0, 10, 3] == 0.0 and contain[10, 10, 3] == pytest.approx(1.0)
    assert stretch.shape == (20, 20, 3) and stretch[10, 3, 0] > 0.9 and stretch[10, 16, 2] > 0.9


@pytest.mark.parametrize(
    "text, want",
    [
        ("white", (1, 1, 1, 1)),
        ("#000", (0, 0, 0, 1)),
        ("#ff000080", (1, 0, 0, 128 / 255)),
        ("0,128,255", (0, 128 / 255, 1, 1)),
        ("10,20,30,0.5", (10 / 255, 20 / 255, 30 / 255, 0.5)),
        ("transparent", (0, 0, 0, 0)),
    ],
)
def test_parse_colour(text, want):
    assert np.allclose(parse_colour(text), want)


@pytest.mark.parametrize("text", ["#12", "nocolour", "1,2", "300,0,0", "missing.jpg", "blur:90%"])
def test_bad_backgrounds_say_what_to_give(text):
    with pytest.raises(InputError) as exc:
        parse_background(text)
    assert text.split(":")[0] in str(exc.value) or "blur" in str(exc.value)


def test_background_kinds(tmp_path):
    assert parse_background("none") is None
    assert parse_background("blur").kind == "blur"
    assert parse_background("blur:4%").blur == pytest.approx(0.04)
    p = tmp_path / "bg.png"
    imageio.write_image(p, np.zeros((4, 4, 3), np.uint8))
    spec = parse_background(f"{p}:contain")
    assert spec.kind == "image" and spec.fit == "contain" and spec.image == str(p.resolve())


def test_empty_matte_frames_the_whole_photo():
    img = flat(10, 20, (0.2, 0.3, 0.4))
    res = finish(
        img,
        np.zeros((10, 20), np.float32),
        None,
        FinishOptions(
            background=parse_background("white"),
            shadow=parse_shadow("soft"),
            crop="subject",
            margin=Margin(5, 5, 5, 5),
            canvas=CanvasSpec(size=(30, 30)),
        ),
    )
    assert res.subject_box is None and res.image.shape == (30, 30, 3)


def test_shadow_layer_helper_matches_the_composite():
    h, w = 100, 100
    alpha = np.zeros((h, w), np.float32)
    alpha[30:70, 40:60] = 1.0
    layer = compose.shadow_layer(alpha, "contact")
    assert layer.shape == (h, w) and layer[71, 50] > 0.3 and layer[20, 50] == 0.0
    assert compose.shadow_layer(alpha, "none").max() == 0.0
