"""``maskd refine`` end to end, as a user (and external checks) run it: a real subprocess."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
from maskd.core import imageio

from tests.helpers import maskd_command, maskd_env


def _run(*args, cwd=None):
    return subprocess.run(
        maskd_command() + ["refine", *map(str, args)],
        capture_output=True,
        text=True,
        env=maskd_env(),
        cwd=cwd,
        timeout=120,
    )


def _scene(h=120, w=160):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    alpha = np.clip(0.5 - (np.hypot(yy - h / 2, xx - w / 2) - 40) / 1.5, 0, 1)
    fg = np.array([0.9, 0.5, 0.1], np.float32)
    bg = np.dstack([0.1 + 0.05 * np.sin(yy / 7), np.full_like(xx, 0.4), np.full_like(xx, 0.7)])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return image.astype(np.float32), alpha


@pytest.fixture
def files(tmp_path):
    image, alpha = _scene()
    rgba16 = np.dstack([imageio.to_uint16(image), np.full(alpha.shape, 65535, np.uint16)])
    imageio.write_image(tmp_path / "photo16.png", rgba16)  # 16-bit RGBA
    small = cv2.resize(alpha, (40, 30), interpolation=cv2.INTER_AREA)
    imageio.write_image(tmp_path / "mask.png", imageio.to_uint8(small))  # a mask of another size
    return tmp_path, alpha


def test_refine_writes_alpha_and_foreground_at_image_size(files):
    tmp, alpha = files
    proc = _run(
        tmp / "photo16.png",
        "--mask",
        tmp / "mask.png",
        "-o",
        tmp / "out.png",
        "--fg-out",
        tmp / "fg.png",
        "--rgba-out",
        tmp / "cut.png",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and proc.stderr == ""
    out = cv2.imread(str(tmp / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint8 and out.shape == alpha.shape  # 8-bit grayscale at the image's size
    coarse_err = np.abs(cv2.resize(cv2.imread(str(tmp / "mask.png"), 0), (160, 120)) / 255.0 - alpha).mean()
    assert np.abs(out / 255.0 - alpha).mean() < 0.6 * coarse_err
    fg = cv2.imread(str(tmp / "fg.png"), cv2.IMREAD_UNCHANGED)
    assert fg.shape == alpha.shape + (3,) and fg.dtype == np.uint8
    cut = imageio.read_image(tmp / "cut.png")
    assert cut.shape == alpha.shape + (4,) and np.array_equal(cut[..., 3], out)


def test_refine_options_and_16bit_output(files):
    tmp, alpha = files
    proc = _run(
        tmp / "photo16.png",
        "--mask",
        tmp / "mask.png",
        "-o",
        tmp / "hard.png",
        "--threshold",
        "0.5",
        "--invert",
        "--bits",
        "16",
        "--quality",
        "fast",
        "--no-decontaminate",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    hard = cv2.imread(str(tmp / "hard.png"), cv2.IMREAD_UNCHANGED)
    assert hard.dtype == np.uint16
    assert hard[60, 80] == 0 and hard[0, 0] == 65535  # inverted: the subject is transparent
    assert ((hard > 0) & (hard < 65535)).mean() < 0.05
    proc = _run(
        tmp / "photo16.png",
        "--mask",
        tmp / "mask.png",
        "-o",
        tmp / "hard8.png",
        "--threshold",
        "128",
        "--invert",
        "--quality",
        "fast",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    hard8 = cv2.imread(str(tmp / "hard8.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(hard8 / 255.0 - hard / 65535.0).max() < 0.01  # 128 on the 8-bit scale = 0.502


def test_refine_gray_jpeg_and_roi(files, tmp_path):
    tmp, alpha = files
    gray = imageio.to_uint8(cv2.cvtColor(_scene()[0], cv2.COLOR_RGB2GRAY))
    imageio.write_image(tmp / "gray.jpg", gray)
    proc = _run(
        tmp / "gray.jpg",
        "--mask",
        tmp / "mask.png",
        "-o",
        tmp / "roi.png",
        "--roi",
        "60,40,40,30",
        "--fg-out",
        tmp / "fg.png",
    )
    assert proc.returncode == 0, proc.stderr
    out = cv2.imread(str(tmp / "roi.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == alpha.shape and out[:40].max() == 0 and out[:, :60].max() == 0
    assert out[40:70, 60:100].max() == 255


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["missing.png", "--mask", "mask.png", "-o", "o.png"], 1, "image file not found: missing.png"),
        (["photo16.png", "--mask", "nomask.png", "-o", "o.png"], 1, "mask file not found"),
        (["photo16.png", "--mask", "mask.png", "-o", "nodir/o.png"], 1, "does not exist"),
        (["photo16.png", "--mask", "mask.png", "-o", "photo16.png"], 1, "must differ"),
        (["photo16.png", "--mask", "mask.png", "-o", "o.png", "--threshold", "300"], 2, "--threshold"),
        (["photo16.png", "--mask", "mask.png", "-o", "o.png", "--roi", "1,2"], 2, "--roi"),
        (["photo16.png", "-o", "o.png"], 2, "--mask"),
        (["photo16.png", "--mask", "mask.png", "-o", "o.png", "--device", "cuda"], 1, "sees no CUDA GPU"),
        (["photo16.png", "--mask", "mask.png", "-o", "o.png", "--device", "tpu"], 1, "unknown device"),
    ],
)
def test_refine_errors_are_short_and_clear(files, args, code, message):
    tmp, _ = files
    proc = _run(*args, cwd=tmp)
    assert proc.returncode == code
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "o.png").exists()


def test_refine_does_not_import_torch(files):
    tmp, _ = files
    code = (
        "import sys; from maskd.server.cli import main; "
        f"rc = main(['refine', r'{tmp / 'photo16.png'}', '--mask', r'{tmp / 'mask.png'}', "
        f"'-o', r'{tmp / 'o.png'}', '-q']); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [maskd_command()[0], "-c", code], capture_output=True, text=True, env=maskd_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_refine_on_a_torch_device_gives_the_same_alpha(files):
    """``--device`` takes the GPU code path (core.refine_torch); on torch's CPU device it must agree."""
    tmp, _ = files
    assert _run("photo16.png", "--mask", "mask.png", "-o", "cpu.png", cwd=tmp).returncode == 0
    proc = _run("photo16.png", "--mask", "mask.png", "-o", "dev.png", "--device", "cpu:0", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    a = cv2.imread(str(tmp / "cpu.png"), cv2.IMREAD_UNCHANGED).astype(int)
    b = cv2.imread(str(tmp / "dev.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert a.shape == b.shape and np.percentile(np.abs(a - b), 99) <= 1
