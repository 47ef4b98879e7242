"""core.metrics: SAD, MSE, gradient and connectivity errors as the alphamatting benchmark defines them."""

from __future__ import annotations

import numpy as np
import pytest
from maskd.core import metrics


def test_sad_and_mse_in_region():
    target = np.zeros((10, 10))
    pred = np.zeros((10, 10))
    pred[:2] = 0.5  # 20 pixels off by 0.5
    assert metrics.sad(pred, target) == pytest.approx(10 / 1000)
    assert metrics.mse(pred, target) == pytest.approx(20 * 0.25 / 100)
    region = np.zeros((10, 10), bool)
    region[0] = True
    assert metrics.sad(pred, target, region) == pytest.approx(5 / 1000)
    assert metrics.mse(pred, target, region) == pytest.approx(0.25)
    assert metrics.mse(pred, target, np.zeros((10, 10), bool)) == 0.0
    with pytest.raises(ValueError):
        metrics.sad(pred, target[:5])


def test_gradient_kernel_is_the_matlab_one():
    hx, hy = metrics._gaussian_derivative_kernels(1.4)
    assert hx.shape == (9, 9)  # half size 4 for σ = 1.4, ε = 1e-2
    assert np.sum(hx**2) == pytest.approx(1.0)
    assert np.allclose(hx, hy.T)
    ramp = np.tile(np.arange(20, dtype=float), (20, 1))
    mag = metrics.gradient_magnitude(ramp)
    assert mag[10, 10] > 0 and np.allclose(mag[5:15, 5:15], mag[10, 10])


def test_gradient_error_zero_for_identical_and_positive_for_blur():
    target = np.zeros((30, 30))
    target[:, 15:] = 1
    assert metrics.gradient_error(target, target) == 0.0
    blurred = np.clip((np.arange(30) - 10) / 10, 0, 1)[None, :].repeat(30, 0)
    assert metrics.gradient_error(blurred, target) > 0


def test_connectivity_uses_the_foreground_component_not_the_background():
    """A small subject on a large background. A uniformly dimmed (0.9) but connected subject has no
    connectivity error; the buggy port (background taken as Ω) would give every subject pixel l = 0
    and score |0.1 − 0| per pixel."""
    target = np.zeros((40, 40))
    target[5:15, 5:15] = 1.0
    assert metrics.connectivity_error(np.where(target > 0, 0.9, 0.0), target) == 0.0
    pred = target.copy()
    pred[8:12, 8:12] = 0.6  # a weak patch inside the subject: disconnected at t > 0.6
    err = metrics.connectivity_error(pred, target)
    assert err > 0
    # identical mattes: zero
    assert metrics.connectivity_error(target, target) == 0.0
    # φ differs only where pred fell out of Ω early (the weak patch), by d = 1 - 0.6 = 0.4 at most
    phi_gap = metrics._connectivity_map(pred, target)
    assert phi_gap[:, 20:].sum() == 0 and phi_gap[8:12, 8:12].max() > 0


def test_evaluate_matches_single_metrics():
    rng = np.random.default_rng(0)
    target = (rng.random((32, 32)) > 0.5).astype(float)
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1)
    region = np.zeros((32, 32), bool)
    region[8:24] = True
    both = metrics.evaluate(pred, target, {"band": region, "whole": None})
    assert both["band"]["sad"] == pytest.approx(metrics.sad(pred, target, region))
    assert both["whole"]["grad"] == pytest.approx(metrics.gradient_error(pred, target))
    assert both["band"]["conn"] == pytest.approx(metrics.connectivity_error(pred, target, region))
    assert both["whole"]["mse"] == pytest.approx(metrics.mse(pred, target))
    assert metrics.all_metrics(pred, target)["sad"] == pytest.approx(metrics.sad(pred, target))


def test_foreground_error_is_alpha_weighted():
    true = np.zeros((2, 2, 3))
    est = np.zeros((2, 2, 3))
    est[0, 0] = 0.3  # error 0.3 at α = 1
    est[1, 1] = 0.9  # error 0.9 at α = 0: must not count
    alpha = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert metrics.foreground_error(est, true, alpha) == pytest.approx(0.15)
    assert metrics.foreground_error(est, true, np.zeros((2, 2))) == 0.0
