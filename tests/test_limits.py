"""Bounds on every numeric option: one table (core/limits.py), enforced by the core option classes,
by the command line's argument types and by the daemon before a job is queued."""

from __future__ import annotations

import math
import subprocess
import time

import numpy as np
import pytest
from maskd.core import limits
from maskd.core.canvas import CanvasSpec, Margin, parse_canvas, parse_margin
from maskd.core.compose import FinishOptions
from maskd.core.errors import InputError
from maskd.core.pipeline import CutoutOptions
from maskd.core.shadow import ShadowSpec, generate, parse_shadow

from tests.conftest import maskd_command, maskd_env
from tests.daemon_fixtures import assert_healthy, make_image, raw_socket, short_tmp, signed, start_daemon


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("grow", 3000, "grow 3000 is out of range: give -100 to 100 pixels"),
        ("grow", -3000, "grow -3000 is out of range"),
        ("grow", 2.5, "whole number"),
        ("grow", True, "not a number"),
        ("feather", 1e9, "feather 1000000000 is out of range"),
        ("feather", float("nan"), "not a finite number"),
        ("feather", "abc", "not a number"),
        ("band_radius", 1000, "band radius 1000 is out of range: give 0 to 32 model pixels"),
        ("roi_margin", 50.0, "roi margin 50 is out of range"),
        ("threshold", 1.0, "threshold 1 is out of range: give more than 0 to less than 1"),
        ("roi", (0, 0, 10**9, 5), "roi width 1000000000 is out of range"),
        ("roi", (float("inf"), 0, 5, 5), "roi x inf is not a finite number"),
    ],
)
def test_cutout_options_out_of_bounds_are_refused(field, value, words):
    with pytest.raises(InputError) as err:
        CutoutOptions(**{field: value}).validate()
    assert words in str(err.value)


def test_cutout_options_at_the_bounds_are_accepted():
    CutoutOptions(grow=-100, feather=100.0, band_radius=32, roi_margin=2.0, threshold=0.99).validate()
    CutoutOptions(grow=100, feather=0, band_radius=0, roi_margin=0, roi=(0, 0, 1, 1)).validate()


@pytest.mark.parametrize(
    "build,words",
    [
        (lambda: FinishOptions(margin=Margin(40000, 0, 0, 0)), "out of range: give 0 to 30000 pixels"),
        (lambda: FinishOptions(margin=Margin(60, 0, 0, 0, percent=True)), "under 50%"),
        (lambda: FinishOptions(canvas=CanvasSpec(size=(40000, 10))), "1..30000"),
        (lambda: FinishOptions(canvas=CanvasSpec(aspect=1e9)), "ratio"),
        (lambda: FinishOptions(scale=1e6), "scale"),
        (lambda: FinishOptions(align=(2.0, 0.5)), "align"),
        (
            lambda: FinishOptions(shadow=ShadowSpec(distance_px=1e9)),
            "shadow distance (px) 1000000000 is out of range",
        ),
        (lambda: FinishOptions(shadow=ShadowSpec(softness=50.0)), "between 0 and 10"),
    ],
)
def test_finishing_options_are_bounded_however_they_are_built(build, words):
    with pytest.raises(InputError, match=".") as err:
        build().validate()
    assert words in str(err.value)


def test_parsers_apply_the_same_bounds():
    with pytest.raises(InputError, match="30000 pixels"):
        parse_margin("40000px")
    with pytest.raises(InputError, match="ratio"):
        parse_canvas("100000:1")
    with pytest.raises(InputError, match="out of range"):
        parse_shadow("drop,distance=1000000px")
    assert parse_shadow("drop,distance=400px").distance_px == 400


def test_a_pixel_shadow_length_on_a_tiny_subject_stays_small():
    """distance=30000px under a 6-pixel subject would size the working grid by 30000 / 6 subject
    heights; it is honoured up to the relative bound (10 heights), so the field stays small."""
    alpha = np.zeros((40, 40), np.float32)
    alpha[30:36, 18:22] = 1.0
    t = time.perf_counter()
    field = generate(alpha, ShadowSpec(distance_px=30000.0, softness_px=30000.0))
    assert time.perf_counter() - t < 30  # a wall-clock bound far from normal (milliseconds)
    assert field is not None and field.alpha.size < 4000**2


def test_option_type_for_argparse():
    import argparse

    grow = limits.option_type("grow")
    assert grow("-12") == -12
    with pytest.raises(argparse.ArgumentTypeError, match="grow 3000 is out of range"):
        grow("3000")
    with pytest.raises(argparse.ArgumentTypeError, match="not a whole number"):
        grow("1.5")
    assert math.isclose(limits.option_type("feather")("2.5"), 2.5)


@pytest.mark.parametrize(
    "args,words",
    [
        (["remove", "x.png", "-o", "out", "--grow", "3000"], "grow 3000 is out of range: give -100 to 100"),
        (["remove", "x.png", "-o", "out", "--feather", "inf"], "feather inf is not a finite number"),
        (["refine", "x.png", "--mask", "m.png", "-o", "o.png", "--band", "99"], "--band 99 is out of range"),
        (["remove", "x.png", "-o", "out", "--margin", "99999px"], "0 to 30000 pixels"),
    ],
)
def test_command_line_refuses_out_of_bound_options_clearly(tmp_path, args, words):
    r = subprocess.run(
        maskd_command() + args, capture_output=True, text=True, env=maskd_env(), cwd=tmp_path, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---- a real daemon -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "lim"))
    yield d
    d.stop()


def _first_reply(sock, timeout=10.0):
    """The first message the daemon sends back (progress included: a queued job would send one)."""
    import json

    assert sock.poll(int(timeout * 1000)), "no reply"
    return json.loads(sock.recv_multipart()[2])


@pytest.mark.parametrize(
    "fields,words",
    [
        ({"options": {"grow": 3000}}, "grow 3000 is out of range"),
        ({"options": {"feather": 1e12}}, "feather 1e+12 is out of range"),
        ({"options": {"band_radius": 500}}, "band radius 500 is out of range"),
        ({"options": {"grow": "lots"}}, "not a number"),
        ({"shadow": "drop,distance=1000000px"}, "out of range"),
    ],
)
def test_daemon_refuses_out_of_bound_options_before_queueing(daemon, fields, words):
    """``{"grow": 3000}`` once held the only worker for 374 s; now the first and only answer is a
    bad_request, sent before the job is queued (no progress message comes first)."""
    pixels, _ = make_image(16, 16)
    sock = raw_socket(daemon)
    try:
        t = time.perf_counter()
        sock.send_multipart(
            signed(
                daemon,
                dict({"op": "segment", "width": 16, "height": 16, "layout": "RGBA", "dtype": "u8"}, **fields),
                [bytes(pixels)],
            )
        )
        reply = _first_reply(sock)
        elapsed = time.perf_counter() - t
    finally:
        sock.close(0)
    assert reply["kind"] == "error" and reply["code"] == "bad_request", reply
    assert words in reply["message"], reply["message"]
    assert elapsed < 5.0  # a bound far from normal: the refusal takes milliseconds
    assert_healthy(daemon)
