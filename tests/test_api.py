"""``maskd.new_session`` / ``maskd.remove`` / ``maskd.refine``: in-process (the weight-free stand-in,
generated BiRefNet weights) and against a real daemon subprocess, checked against the CLI."""

from __future__ import annotations

import subprocess
import sys

import cv2
import maskd
import numpy as np
import pytest

from tests.conftest import REPO, maskd_command
from tests.daemon_fixtures import short_tmp, start_daemon
from tests.standins import StandInSession  # also: `new_session("stand-in")` here
from tests.test_remove import disc


def photo(h=90, w=120) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8: a blue disc on light grey; and where the disc is."""
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 < (h // 3) ** 2
    img = np.full((h, w, 3), 200, np.uint8)
    img[inside] = (200, 60, 30)
    return img, inside


@pytest.fixture(scope="module")
def stand_in():
    return maskd.Session(matte=StandInSession(resolution=128))


def test_import_maskd_is_cheap():
    code = "import sys, maskd; print(sorted(m for m in ('numpy', 'torch', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"
    assert {"new_session", "remove", "refine", "Session"} <= set(dir(maskd))
    with pytest.raises(AttributeError):
        maskd.no_such_thing  # noqa: B018


def test_remove_returns_the_kind_and_depth_it_was_given(stand_in, tmp_path):
    from PIL import Image

    img, inside = photo()
    cut = maskd.remove(img, session=stand_in)
    assert cut.shape == (90, 120, 4) and cut.dtype == np.uint8
    assert cut[..., 3][inside].mean() > 240 and cut[..., 3][~inside].mean() < 15
    assert abs(int(cut[45, 60, 0]) - 200) < 10  # the subject's colour

    deep = maskd.remove(img.astype(np.uint16) * 257, session=stand_in)
    assert deep.dtype == np.uint16 and np.abs(deep.astype(np.int64) // 257 - cut).max() <= 1
    flt = maskd.remove(img.astype(np.float32) / 255, session=stand_in, output="alpha")
    assert flt.dtype == np.float32 and flt.shape == (90, 120)

    pil = maskd.remove(Image.fromarray(img), session=stand_in)
    assert isinstance(pil, Image.Image) and pil.mode == "RGBA" and pil.size == (120, 90)
    assert np.array_equal(np.asarray(pil), cut)
    mask = maskd.remove(Image.fromarray(img), session=stand_in, output="alpha")
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), cut[..., 3])

    cv2.imwrite(str(tmp_path / "p.png"), img[..., ::-1])
    assert np.array_equal(maskd.remove(tmp_path / "p.png", session=stand_in), cut)


def test_remove_options_match_the_cli_names(stand_in):
    img, inside = photo()
    same = maskd.remove(img, session=stand_in, decontaminate=False)
    assert np.array_equal(same[..., :3], img)  # --mode rgba: the photo's own colours
    hard = maskd.remove(img, session=stand_in, output="alpha", threshold=0.5, invert=True)
    assert hard[inside].mean() < 10 and hard[~inside].mean() > 245
    assert ((hard > 5) & (hard < 250)).mean() < 0.05  # hard: only an anti-aliased edge in between
    card = maskd.remove(img, session=stand_in, background="white", canvas="100x100", margin="10%")
    assert card.shape == (100, 100, 3) and (card[0, 0] == 255).all()  # finished: opaque white square
    with pytest.raises(maskd_error()):
        maskd.remove(img, session=stand_in, output="alpha", background="white")
    with pytest.raises(maskd_error()):
        maskd.remove(img, session=stand_in, quality="best")
    with pytest.raises(maskd_error()):
        maskd.remove(img, session=stand_in, shadow="sideways")
    with pytest.raises(TypeError):
        maskd.remove(img, session=stand_in, colour="white")


def maskd_error():
    from maskd.core.errors import MaskdError

    return MaskdError


def test_refine_needs_no_model():
    img, inside = photo()
    rough = cv2.resize(inside.astype(np.uint8) * 255, (30, 22), interpolation=cv2.INTER_AREA)
    alpha = maskd.refine(img, rough)
    assert alpha.shape == (90, 120) and alpha.dtype == np.uint8
    assert alpha[inside].mean() > 240 and alpha[~inside].mean() < 15
    rgba = maskd.refine(img, rough, output="rgba")
    assert rgba.shape == (90, 120, 4) and np.array_equal(rgba[..., 3], alpha)


def test_in_process_with_generated_weights(lite_weights):
    img, _ = photo(64, 64)
    with maskd.new_session(
        weights=lite_weights, variant="lite", daemon=False, device="cpu", resolution=64
    ) as s:
        assert not s.uses_daemon and s.describe()["name"] == "lite"
        cut = maskd.remove(img, session=s)
    assert cut.shape == (64, 64, 4) and cut.dtype == np.uint8


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "api"), "--resolution", "128", worker="pipeline")
    yield d
    d.stop()


def test_daemon_session_gives_what_the_cli_writes(daemon, tmp_path):
    disc(tmp_path / "p.png")
    r = subprocess.run(
        maskd_command() + ["remove", str(tmp_path / "p.png"), "-o", str(tmp_path / "o"), "-q"],
        capture_output=True,
        text=True,
        env=daemon.env(),
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    written = cv2.cvtColor(
        cv2.imread(str(tmp_path / "o" / "p.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA
    )
    with maskd.new_session(daemon=True, connection_file=daemon.connection_file) as s:
        assert s.uses_daemon
        cut = maskd.remove(tmp_path / "p.png", session=s)
        mask = maskd.remove(tmp_path / "p.png", session=s, output="alpha")
        refined = maskd.refine(tmp_path / "p.png", mask, session=s)
    assert np.array_equal(cut, written)
    assert np.array_equal(mask, written[..., 3])
    assert np.abs(refined.astype(int) - mask).mean() < 3


def test_auto_uses_the_daemon_when_one_runs_else_this_process(daemon, tmp_path):
    with maskd.new_session(connection_file=daemon.connection_file) as s:
        assert s.uses_daemon
    nowhere = tmp_path / "none.json"  # no daemon behind it
    with maskd.new_session("stand-in", connection_file=nowhere, resolution=128) as s:
        assert not s.uses_daemon
        assert maskd.remove(photo()[0], session=s).shape == (90, 120, 4)
    with pytest.raises(maskd_error(), match="daemon"):
        maskd.new_session(daemon=True, connection_file=nowhere)


def test_maskd_env_is_used_by_default(daemon):
    """Without arguments the session follows ``MASKD_CONNECTION_FILE``, as the CLI does."""
    code = (
        "import maskd, numpy as np; s = maskd.new_session(); print(s.uses_daemon); "
        "print(maskd.remove(np.zeros((8, 8, 3), np.uint8), session=s).shape)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=daemon.env(), cwd="/", timeout=120
    )
    assert r.stdout.split("\n")[:2] == ["True", "(8, 8, 4)"], r.stdout + r.stderr
