"""core.refine_torch (the GPU refinement) against the CPU pipeline, run on torch's CPU device.

``CutoutOptions(device="cpu:0")`` takes the torch path on the CPU: every step must give what the
OpenCV tiles give. A CUDA or MPS device runs the same code: ``tests/bench/bench_refine.py
--device cuda`` checks it against the CPU path and times it where one is present.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from maskd.core import pipeline, refine_torch
from maskd.core import trimap as trimapmod

from tests.helpers import coarse as _coarse
from tests.helpers import hair_scene as _hair_scene


@pytest.mark.parametrize("shape", [(37, 53), (5, 300), (1, 9), (64, 64)])
@pytest.mark.parametrize("r", [1, 2, 6, 40])
def test_box_mean_is_opencvs_blur_with_mirrored_borders(shape, r):
    x = np.random.default_rng(0).random(shape + (3,), dtype=np.float32)
    want = cv2.blur(x, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT_101)
    got = refine_torch.box_mean(torch.from_numpy(x).permute(2, 0, 1), r).permute(1, 2, 0).numpy()
    assert np.abs(got - want.reshape(got.shape)).max() < 1e-5


@pytest.mark.parametrize(
    "full, low", [((4000, 3000), (1024, 768)), ((300, 523), (75, 130)), ((97, 64), (24, 64))]
)
def test_grid_resamples_as_opencv(full, low):
    rng = np.random.default_rng(1)
    grid = refine_torch.Grid(full, low, "cpu")
    big = rng.random(full, dtype=np.float32)
    want = cv2.resize(big, (low[1], low[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(grid.down(torch.from_numpy(big)).numpy() - want).max() < 1e-5
    small = rng.random(low + (4,), dtype=np.float32)
    want = cv2.resize(small, (full[1], full[0]), interpolation=cv2.INTER_LINEAR)
    got = grid.up(torch.from_numpy(small).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() < 5e-4  # OpenCV rounds its interpolation weights
    mask = rng.random(low) > 0.7
    assert np.array_equal(grid.up_nearest(mask, "cpu").numpy(), trimapmod.upscale_nearest(mask, full))


def _compare(image, mask, **options):
    cpu = pipeline.refine(image, mask, pipeline.CutoutOptions(**options))
    dev = pipeline.refine(image, mask, pipeline.CutoutOptions(device="cpu:0", **options))
    assert dev.alpha.shape == cpu.alpha.shape and dev.alpha.dtype == np.float32
    d = np.abs(dev.alpha - cpu.alpha)
    # Equal up to float round-off, which a guided filter's small ε amplifies in flat colour (max ~0.04).
    assert np.percentile(d, 99) < 5e-3 and d.mean() < 5e-4, (d.max(), np.percentile(d, 99), d.mean())
    assert set(np.unique(dev.alpha[(cpu.alpha == 0) | (cpu.alpha == 1)])) <= {0.0, 1.0} or d.max() < 0.05
    if cpu.foreground is not None:
        assert dev.foreground.shape == cpu.foreground.shape and dev.foreground.dtype == np.float32
        weight = cpu.alpha
        err = (np.abs(dev.foreground - cpu.foreground).mean(-1) * weight).sum() / max(weight.sum(), 1e-6)
        assert err < 1e-3, err
    return cpu, dev


@pytest.mark.parametrize("quality", pipeline.QUALITIES)
def test_device_path_matches_the_cpu_path(quality):
    image, alpha, _ = _hair_scene(300)
    _, dev = _compare(image, _coarse(alpha), quality=quality)
    assert dev.device == "cpu:0"


@pytest.mark.parametrize("quality", pipeline.QUALITIES)
@pytest.mark.parametrize("own_size", [False, True])
def test_device_path_matches_on_a_network_like_matte(quality, own_size):
    """A matte that is no exact area average (levels 0.02/0.97, noise): the capped back-projection,
    the calibrated band, the confidence-weighted two-scale sharpening after each round, the
    lone-pixel pass and the wider snap, against the CPU path — on a coarse grid and at the image's
    own size (no back-projection), in every mode. (The wide fit's radius 9 instead of 8 fails it.)"""
    image, alpha, _ = _hair_scene(300)
    coarse = alpha if own_size else _coarse(alpha)
    noise = cv2.GaussianBlur(np.random.default_rng(3).random(coarse.shape, dtype=np.float32), (0, 0), 2.0)
    matte = np.clip(0.02 + 0.95 * coarse - 0.03 * noise * coarse, 0, 1).astype(np.float32)
    h, w = matte.shape
    matte[h // 3 : h // 3 + h // 8, w // 3 : w // 3 + w // 8] = 0.5  # broadly unsure: the wide colour fit
    assert not trimapmod.is_exact(matte) and (own_size or trimapmod.is_exact(coarse))
    _compare(image, matte, quality=quality)


def test_device_path_matches_on_a_photo(evaldata):
    from PIL import Image

    folder = evaldata / "alphamatting"
    photo = np.asarray(Image.open(folder / "GT03_image.png").convert("RGB"))
    truth = np.asarray(Image.open(folder / "GT03_alpha.png").convert("L")).astype(np.float32) / 255
    _compare(photo, _coarse(truth))


def test_device_path_inputs_and_options():
    image, alpha, _ = _hair_scene(200)
    coarse = _coarse(alpha)
    # 16-bit, float linear, gray
    _compare(image.astype(np.uint16) * 257, coarse)
    _compare((image / np.float32(255)) ** 2.2, coarse, linear=True)
    _compare(image[..., :1], coarse)
    # an alpha channel with fully transparent pixels: they stay transparent
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    rgba[:40, :, 3] = 0
    rgba[40:60, :, 3] = 128
    _, dev = _compare(rgba, coarse)
    assert (dev.alpha[:40] == 0).all()
    # a hard mask, options, no refinement, an ROI, no colours
    _compare(image, (coarse > 0.5).astype(np.float32))
    _compare(image, coarse, grow=2, feather=1.5, threshold=0.4)
    _compare(image, coarse, refine=False)
    _compare(image, coarse, roi=(40, 30, 120, 100), decontaminate=False)


def test_device_path_degenerate_masks():
    image, _, _ = _hair_scene(64)
    for value in (0.0, 1.0):
        _, dev = _compare(image, np.full((16, 16), value, np.float32))
        assert (dev.alpha == value).all()
    one = np.zeros((16, 16), np.float32)
    one[8, 8] = 1.0
    _compare(image, one)
    strip = np.random.default_rng(2).integers(0, 256, (1, 40, 3), dtype=np.uint8)
    _compare(strip, np.linspace(0, 1, 40, dtype=np.float32)[None])


def test_bad_device_is_an_input_error():
    from maskd.core.errors import InputError

    with pytest.raises(InputError, match="device"):
        pipeline.CutoutOptions(device="tpu").validate()


def test_a_full_gpu_falls_back_to_the_cpu(monkeypatch):
    """Out of GPU memory (another application, a huge layer): the CPU path does the job instead."""
    image, alpha, _ = _hair_scene(120)
    coarse = _coarse(alpha)

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(refine_torch, "refine_alpha", full)
    res = pipeline.refine(image, coarse, pipeline.CutoutOptions(device="cpu:0"))
    cpu = pipeline.refine(image, coarse)
    assert np.array_equal(res.alpha, cpu.alpha) and np.array_equal(res.foreground, cpu.foreground)
    assert res.device == "cpu"

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(refine_torch, "refine_alpha", broken)
    with pytest.raises(RuntimeError, match="illegal"):  # other errors are not hidden
        pipeline.refine(image, coarse, pipeline.CutoutOptions(device="cpu:0"))
