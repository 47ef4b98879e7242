"""Golden tests: our BiRefNet reproduces the official implementation's logits.

Generated weights in the official layout (``../shared/reference/birefnet``) load strictly; for both
decoder patch orders the final logits match the official model's (computed in float64 elsewhere)
within the tolerances stored beside them. A wrong patch order, interpolation mode, missing branch
or DCN sampling rule cannot pass. The encoder runs once per model; each order decodes once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from maskd.core.birefnet import load_model
from maskd.core.presets import PATCH_ORDERS

from tests.helpers import REFERENCE

pytestmark = pytest.mark.slow


def _golden_case(golden, weights_path, variant: str, size: int):
    meta_path = REFERENCE / f"golden-{variant}-{size}.json"
    if not meta_path.exists():
        pytest.skip(f"{meta_path} not found (set MASKD_SHARED)")
    meta = json.loads(meta_path.read_text())
    stored = np.load(REFERENCE / f"golden-{variant}-{size}.npz")
    model = load_model(str(weights_path), variant=variant)
    assert model.preset.name == variant
    x = torch.from_numpy(golden.normalise(golden.make_image(size, size)))
    results = {}
    with torch.inference_mode():
        x = x.contiguous(memory_format=torch.channels_last)
        feats = model.encode(x)
        for order in PATCH_ORDERS:
            results[order] = model.decode(x, feats, order).float().numpy()
    return meta, stored, results


def _check(meta, stored, results):
    for order in PATCH_ORDERS:
        ours, ref = results[order], stored[f"logits_{order}"]
        assert ours.shape == ref.shape == (1, 1, meta["height"], meta["width"])
        err = np.abs(ours - ref)
        tol = meta["orders"][order]
        assert err.max() <= tol["tolerance_max"], (order, err.max(), tol["tolerance_max"])
        assert err.mean() <= tol["tolerance_mean"], (order, err.mean(), tol["tolerance_mean"])
    # the orders really differ, so passing both is not an accident
    assert np.abs(results["wg-hg-c"] - results["c-hg-wg"]).mean() > 0.1


def test_lite_1024_matches_official(golden, lite_weights):
    _check(*_golden_case(golden, lite_weights, "lite", 1024))


def test_general_512_matches_official(golden, general_weights):
    _check(*_golden_case(golden, general_weights, "general", 512))
