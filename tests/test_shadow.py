"""core.shadow: geometry of the generated shadow (grounded, directed, fading) and its parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from maskd.core import compose
from maskd.core.errors import InputError
from maskd.core.shadow import SHADOW_PRESETS, ShadowSpec, generate, parse_shadow

H, W = 480, 600
TOP, BOTTOM, LEFT, RIGHT = 100, 300, 260, 340  # a standing box, 200 px tall, 80 px wide


def box_alpha():
    alpha = np.zeros((H, W), np.float32)
    alpha[TOP:BOTTOM, LEFT:RIGHT] = 1.0
    return alpha


def layer(spec: ShadowSpec, alpha=None):
    alpha = box_alpha() if alpha is None else alpha
    field = generate(alpha, spec)
    return field.full(*alpha.shape)


def cast_only(**kw) -> ShadowSpec:
    return ShadowSpec(contact=0.0, opacity=0.8, softness=0.02, fade=0.8, **kw)


def test_contact_shadow_touches_the_base_and_stays_under_it():
    s = layer(ShadowSpec(opacity=0.0, contact=0.8, contact_softness=0.01))
    below = s[BOTTOM : BOTTOM + 2, LEFT + 10 : RIGHT - 10]
    assert below.min() > 0.4  # right under the bottom edge: dark
    assert s[BOTTOM + 20 :, :].max() < 0.05  # a contact shadow is tight
    assert s[: BOTTOM - 20].max() < 0.01  # nothing up the sides
    assert s[BOTTOM + 1, : LEFT - 15].max() < 0.05 and s[BOTTOM + 1, RIGHT + 15 :].max() < 0.05


@pytest.mark.parametrize("direction", [0, 45, 90, 135, 180, 225, 270, 315])
def test_cast_shadow_points_in_the_asked_direction(direction):
    s = layer(cast_only(direction=direction, distance=0.5))
    ys, xs = np.mgrid[0:H, 0:W]
    weight = s.sum()
    cx, cy = (s * xs).sum() / weight, (s * ys).sum() / weight
    base_x, base_y = (LEFT + RIGHT) / 2, BOTTOM
    ux, uy = math.cos(math.radians(direction)), -math.sin(math.radians(direction))
    along = (cx - base_x) * ux + (cy - base_y) * uy
    across = -(cx - base_x) * uy + (cy - base_y) * ux
    length = 0.5 * (BOTTOM - TOP)
    assert along > 0.2 * length, (direction, cx, cy)
    assert abs(across) < 0.15 * length + 0.5 * (RIGHT - LEFT) * abs(uy) + 1


@pytest.mark.parametrize("direction", [0, 60, 120, 180, 270])
def test_cast_shadow_starts_at_the_base_and_fades_with_distance(direction):
    s = layer(cast_only(direction=direction, distance=0.6))
    ux, uy = math.cos(math.radians(direction)), -math.sin(math.radians(direction))
    # walk from the base point of the side the shadow leaves from, along the direction
    x0 = RIGHT - 1 if ux > 0.3 else LEFT if ux < -0.3 else (LEFT + RIGHT) / 2
    start = (x0, BOTTOM - 0.5)
    length = 0.6 * (BOTTOM - TOP)
    samples = []
    for t in np.linspace(0.1, 0.9, 9):
        x = start[0] + ux * t * length
        y = start[1] + uy * t * length
        if 0 <= round(y) < H and 0 <= round(x) < W:
            samples.append(float(s[int(round(y)), int(round(x))]))
    near = layer(cast_only(direction=direction, distance=0.6))[BOTTOM - 1 : BOTTOM + 2, int(x0)].max()
    assert near > 0.3, samples  # grounded: dark at the base
    assert samples[-1] < 0.5 * max(samples[:3]), samples  # and fading with the distance
    assert all(b <= a + 0.03 for a, b in zip(samples[1:], samples[2:])), samples


def test_shadow_length_follows_distance_not_the_subject_height():
    """Not a blurred copy: a short 'behind' shadow reaches only distance × height above the base."""
    for distance in (0.25, 0.5):
        s = layer(cast_only(direction=90, distance=distance))
        column = s[:, (LEFT + RIGHT) // 2]
        rows = np.flatnonzero(column > 0.05)
        reach = BOTTOM - rows.min()
        assert reach == pytest.approx(distance * (BOTTOM - TOP), abs=0.1 * (BOTTOM - TOP))


def test_softness_grows_away_from_the_contact():
    s = layer(ShadowSpec(direction=0, distance=1.0, softness=0.08, opacity=0.8, contact=0.0, fade=0.0))

    def edge_width(profile):
        lo, hi = profile.max() * 0.2, profile.max() * 0.8
        return int(((profile > lo) & (profile < hi)).sum())

    near = s[:, RIGHT + 10]
    far = s[:, RIGHT + 150]
    assert edge_width(far) > edge_width(near)


def test_each_object_is_grounded_at_its_own_base():
    alpha = np.zeros((H, W), np.float32)
    alpha[50:150, 100:160] = 1.0  # farther back: its base is at row 150
    alpha[200:350, 350:450] = 1.0  # in front: base at row 350
    s = layer(ShadowSpec(opacity=0.0, contact=0.8), alpha)
    assert s[150:152, 110:150].min() > 0.4
    assert s[350:352, 360:440].min() > 0.4


def test_a_lying_object_gets_contact_where_it_touches_the_floor_only():
    alpha = np.zeros((H, W), np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    # a bar tilted up to the right: touches the floor at its left end only
    inside = (np.abs((yy - 250) + 0.4 * (xx - 300)) < 20) & (xx > 150) & (xx < 450)
    alpha[inside] = 1.0
    s = layer(ShadowSpec(opacity=0.0, contact=0.8), alpha)
    lowest = np.flatnonzero(alpha[:, 160])[-1]
    lifted = np.flatnonzero(alpha[:, 440])[-1]
    assert s[lowest + 1, 160] > 0.3
    assert s[lifted + 1, 440] < 0.05


def test_opacity_and_colour():
    s = layer(ShadowSpec(direction=90, distance=0.3, opacity=0.2, contact=0.0, fade=0.0))
    assert 0.1 < s.max() <= 0.2 + 1e-6
    assert generate(box_alpha(), ShadowSpec(opacity=0.0, contact=0.0)) is None
    spec = parse_shadow("soft,color=#102030")
    assert spec.color == pytest.approx((0x10 / 255, 0x20 / 255, 0x30 / 255))


def test_shadow_under_the_subject_in_the_composite():
    img = np.full((H, W, 3), 200, np.uint8)
    opts = compose.FinishOptions(background=compose.parse_background("white"), shadow=parse_shadow("soft"))
    res = compose.finish(img, box_alpha(), None, opts)
    out = res.image
    assert np.allclose(out[TOP + 5 : BOTTOM - 5, LEFT + 5 : RIGHT - 5], 200 / 255)  # subject on top
    assert out[BOTTOM + 1, (LEFT + RIGHT) // 2, 0] < 0.85  # darkened under the base
    assert np.allclose(out[5, 5], 1.0)  # white far away


def test_pixel_sizes_override_relative_ones():
    spec = parse_shadow("drop,distance=50px,softness=4px")
    assert spec.distance_px == 50 and spec.softness_px == 4
    s = layer(ShadowSpec(direction=90, distance_px=50.0, softness_px=2.0, opacity=0.8, contact=0.0, fade=0.5))
    rows = np.flatnonzero(s[:, (LEFT + RIGHT) // 2] > 0.05)
    assert BOTTOM - rows.min() == pytest.approx(50, abs=10)


@pytest.mark.parametrize(
    "text, field, value",
    [
        ("drop", "distance", SHADOW_PRESETS["drop"].distance),
        ("soft,direction=back-left", "direction", 135.0),
        ("contact,opacity=40%", "opacity", 0.4),
        ("drop;distance=30%;fade=0.5", "distance", 0.3),
        ("opacity=0.2", "opacity", 0.2),  # overrides on the default (soft)
        ("front,angle=250", "direction", 250.0),
    ],
)
def test_parse_shadow(text, field, value):
    assert getattr(parse_shadow(text), field) == pytest.approx(value)


@pytest.mark.parametrize(
    "text, words",
    [
        ("blurry", "unknown style"),
        ("soft,opacity=2", "between 0 and 1"),
        ("soft,size=3", "unknown parameter"),
        ("soft,direction=up-ish", "degrees"),
        ("soft,opacity", "key=value"),
        ("none,opacity=1", "no parameters"),
    ],
)
def test_bad_shadow_values_say_what_is_wrong(text, words):
    with pytest.raises(InputError, match=words):
        parse_shadow(text)


def test_none_means_no_shadow():
    assert parse_shadow("none") is None
