"""core.pipeline: cutout/refine contracts, degenerate inputs, dtypes, linear input, ROI, existing alpha."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from maskd.core import guided_filter as gf
from maskd.core import imageio, pipeline
from maskd.core import trimap as trimapmod
from maskd.core.errors import InputError

from tests.helpers import coarse as _coarse
from tests.helpers import hair_scene as _hair_scene
from tests.standins import StandInSession


def _lanczos(coarse, hw):
    from PIL import Image

    im = Image.fromarray(imageio.to_uint8(coarse))
    return np.asarray(im.resize((hw[1], hw[0]), Image.LANCZOS)).astype(np.float32) / 255


def test_refine_beats_lanczos_on_strands():
    image, alpha, fg = _hair_scene()
    coarse = _coarse(alpha)
    lanczos_err = np.abs(_lanczos(coarse, alpha.shape) - alpha).sum()
    for quality, bound in [("fast", 0.8), ("default", 0.65), ("quality", 0.6)]:
        res = pipeline.refine(image, coarse, pipeline.CutoutOptions(quality=quality))
        assert res.alpha.shape == alpha.shape and res.alpha.dtype == np.float32
        assert np.abs(res.alpha - alpha).sum() < bound * lanczos_err, quality
        soft = (alpha > 0.1) & (alpha < 0.9)
        raw_err = np.abs(image[soft] / 255.0 - fg[soft]).mean()
        assert np.abs(res.foreground[soft] - fg[soft]).mean() < 0.6 * raw_err, quality
        assert set(res.timings) >= {"coefficients", "upsample", "foreground"}


def test_alpha_is_exactly_binary_outside_the_band():
    image, alpha, _ = _hair_scene()
    coarse = _coarse(alpha)
    res = pipeline.refine(image, coarse, pipeline.CutoutOptions(decontaminate=False))
    band_low, fg_low = trimapmod.band_from_matte(coarse, trimapmod.DEFAULT_RADIUS)
    band = trimapmod.upscale_nearest(band_low, alpha.shape)
    outside = res.alpha[~band]
    assert set(np.unique(outside)) <= {0.0, 1.0}
    assert np.array_equal(outside, trimapmod.upscale_nearest(fg_low, alpha.shape)[~band].astype(np.float32))
    assert ((res.alpha > 0) & (res.alpha < 1)).sum() > 500


def test_back_projection_matches_the_matte_by_moving_soft_pixels_only():
    """Back-projection shares each model pixel's residual among its soft pixels (weight α(1 − α)):
    the area average comes back to the matte, pixels at 0 or 1 stay where they are."""
    rng = np.random.default_rng(1)
    truth = np.clip(rng.uniform(-0.5, 1.5, (64, 64)), 0, 1).astype(np.float32)
    matte = _coarse(truth)
    start = np.clip(cv2.resize(matte, (64, 64), interpolation=cv2.INTER_LINEAR), 0, 1)
    start[::7, ::5] = 0.0
    start[3::7, 2::5] = 1.0
    hard = (start == 0.0) | (start == 1.0)
    alpha = start.copy()
    band = np.ones(alpha.shape, bool)
    before = np.abs(_coarse(alpha) - matte).mean()
    pipeline._back_project(alpha, matte, [(0, 64, 0, 64)], band, 8)
    after = np.abs(_coarse(alpha) - matte).mean()
    assert after < 0.1 * before
    assert np.abs(alpha - start)[hard].max() < 0.02
    assert np.abs(alpha - start)[~hard].mean() > 0.02  # the soft pixels took the correction


@pytest.mark.parametrize(
    "full_hw, low_hw",
    [
        ((4000, 4000), (1024, 1024)),
        ((1003, 757), (256, 192)),
        ((900, 700), (300, 233)),
        ((512, 768), (256, 384)),
    ],
)
def test_area_averages_by_blocks_are_the_whole_resize_bit_for_bit(full_hw, low_hw):
    """Back-projection re-averages only the blocks that hold a band tile (``_AreaAverages``): after
    the tiles change, its averages must be exactly what one whole INTER_AREA resize gives, for
    sizes that share a factor (blocks), share none (one block: the whole image), or an integer ratio."""
    rng = np.random.default_rng(3)
    full = rng.random(full_hw, dtype=np.float32)
    height, width = full_hw
    tiles = [(0, min(height, 256), 256, min(width, 512)), (height - 100, height, width - 300, width)]
    averages = pipeline._AreaAverages(full_hw, low_hw, tiles)
    first = averages.of("x", full)
    assert np.array_equal(first, pipeline._downsample(full, low_hw))
    for y0, y1, x0, x1 in tiles:
        full[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0), dtype=np.float32)
    assert np.array_equal(averages.of("x", full), pipeline._downsample(full, low_hw))
    if full_hw == (4000, 4000):
        assert averages.runs  # the common case (a 1024² matte) really goes by blocks


def test_tiles_in_threads_give_the_one_thread_result():
    """The band's tiles run on OpenCV's thread count (``_each_tile``): the same bits as one thread."""
    image, alpha, _ = _hair_scene(600)
    coarse = _coarse(alpha)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = pipeline.refine(image, coarse)
        cv2.setNumThreads(4)
        many = pipeline.refine(image, coarse)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(one.alpha, many.alpha) and np.array_equal(one.foreground, many.foreground)


def test_gray_layers_refine_as_well_as_colour_ones():
    """A gray layer's guide has three equal channels; its alpha must be as good as the colour one's
    (the guided filter's 3×3 solve is near-singular there, see test_guided_filter)."""
    image, alpha, _ = _hair_scene()
    gray = image[..., :1]  # the red channel: the subject still stands out
    coarse = _coarse(alpha)
    opts = pipeline.CutoutOptions(decontaminate=False)
    err_rgb = np.abs(pipeline.refine(image, coarse, opts).alpha - alpha).sum()
    err_gray = np.abs(pipeline.refine(gray, coarse, opts).alpha - alpha).sum()
    assert err_gray < 2.0 * err_rgb


def test_tiled_upsampling_matches_whole_image_joint_upsampling(monkeypatch):
    monkeypatch.setattr(pipeline, "ISOLATED_LEVEL", 1.0)  # the upsampling alone (no lone-pixel pass)
    image, alpha, _ = _hair_scene(300)  # 300 is not a multiple of the tile: edge tiles too
    coarse = _coarse(alpha)
    res = pipeline.refine(image, coarse, pipeline.CutoutOptions(quality="fast", decontaminate=False))
    whole = gf.joint_upsample(
        image / np.float32(255), coarse, r=pipeline.GUIDE_RADIUS, eps=pipeline.GUIDE_EPS
    )
    band = trimapmod.upscale_nearest(trimapmod.band_from_matte(coarse, 1)[0], alpha.shape)
    diff = np.abs(res.alpha - whole)[band]
    assert np.percentile(diff, 99) < 0.02 and diff.mean() < 0.005


def test_tiled_sharpening_matches_the_whole_image_guided_filter():
    image, alpha, _ = _hair_scene(600)  # several tiles and their seams
    rough = np.clip(cv2.GaussianBlur(alpha, (0, 0), 2.0), 0, 1)
    band = (rough > 0) & (rough < 1)
    tiles = pipeline._band_tiles(band)
    assert len(tiles) > 4
    out = rough.copy()
    pipeline._sharpen(image, out, tiles, band, False)
    whole = gf.guided_filter(imageio.to_float(image), rough, pipeline.SHARPEN_RADIUS, pipeline.SHARPEN_EPS)
    assert np.abs(out - whole)[band].max() < 1e-4
    assert np.array_equal(out[~band], rough[~band])
    assert np.abs(out - rough)[band].mean() > 0.005  # it did filter (its gain shows in test_refine_quality)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_masks_give_constant_alpha(value):
    image, _, _ = _hair_scene(64)
    for mask in (np.full((16, 16), value, np.float32), np.full((1, 1), value, np.float32)):
        res = pipeline.refine(image, mask)
        assert np.all(res.alpha == value)
        assert res.foreground.shape == (64, 64, 3)


def test_single_pixel_mask_and_tiny_images():
    image, _, _ = _hair_scene(64)
    mask = np.zeros((16, 16), np.float32)
    mask[8, 8] = 1.0
    res = pipeline.refine(image, mask)
    # one model pixel (4×4 image pixels) is below the guided filter's window: a faint local blob
    assert res.alpha.max() > 0.1 and res.alpha.min() >= 0
    ys, xs = np.nonzero(res.alpha)
    assert ys.min() >= 16 and ys.max() < 52 and xs.min() >= 16 and xs.max() < 52  # within the band
    for shape in [(1, 1, 3), (1, 37, 3), (37, 1, 3), (2, 2, 4)]:
        img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        for m in (
            np.full((1, 1), 0.5, np.float32),
            np.random.default_rng(1).random((5, 9)).astype(np.float32),
        ):
            res = pipeline.refine(
                img, m, pipeline.CutoutOptions(threshold=0.5, grow=1, feather=1, fill_holes=True)
            )
            assert res.alpha.shape == shape[:2] and np.isfinite(res.alpha).all()
            assert res.foreground.shape == shape[:2] + (3,)
        res = pipeline.cutout(img, StandInSession(32).matte)
        assert res.alpha.shape == shape[:2]


def test_dtypes_and_layouts_agree():
    image8, alpha, _ = _hair_scene(128)
    coarse = _coarse(alpha)
    ref = pipeline.refine(image8, coarse).alpha
    variants = [
        imageio.to_uint16(image8),
        image8.astype(np.float32) / 255,
        image8.astype(np.float64) / 255,
        (image8 / 255).astype(np.float16),
        np.dstack([image8, np.full(alpha.shape, 255, np.uint8)]),  # opaque RGBA
    ]
    for img in variants:
        out = pipeline.refine(img, coarse).alpha
        assert np.abs(out - ref).mean() < 2e-3 and np.abs(out - ref).max() < 0.1
    gray = cv2.cvtColor(image8, cv2.COLOR_RGB2GRAY)
    for img in (gray, gray[..., None], np.dstack([gray, np.full_like(gray, 255)])):
        res = pipeline.refine(img, coarse)
        assert res.alpha.shape == alpha.shape and res.foreground.shape == alpha.shape + (3,)
    # masks of every dtype give the same result
    for m in (imageio.to_uint8(coarse), imageio.to_uint16(coarse)):
        assert np.abs(pipeline.refine(image8, m).alpha - ref).mean() < 5e-3


def test_linear_input_gives_the_same_alpha_and_linear_colours():
    image8, alpha, _ = _hair_scene(128)
    coarse = _coarse(alpha)
    srgb = pipeline.refine(image8, coarse)
    linear_image = imageio.srgb_to_linear(image8 / np.float32(255))
    lin = pipeline.refine(linear_image, coarse, pipeline.CutoutOptions(linear=True))
    assert np.abs(lin.alpha - srgb.alpha).mean() < 0.01
    # colours come back in the input's own (linear) encoding, opaque pixels unchanged
    opaque = lin.alpha == 1
    assert np.allclose(lin.foreground[opaque], linear_image[opaque], atol=1e-6)
    # without linear=True the same array would be read as (dark) sRGB and the guide would differ
    assert np.abs(pipeline.refine(linear_image, coarse).alpha - srgb.alpha).mean() > 0


def test_existing_alpha_is_respected():
    image8, alpha, _ = _hair_scene(128)
    existing = np.full(alpha.shape, 255, np.uint8)
    existing[:, :40] = 0  # left strip already transparent
    rgba = np.dstack([image8, existing])
    res = pipeline.refine(rgba, np.ones((32, 32), np.float32))
    assert np.all(res.alpha[:, :40] == 0) and np.all(res.alpha[:, 40:] == 1)
    res = pipeline.cutout(rgba, StandInSession(64).matte, pipeline.CutoutOptions(invert=True))
    assert np.all(res.alpha[:, :40] == 0)


def test_roi_limits_alpha_and_gives_the_model_the_crop():
    image8, alpha, _ = _hair_scene(256)
    seen = []

    def matte_fn(rgb):
        seen.append(rgb.shape)
        return StandInSession(64).matte(rgb)

    roi = (90, 40, 80, 60)  # across the top of the subject
    res = pipeline.cutout(image8, matte_fn, pipeline.CutoutOptions(roi=roi))
    x, y, w, h = roi
    outside = np.ones(alpha.shape, bool)
    outside[y : y + h, x : x + w] = False
    assert np.all(res.alpha[outside] == 0)
    assert res.alpha[y : y + h, x : x + w].max() > 0.5
    sh, sw = seen[0][:2]
    assert h < sh < 256 and w < sw < 256  # the crop plus a margin, not the whole image
    assert res.foreground.shape == (256, 256, 3)
    # refine with an ROI: the full-size mask is cropped like the image
    res = pipeline.refine(image8, alpha, pipeline.CutoutOptions(roi=roi))
    assert np.all(res.alpha[outside] == 0)
    assert np.abs(res.alpha[y : y + h, x : x + w] - alpha[y : y + h, x : x + w]).mean() < 0.05
    with pytest.raises(InputError, match="outside"):
        pipeline.refine(image8, alpha, pipeline.CutoutOptions(roi=(300, 300, 10, 10)))


def test_cutout_with_the_stand_in_model_and_progress():
    image8, alpha, _ = _hair_scene(256)
    stages = []
    res = pipeline.cutout(image8, StandInSession(128).matte, progress=lambda s, f: stages.append((s, f)))
    assert res.alpha[alpha == 1].mean() > 0.9 and res.alpha[alpha == 0].mean() < 0.2
    names = [s for s, _ in stages]
    assert names[0] == "model" and names[-1] == "done" and "foreground" in names
    assert all(0.0 <= f <= 1.0 for _, f in stages)


def test_progress_can_cancel():
    image8, alpha, _ = _hair_scene(128)

    class Cancelled(Exception):
        pass

    def progress(stage, fraction):
        if stage == "upsample":
            raise Cancelled()

    with pytest.raises(Cancelled):
        pipeline.refine(image8, _coarse(alpha), progress=progress)


def test_options_threshold_invert_grow_feather():
    image8, alpha, _ = _hair_scene(128)
    coarse = _coarse(alpha)
    base = pipeline.refine(image8, coarse).alpha
    hard = pipeline.refine(image8, coarse, pipeline.CutoutOptions(threshold=0.5)).alpha
    assert ((hard > 0) & (hard < 1)).sum() < ((base > 0) & (base < 1)).sum()
    assert ((hard > 0) & (hard < 1)).sum() > 0  # anti-aliased rim
    inv = pipeline.refine(image8, coarse, pipeline.CutoutOptions(invert=True)).alpha
    assert np.allclose(inv, 1 - base)
    grown = pipeline.refine(image8, coarse, pipeline.CutoutOptions(grow=3)).alpha
    assert grown.sum() > base.sum() and np.all(grown >= base)
    soft = pipeline.refine(image8, coarse, pipeline.CutoutOptions(feather=4)).alpha
    assert ((soft > 0) & (soft < 1)).sum() > ((base > 0) & (base < 1)).sum()
    assert pipeline.refine(image8, coarse, pipeline.CutoutOptions(decontaminate=False)).foreground is None
    plain = pipeline.refine(image8, coarse, pipeline.CutoutOptions(refine=False)).alpha
    assert np.abs(plain - cv2.resize(coarse, (128, 128), interpolation=cv2.INTER_LINEAR)).max() < 1e-5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quality": "best"}, "quality"),
        ({"threshold": 1.5}, "threshold"),
        ({"feather": -1}, "feather"),
        ({"roi": (0, 0, 0, 5)}, "roi"),
        ({"band_radius": -1}, "band"),
    ],
)
def test_bad_options_are_input_errors(kwargs, match):
    image8, alpha, _ = _hair_scene(32)
    with pytest.raises(InputError, match=match):
        pipeline.refine(image8, alpha, pipeline.CutoutOptions(**kwargs))


