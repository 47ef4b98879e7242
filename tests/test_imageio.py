"""core.imageio: layouts, dtypes, transfer curves, and files (8/16-bit, gray, RGBA, masks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from maskd.core import imageio
from maskd.core.errors import InputError, MaskdError


@pytest.mark.parametrize(
    "shape, colour_channels, has_alpha",
    [
        ((5, 7), 1, False),
        ((5, 7, 1), 1, False),
        ((5, 7, 2), 1, True),
        ((5, 7, 3), 3, False),
        ((5, 7, 4), 3, True),
    ],
)
def test_split_channels_layouts(shape, colour_channels, has_alpha):
    colour, alpha = imageio.split_channels(np.zeros(shape, np.uint8))
    assert colour.shape == (5, 7, colour_channels)
    assert (alpha is not None) == has_alpha
    assert imageio.colour_float(np.zeros(shape, np.uint8)).shape == (5, 7, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((4,), np.uint8),
        np.zeros((4, 4, 3), np.int32),
    ],
)
def test_bad_images_are_input_errors(bad):
    with pytest.raises(InputError):
        imageio.split_channels(bad)


def test_to_float_scales_each_dtype_and_cleans_floats():
    assert imageio.to_float(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
    assert imageio.to_float(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]
    f = imageio.to_float(np.array([np.nan, -1.0, 0.25, 3.0], np.float64))
    assert f.dtype == np.float32 and f.tolist() == [0.0, 0.0, 0.25, 1.0]


def test_integer_conversions_round():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.abs(imageio.to_uint8(x) / 255.0 - x).max() <= 0.5 / 255 + 1e-6
    assert np.abs(imageio.to_uint16(x) / 65535.0 - x).max() <= 0.5 / 65535 + 1e-6
    assert imageio.to_uint16(np.array([255], np.uint8))[0] == 65535
    assert imageio.to_uint8(np.array([65535, 32896], np.uint16)).tolist() == [255, 128]


def test_srgb_curves():
    assert imageio.srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-4)
    x = np.linspace(0, 1, 257, dtype=np.float32)
    assert np.abs(imageio.linear_to_srgb(imageio.srgb_to_linear(x)) - x).max() < 1e-5
    # linear segment near black
    assert imageio.srgb_to_linear(np.float32(0.02)) == pytest.approx(0.02 / 12.92)


def test_linear_colour_float_encodes_to_srgb():
    lin = np.full((2, 2, 3), 0.21404, np.float32)
    assert np.allclose(imageio.colour_float(lin, linear=True), 0.5, atol=1e-4)
    assert np.allclose(imageio.colour_float(lin, linear=True, to_srgb=False), 0.21404)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [None, 3, 4])
def test_png_round_trip_keeps_depth_and_rgb_order(tmp_path, dtype, channels):
    rng = np.random.default_rng(1)
    shape = (9, 13) if channels is None else (9, 13, channels)
    arr = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    path = imageio.write_image(tmp_path / "x.png", arr)
    back = imageio.read_image(path)
    assert back.dtype == dtype and np.array_equal(back, arr)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary behind


def test_rgb_order_matches_other_readers(tmp_path):
    from PIL import Image

    arr = np.zeros((2, 2, 3), np.uint8)
    arr[..., 0] = 200  # red
    imageio.write_image(tmp_path / "r.png", arr)
    assert np.asarray(Image.open(tmp_path / "r.png"))[0, 0].tolist() == [200, 0, 0]
    Image.fromarray(arr).save(tmp_path / "p.png")
    assert imageio.read_image(tmp_path / "p.png")[0, 0].tolist() == [200, 0, 0]


def test_float_written_as_8bit_png_and_16bit_tiff(tmp_path):
    arr = np.full((3, 3), 0.5, np.float32)
    assert imageio.read_image(imageio.write_image(tmp_path / "a.png", arr)).dtype == np.uint8
    assert imageio.read_image(imageio.write_image(tmp_path / "a.tif", arr)).dtype == np.uint16


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.png"):
        imageio.read_image(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="junk.png"):
        imageio.read_image(junk)
    with pytest.raises(InputError, match="mask file not found"):
        imageio.read_mask(tmp_path / "nomask.png")


def test_write_errors(tmp_path):
    with pytest.raises(MaskdError, match="does not exist"):
        imageio.write_image(tmp_path / "nope" / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(MaskdError, match="no alpha"):
        imageio.write_image(tmp_path / "a.jpg", np.zeros((2, 2, 4), np.uint8))


def test_read_mask_variants(tmp_path):
    gray16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    m = imageio.read_mask(tmp_path / "g16.png")
    assert m.dtype == np.float32 and np.allclose(m, gray16 / 65535.0)
    # a mask saved as transparency: flat colour, varying alpha
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = [[0, 85, 170, 255]] * 3
    imageio.write_image(tmp_path / "t.png", rgba)
    assert np.allclose(imageio.read_mask(tmp_path / "t.png")[0], [0, 1 / 3, 2 / 3, 1], atol=1e-3)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0] = 255
    imageio.write_image(tmp_path / "c.png", rgb)
    assert imageio.read_mask(tmp_path / "c.png").tolist() == [[1.0, 1.0], [0.0, 0.0]]


# ---------------------------------------------------------------------------------------------
# Temporaries: random, exclusive, never following a planted name; stale ones cleaned up safely


def test_write_never_follows_a_symlink_planted_at_the_temporary_name(tmp_path, monkeypatch):
    """An attacker who can write the output folder plants symlinks at every name they can predict
    (the old ``.NAME.PID.tmp``, and here even the next random name, forced): the write neither
    follows nor truncates them and still lands."""
    import os
    import tempfile

    from maskd.core import atomicfile

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out_dir = tmp_path / "shared"
    out_dir.mkdir()
    planted = [
        out_dir / f".out.png.{os.getpid()}.tmp",
        out_dir / f".out.png{atomicfile.TEMP_MARK}planted{atomicfile.TEMP_SUFFIX}",
    ]
    for link in planted:
        link.symlink_to(victim)
    names = iter(["planted", "fresh123"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    imageio.write_image(out_dir / "out.png", np.full((4, 5, 3), 200, np.uint8))
    assert victim.read_text() == "precious"
    assert all(link.is_symlink() and os.readlink(link) == str(victim) for link in planted)
    assert imageio.read_image(out_dir / "out.png").shape == (4, 5, 3)
    leftovers = sorted(p.name for p in out_dir.iterdir() if not p.is_symlink())
    assert leftovers == ["out.png"]


def test_write_replaces_a_symlink_at_the_output_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    out = tmp_path / "out.png"
    out.symlink_to(victim)
    imageio.write_image(out, np.zeros((3, 3), np.uint8))
    assert victim.read_bytes() == b"precious"
    assert not out.is_symlink() and imageio.read_image(out).shape == (3, 3)


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path):
    import os
    import stat

    from maskd.core import atomicfile

    new = imageio.write_image(tmp_path / "new.png", np.zeros((2, 2), np.uint8))
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~atomicfile.umask()
    old = tmp_path / "old.png"
    old.write_bytes(b"x")
    os.chmod(old, 0o640)
    imageio.write_image(old, np.zeros((2, 2), np.uint8))
    assert stat.S_IMODE(old.stat().st_mode) == 0o640


_KILLED_WRITER = r"""
import os, sys, time
import numpy as np
from maskd.core import imageio
os.replace = lambda *a: (print("written", flush=True), time.sleep(600))  # killed before the rename
imageio.write_image(sys.argv[1], np.zeros((64, 64, 3), np.uint8))
"""


def test_kill_9_mid_write_leaves_one_temporary_that_a_later_write_removes_once_stale(tmp_path):
    """kill -9 between writing and renaming leaves the temporary (nothing can run then); the next
    maskd that writes into the folder removes it once it is older than ``STALE_AFTER_S`` — and keeps
    a fresh one (another maskd may be writing it), a symlink with that pattern, and other names."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from maskd.core import atomicfile

    from tests.conftest import REPO

    target = tmp_path / "cut.png"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    (left,) = [p for p in tmp_path.iterdir()]
    assert left.name.startswith(".cut.png.maskd-") and left.name.endswith(".tmp") and not target.exists()

    fresh = tmp_path / ".other.png.maskd-fresh123.tmp"
    fresh.write_bytes(b"being written")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    old_link = tmp_path / ".x.png.maskd-link1234.tmp"
    old_link.symlink_to(victim)
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_bytes(b"mine")
    hour_ago = time.time() - atomicfile.STALE_AFTER_S - 60
    for p in (left, unrelated):
        os.utime(p, (hour_ago, hour_ago))
    os.utime(old_link, (hour_ago, hour_ago), follow_symlinks=False)

    atomicfile._cleaned.discard(os.path.abspath(tmp_path))
    imageio.write_image(target, np.zeros((2, 2), np.uint8))
    assert not left.exists()
    assert fresh.exists() and unrelated.exists() and old_link.is_symlink() and victim.read_bytes() == b"keep"
    assert target.exists()


def test_stale_temporaries_of_another_user_are_left_alone(tmp_path):
    import os
    import time

    from maskd.core import atomicfile

    if os.getuid() != 0:
        pytest.skip("needs root to create a file owned by another user")
    theirs = tmp_path / ".a.png.maskd-theirs12.tmp"
    mine = tmp_path / ".b.png.maskd-mine1234.tmp"
    for p in (theirs, mine):
        p.write_bytes(b"x")
        old = time.time() - 2 * atomicfile.STALE_AFTER_S
        os.utime(p, (old, old))
    os.chown(theirs, 54321, 54321)
    removed = atomicfile.clean_stale(tmp_path, force=True)
    assert removed == [mine] and theirs.exists()
