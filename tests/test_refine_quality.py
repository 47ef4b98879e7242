"""Issue 3's quality criteria on the alphamatting photos (skips cleanly where ../shared/evaldata is absent).

Protocol as in ``tests/bench/bench_refine.py`` (which prints the full table): the coarse mask is the
ground truth resized with INTER_AREA to a quarter of the image's size; errors inside trimap2's band.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from maskd.core import metrics, pipeline

sys.path.insert(0, str(Path(__file__).parent / "bench"))
import bench_refine  # noqa: E402


@pytest.fixture(scope="module")
def pairs(evaldata):
    loaded = bench_refine.load_pairs(evaldata / "alphamatting")
    if not loaded:
        pytest.skip("no alphamatting pairs in the evaluation data")
    return loaded


def _band_errors(pairs, method):
    sad, grad = [], []
    for _, img, alpha, trimap in pairs:
        pred, _ = method(img, bench_refine.coarse_mask(alpha))
        band = trimap == 128
        sad.append(metrics.sad(pred, alpha, band))
        grad.append(metrics.gradient_error(pred, alpha, band))
    return np.array(sad), np.array(grad)


def test_band_sad_and_gradient_against_baselines(pairs):
    lanczos_sad, lanczos_grad = _band_errors(pairs, bench_refine.method_lanczos)
    _, bilinear_grad = _band_errors(pairs, bench_refine.method_bilinear)
    default_sad, default_grad = _band_errors(pairs, bench_refine.method_maskd("default"))
    quality_sad, _ = _band_errors(pairs, bench_refine.method_maskd("quality"))
    assert np.mean(default_sad / lanczos_sad) <= 0.65
    assert np.mean(quality_sad / lanczos_sad) <= 0.55
    # blur-fusion on Lanczos has Lanczos' alpha, so beating Lanczos and bilinear beats every baseline
    assert default_grad.mean() < min(lanczos_grad.mean(), bilinear_grad.mean())


def _colour_ratios(pairs, foreground_of):
    """Per pair: maskd's colour error over the raw pixels', on I = αF + (1 − α)B with F =
    ``foreground_of(photo, alpha)`` and B the next photo of the set (the bench's protocol)."""
    import cv2

    ratios = []
    for i, (_, img, alpha, _) in enumerate(pairs):
        h, w = alpha.shape
        other = pairs[(i + 1) % len(pairs)][1]
        background = cv2.resize(other, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        fg = foreground_of(img.astype(np.float32) / 255, alpha)
        comp = bench_refine.composite(fg, alpha, background)
        res = pipeline.refine(comp, bench_refine.coarse_mask(alpha))
        raw = metrics.foreground_error(comp / np.float32(255), fg, alpha)
        ratios.append(metrics.foreground_error(res.foreground, fg, alpha) / raw)
    return ratios


def test_colour_error_on_composites_with_a_clean_foreground(pairs):
    """Decontaminated colours vs the image's own pixels, on I = αF + (1 − α)B with F free of any old
    background (see the bench for the photo-as-F variant)."""
    assert np.mean(_colour_ratios(pairs, bench_refine.clean_foreground)) <= 0.5


def test_colour_error_on_composites_of_the_photo_itself(pairs):
    """The issue's literal protocol: F = the pair's own photo, whose soft pixels still hold their old
    background, so F is only recovered by unmixing against the new background under it. Blur-fusion
    alone is worse than raw pixels here (1.28×, pymatting's multi-level estimate 0.98×); maskd's
    default is at about 0.495× (the bench prints the table)."""
    assert np.mean(_colour_ratios(pairs, lambda photo, alpha: photo)) <= 0.5