def test_bad_matte_from_the_model_is_an_input_error():
    image8, _, _ = _hair_scene(32)
    with pytest.raises(InputError, match="matte"):
        pipeline.cutout(image8, lambda rgb: np.zeros((4, 4, 3), np.float32))


def test_full_size_mask_is_refined_on_a_reduced_grid():
    """A hard full-size selection ("refine my selection") moves onto the photo's soft edges."""
    image8, alpha, _ = _hair_scene(256)
    selection = (alpha > 0.5).astype(np.float32)
    hard_err = np.abs(selection - alpha).mean()
    assert np.abs(pipeline.refine(image8, selection).alpha - alpha).mean() < hard_err  # grid = image / 2
    old = pipeline.REFINE_GRID
    try:
        pipeline.REFINE_GRID = 64  # stands for 1024 on a 4096² layer
        res = pipeline.refine(image8, selection)
    finally:
        pipeline.REFINE_GRID = old
    assert np.abs(res.alpha - alpha).mean() < hard_err


def _crossings(alpha):
    """Sub-pixel x where each row crosses 0.5 (rows fall from 1 to 0 left to right)."""
    xs = []
    for row in alpha:
        i = int(np.argmax(row < 0.5))
        a, b = row[i - 1], row[i]
        xs.append(i - 1 + (a - 0.5) / (a - b) if a != b else i)
    return np.array(xs)


