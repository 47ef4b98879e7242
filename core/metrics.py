"""Alpha-matte quality metrics (SAD, MSE, gradient, connectivity) and foreground colour error.

Definitions follow the alphamatting.com benchmark (Rhemann et al., CVPR 2009) and its MATLAB
evaluation code, with alpha in [0, 1]:

- SAD  = Σ|α − α*| over the region, reported ÷ 1000.
- MSE  = mean (α − α*)² over the region (callers usually print it × 1000).
- Gradient error = Σ(‖∇α‖ − ‖∇α*‖)² over the region, ∇ by first-order Gaussian-derivative
  filters (σ = 1.4, 9×9, L2-normalised), reported ÷ 1000.
- Connectivity error: for t = 0.1, 0.2, …, 1, Ω_t = the largest 4-connected component of the
  *foreground* (α ≥ t) ∧ (α* ≥ t); l_i = the last threshold at which pixel i was still in Ω
  (1 if always); d = α − l; φ = 1 − d·[d ≥ 0.15]; Conn = Σ|φ(α) − φ(α*)| over the region, ÷ 1000.
  (The widely copied Python port picks the background label as the "largest component": not here.)

``region`` is a boolean mask (e.g. ``trimap == 128``, the unknown band) or None (whole image).
Everything is computed in float64 on the evaluation images (small; correctness over speed).
"""

from __future__ import annotations

import numpy as np

GRADIENT_SIGMA = 1.4
CONNECTIVITY_STEP = 0.1


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"alpha shapes differ or are not 2-D: {pred.shape} vs {target.shape}")
    return pred, target


def _region(region, shape) -> np.ndarray:
    if region is None:
        return np.ones(shape, dtype=bool)
    region = np.asarray(region, dtype=bool)
    if region.shape != shape:
        raise ValueError(f"region shape {region.shape} differs from alpha shape {shape}")
    return region


def sad(pred, target, region=None) -> float:
    """Sum of absolute differences inside ``region``, ÷ 1000."""
    pred, target = _check(pred, target)
    return float(np.abs(pred - target)[_region(region, pred.shape)].sum() / 1000.0)


def mse(pred, target, region=None) -> float:
    """Mean squared error inside ``region`` (0 for an empty region)."""
    pred, target = _check(pred, target)
    sel = _region(region, pred.shape)
    if not sel.any():
        return 0.0
    return float(((pred - target)[sel] ** 2).mean())


def _gaussian_derivative_kernels(sigma: float = GRADIENT_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """The MATLAB ``gaussgradient`` kernels: half size from ε = 1e-2, L2-normalised."""
    epsilon = 1e-2
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * epsilon))))
    coords = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(coords**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dgauss = -coords * gauss / sigma**2
    hx = gauss[:, None] * dgauss[None, :]  # derivative along x (columns)
    hx /= np.sqrt((hx**2).sum())
    return hx, hx.T.copy()


def gradient_magnitude(alpha: np.ndarray, sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    import cv2

    hx, hy = _gaussian_derivative_kernels(sigma)
    a = np.asarray(alpha, dtype=np.float64)
    # MATLAB imfilter(..., 'replicate', 'conv'): flip the kernels for a true convolution.
    gx = cv2.filter2D(a, cv2.CV_64F, hx[::-1, ::-1], borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(a, cv2.CV_64F, hy[::-1, ::-1], borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def gradient_error(pred, target, region=None) -> float:
    """Σ(‖∇α‖ − ‖∇α*‖)² inside ``region``, ÷ 1000."""
    pred, target = _check(pred, target)
    diff = gradient_magnitude(pred) - gradient_magnitude(target)
    return float((diff**2)[_region(region, pred.shape)].sum() / 1000.0)


def _largest_foreground_component(binary: np.ndarray) -> np.ndarray:
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=4)
    if count <= 1:  # label 0 is the background (the pixels NOT in ``binary``): never pick it
        return np.zeros(binary.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def connectivity_error(pred, target, region=None, step: float = CONNECTIVITY_STEP) -> float:
    """Rhemann et al.'s connectivity error inside ``region``, ÷ 1000."""
    diff = _connectivity_map(pred, target, step)
    return float(diff[_region(region, diff.shape)].sum() / 1000.0)


def _connectivity_map(pred, target, step: float = CONNECTIVITY_STEP) -> np.ndarray:
    """Per-pixel |φ(α) − φ(α*)| of the connectivity error (sum it over a region)."""
    pred, target = _check(pred, target)
    thresholds = np.arange(0.0, 1.0 + step / 2, step)
    last_in = np.full(pred.shape, -1.0)
    for k in range(1, len(thresholds)):
        omega = _largest_foreground_component((pred >= thresholds[k]) & (target >= thresholds[k]))
        dropped = (last_in == -1.0) & ~omega
        last_in[dropped] = thresholds[k - 1]
    last_in[last_in == -1.0] = 1.0
    pred_d = pred - last_in
    target_d = target - last_in
    pred_phi = 1.0 - pred_d * (pred_d >= 0.15)
    target_phi = 1.0 - target_d * (target_d >= 0.15)
    return np.abs(pred_phi - target_phi)


def foreground_error(estimated, true_foreground, alpha) -> float:
    """Alpha-weighted mean absolute colour error where α > 0 (colours in [0, 1], per channel).

    ``Σ α·mean_c|F̂ − F| / Σ α``: a fully transparent pixel's colour cannot matter, a faint one
    matters little — the error a viewer sees once the cut-out is composited.
    """
    est = np.asarray(estimated, dtype=np.float64)
    true = np.asarray(true_foreground, dtype=np.float64)
    a = np.asarray(alpha, dtype=np.float64)
    if est.shape != true.shape or est.shape[:2] != a.shape:
        raise ValueError(f"shapes differ: {est.shape}, {true.shape}, alpha {a.shape}")
    weight = a.sum()
    if weight <= 0:
        return 0.0
    return float((np.abs(est - true).mean(axis=-1) * a).sum() / weight)


def all_metrics(pred, target, region=None) -> dict:
    """SAD, MSE, gradient and connectivity errors for one region, as a dict."""
    return evaluate(pred, target, {"": region})[""]


def evaluate(pred, target, regions: dict) -> dict:
    """``{name: {"sad", "mse", "grad", "conn"}}`` for several regions, the per-pixel maps computed once."""
    pred, target = _check(pred, target)
    abs_diff = np.abs(pred - target)
    grad_sq = (gradient_magnitude(pred) - gradient_magnitude(target)) ** 2
    conn = _connectivity_map(pred, target)
    out = {}
    for name, region in regions.items():
        sel = _region(region, pred.shape)
        count = int(sel.sum())
        out[name] = {
            "sad": float(abs_diff[sel].sum() / 1000.0),
            "mse": float((abs_diff[sel] ** 2).sum() / count) if count else 0.0,
            "grad": float(grad_sq[sel].sum() / 1000.0),
            "conn": float(conn[sel].sum() / 1000.0),
        }
    return out
