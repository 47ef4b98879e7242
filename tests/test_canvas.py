"""core.canvas: subject bounds, margins, canvas size/aspect, scale and alignment — to the pixel."""

from __future__ import annotations

import numpy as np
import pytest
from maskd.core import imageio
from maskd.core.canvas import (
    CanvasSpec,
    Margin,
    parse_align,
    parse_canvas,
    parse_margin,
    parse_scale,
    place,
    plan,
    subject_bounds,
)
from maskd.core.compose import FinishOptions, finish, parse_background
from maskd.core.errors import InputError

H, W = 300, 400
SUBJECT = (30, 40, 100, 50)  # x, y, w, h


def scene():
    """A photo with a 100×50 subject at (30, 40) whose pixels all differ (to check registration)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = np.zeros((H, W), np.float32)
    x, y, w, h = SUBJECT
    alpha[y : y + h, x : x + w] = 1.0
    return img, alpha


def test_subject_bounds_are_exact_and_ignore_faint_alpha():
    _, alpha = scene()
    alpha[0, 0] = 0.04  # below the bounds threshold
    assert subject_bounds(alpha) == SUBJECT
    assert subject_bounds(np.zeros((5, 5), np.float32)) is None


def test_crop_with_pixel_margin_is_a_pixel_exact_copy():
    img, alpha = scene()
    res = finish(img, alpha, None, FinishOptions(crop="subject", margin=parse_margin("10px")))
    out = res.image
    assert out.shape == (70, 120, 4)
    assert res.subject_box == (10, 10, 100, 50)
    x, y, w, h = SUBJECT
    assert np.array_equal(out[10:60, 10:110, :3], imageio.to_float(img[y : y + h, x : x + w]))
    assert np.all(out[10:60, 10:110, 3] == 1.0)
    assert out[:10, :, 3].max() == 0 and out[60:, :, 3].max() == 0
    assert out[:, :10, 3].max() == 0 and out[:, 110:, 3].max() == 0


def test_percent_margins_are_shares_of_the_output():
    img, alpha = scene()
    res = finish(img, alpha, None, FinishOptions(crop="subject", margin=parse_margin("10%")))
    hh, ww = res.image.shape[:2]
    assert (ww, hh) == (125, 63)  # 100 / 0.8, 50 / 0.8 rounded up
    x, y, w, h = res.subject_box
    assert (w, h) == (100, 50)
    assert abs(x - 0.1 * ww) <= 1.5 and abs((ww - x - w) - 0.1 * ww) <= 1.5
    assert abs(y - 0.1 * hh) <= 1.5


@pytest.mark.parametrize(
    "align, origin",
    [
        ("center", (20, 60)),
        ("top-left", (20, 20)),
        ("bottom", (20, 100)),
        ("top", (20, 20)),
        ("50%,100%", (20, 100)),
    ],
)
def test_fixed_canvas_fits_scales_and_aligns(align, origin):
    img, alpha = scene()
    opts = FinishOptions(
        crop="subject",
        margin=parse_margin("10%"),
        canvas=parse_canvas("200x200"),
        align=parse_align(align),
        background=parse_background("white"),
    )
    res = finish(img, alpha, None, opts)
    assert res.image.shape == (200, 200, 3)
    # content box 160×160; the 100×50 subject fits at ×1.6 → 160×80
    assert res.subject_box == (origin[0], origin[1], 160, 80)
    assert res.placement.fx == pytest.approx(1.6)
    ox, oy = origin
    inside = res.image[oy + 1 : oy + 79, ox + 1 : ox + 159]
    assert not np.allclose(inside, 1.0)  # subject pixels, not background
    assert np.allclose(res.image[: oy - 1], 1.0) if oy > 1 else True
    assert np.allclose(res.image[oy + 81 :], 1.0)


def test_scale_and_a_single_pixel_lands_where_expected():
    img = np.zeros((H, W, 3), np.uint8)
    alpha = np.zeros((H, W), np.float32)
    alpha[40:90, 30:130] = 0.5  # the frame of the subject
    alpha[60, 70] = 1.0  # a marker 40 px right, 20 px down of the subject's corner
    opts = FinishOptions(crop="subject", canvas=parse_canvas("400x300"), scale=parse_scale("50%"))
    res = finish(img, alpha, None, opts)
    p = res.placement
    # fit ×4 (400/100 vs 300/50 → 4), then 50% → ×2: the subject is 200×100, centred
    assert p.fx == 2.0 and p.box == (100, 100, 200, 100)
    a = res.image[..., 3]
    ys, xs = np.nonzero(a > 0.75)
    assert ys.min() >= 100 + 2 * 20 - 1 and ys.max() <= 100 + 2 * 21
    assert xs.min() >= 100 + 2 * 40 - 1 and xs.max() <= 100 + 2 * 41


def test_aspect_canvas_keeps_native_resolution():
    img, alpha = scene()
    res = finish(img, alpha, None, FinishOptions(crop="subject", canvas=parse_canvas("1:1")))
    assert res.image.shape[:2] == (100, 100)
    assert res.subject_box == (0, 25, 100, 50) and res.placement.fx == 1.0
    tall = finish(
        img,
        alpha,
        None,
        FinishOptions(crop="subject", canvas=parse_canvas("4:5"), align=parse_align("bottom")),
    )
    assert tall.image.shape[:2] == (125, 100) and tall.subject_box == (0, 75, 100, 50)


def test_no_crop_keeps_the_frame_and_a_canvas_fits_the_whole_photo():
    img, alpha = scene()
    same = finish(img, alpha, None, FinishOptions(background=parse_background("white")))
    assert same.image.shape == (H, W, 3) and same.subject_box == SUBJECT
    fitted = finish(img, alpha, None, FinishOptions(canvas=parse_canvas("200x200")))
    assert fitted.image.shape == (200, 200, 4)
    assert fitted.placement.box == (0, 25, 200, 150)  # the 400×300 photo at ×0.5, centred
    assert fitted.subject_box == (15, 45, 50, 25)


def test_crop_can_include_the_shadow():
    from maskd.core.shadow import parse_shadow

    img, alpha = scene()
    alpha[:] = 0
    alpha[50:150, 150:200] = 1.0
    subject_only = finish(img, alpha, None, FinishOptions(crop="subject", shadow=parse_shadow("drop")))
    both = finish(img, alpha, None, FinishOptions(crop="subject+shadow", shadow=parse_shadow("drop")))
    assert subject_only.image.shape[:2] == (100, 50)
    assert both.image.shape[1] > 50 + 20  # the drop shadow falls to the right: wider frame
    assert both.shadow_box is not None


def test_place_is_exact_at_unit_scale_and_clips_outside():
    src = np.arange(20, dtype=np.float32).reshape(4, 5)
    p = plan((4, 5), (1, 1, 2, 2), margin=Margin(1, 1, 1, 1))
    out = place(src, p, fill=-1)
    assert out.shape == (4, 4)
    assert np.array_equal(out[1:3, 1:3], src[1:3, 1:3])
    assert np.array_equal(out[0, :], src[0, 0:4])  # the neighbourhood comes along (margin)


@pytest.mark.parametrize(
    "text, margin",
    [
        ("5%", Margin(5, 5, 5, 5, True)),
        ("40", Margin(40, 40, 40, 40)),
        ("40px", Margin(40, 40, 40, 40)),
        ("5%,10%", Margin(5, 10, 5, 10, True)),
        ("1,2,3,4", Margin(1, 2, 3, 4)),
    ],
)
def test_parse_margin(text, margin):
    assert parse_margin(text) == margin


@pytest.mark.parametrize(
    "parse, text",
    [
        (parse_margin, "5%,10px"),
        (parse_margin, "60%"),
        (parse_margin, "1,2,3"),
        (parse_margin, "-3"),
        (parse_canvas, "big"),
        (parse_canvas, "0x100"),
        (parse_scale, "0"),
        (parse_scale, "lots"),
        (parse_align, "middle-ish"),
        (parse_align, "150%,0%"),
    ],
)
def test_bad_values_are_rejected_with_a_hint(parse, text):
    with pytest.raises(InputError) as exc:
        parse(text)
    assert text in str(exc.value)


def test_parse_canvas_and_align():
    assert parse_canvas("2000x2000") == CanvasSpec(size=(2000, 2000))
    assert parse_canvas("4:5").aspect == pytest.approx(0.8)
    assert parse_canvas("square").aspect == 1.0
    assert parse_align("bottom-right") == (1.0, 1.0)
    assert parse_align("25%,75%") == (0.25, 0.75)
    assert parse_scale("80%") == pytest.approx(0.8) and parse_scale("1.5") == 1.5


def test_margins_that_leave_no_room_are_refused():
    with pytest.raises(InputError, match="no room"):
        plan((100, 100), (0, 0, 10, 10), margin=Margin(60, 60, 60, 60), canvas=CanvasSpec(size=(100, 100)))


def test_tight_crop_over_a_colour_copies_the_subject_exactly():
    img, alpha = scene()
    alpha[40, 30] = 0.5  # one soft pixel at the corner
    res = finish(img, alpha, None, FinishOptions(crop="subject", background=parse_background("#102030")))
    x, y, w, h = SUBJECT
    out = res.image
    assert out.shape == (h, w, 3)
    want = imageio.to_float(img[y : y + h, x : x + w])
    assert np.array_equal(out[1:, 1:], want[1:, 1:])
    assert not np.allclose(out[0, 0], want[0, 0])  # the soft pixel is blended with the colour