def test_hard_low_resolution_edges_are_antialiased_not_stair_stepped():
    """A binary 64² mask of a slanted edge over a flat image (no colour to follow): the 256² alpha
    has a straight, smooth edge, where nearest-neighbour upsampling shows 4-pixel steps."""
    yy, xx = np.mgrid[0:64, 0:64]
    mask = (xx + 0.3 * yy < 30).astype(np.float32)
    image = np.full((256, 256, 3), 128, np.uint8)
    res = pipeline.refine(image, mask, pipeline.CutoutOptions(decontaminate=False))
    crossings = _crossings(res.alpha[8:-8])
    residual = crossings - np.polyval(
        np.polyfit(np.arange(crossings.size), crossings, 1), np.arange(crossings.size)
    )
    nearest = cv2.resize(mask, (256, 256), interpolation=cv2.INTER_NEAREST)
    stairs = _crossings(nearest[8:-8] * 0.999 + 0.0005)
    stair_residual = stairs - np.polyval(
        np.polyfit(np.arange(stairs.size), stairs, 1), np.arange(stairs.size)
    )
    # sub-pixel straightness, where nearest-neighbour upsampling is off by whole pixels
    assert np.abs(residual).max() < 0.6 and np.abs(residual).max() < np.abs(stair_residual).max() / 3
    assert ((res.alpha > 0.05) & (res.alpha < 0.95)).any(axis=1)[8:-8].all()  # a soft rim on every row


def test_non_square_image_with_a_square_model_grid():
    """BiRefNet squashes every image to a square: a 200×512 layer gets a 64×64 matte."""
    image8, alpha, _ = _hair_scene(256)
    wide = np.ascontiguousarray(np.concatenate([image8, image8[:, ::-1]], axis=1)[28:228])
    truth = np.ascontiguousarray(np.concatenate([alpha, alpha[:, ::-1]], axis=1)[28:228])
    square = cv2.resize(truth, (64, 64), interpolation=cv2.INTER_AREA)
    res = pipeline.cutout(wide, lambda rgb: square, pipeline.CutoutOptions(quality="quality"))
    assert res.alpha.shape == (200, 512) and res.foreground.shape == (200, 512, 3)
    stretched = cv2.resize(square, (512, 200), interpolation=cv2.INTER_LINEAR)
    assert np.abs(res.alpha - truth).mean() < 0.5 * np.abs(stretched - truth).mean()
