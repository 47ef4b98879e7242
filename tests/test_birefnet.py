"""BiRefNet pieces and public API, quick: Swin window attention, patch orders, predict_matte."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from maskd.core import birefnet
from maskd.core.errors import InputError
from maskd.core.swin import SwinBlock, _WindowPlan


def _naive_swin_block(block: SwinBlock, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The official detection-style block, written plainly: pad after norm1, roll, partition,
    attention with bias (+ region mask on shifted windows), reverse, crop."""
    b, _, c = x.shape
    ws, shift = block.window, block.shift
    y = block.norm1(x).view(b, height, width, c)
    pad_b, pad_r = -height % ws, -width % ws
    y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = height + pad_b, width + pad_r
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))
    win = y.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
    attn = block.attn
    heads = attn.num_heads
    n = ws * ws
    q, k, v = attn.qkv(win).view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    table = attn.relative_position_bias_table
    bias = table[attn.relative_position_index.view(-1)].view(n, n, heads).permute(2, 0, 1)
    logits = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1) + bias
    if shift:
        img = torch.zeros(hp, wp)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img[hs, wsl] = cnt
                cnt += 1
        mw = img.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, n)
        mask = (mw[:, None, :] != mw[:, :, None]).float() * -1e9
        logits = logits.view(b, -1, heads, n, n) + mask[None, :, None]
        logits = logits.view(-1, heads, n, n)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    out = attn.proj(out).view(b, hp // ws, wp // ws, ws, ws, c)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    out = out[:, :height, :width].reshape(b, height * width, c)
    x = x + out
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("height,width,shift", [(14, 14, 0), (14, 14, 3), (9, 17, 3), (16, 11, 0), (5, 6, 3)])
def test_swin_block_matches_plain_implementation(height, width, shift, monkeypatch):
    monkeypatch.setattr("maskd.core.swin.MLP_BAND_VALUES", 1)  # MLP in bands of 256 tokens: several here
    monkeypatch.setattr("maskd.core.swin.ATTN_BAND_VALUES", 49 * 3 * 24 * 2)  # two windows per band
    torch.manual_seed(height * 31 + width + shift)
    block = SwinBlock(dim=24, num_heads=3, window=7, shift=shift)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        block.attn.prepare()
        x = torch.randn(2, height * width, 24)
        plan = _WindowPlan(2, height, width, 7, shift, x.device)
        ours = block(x.reshape(-1, 24), plan).view(2, height * width, 24)
        ref = _naive_swin_block(block, x, height, width)
    assert (ours - ref).abs().max().item() < 1e-4


def test_patch_orders_stack_as_documented():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)  # 2×3 grid of 2×2 patches
    new = birefnet.image_to_patches(x, 2, 3, "c-hg-wg")
    old = birefnet.image_to_patches(x, 2, 3, "wg-hg-c")
    for c in range(3):
        for hg in range(2):
            for wg in range(3):
                patch = x[:, c, hg * 2 : (hg + 1) * 2, wg * 2 : (wg + 1) * 2]
                assert torch.equal(new[:, c * 6 + hg * 3 + wg], patch)
                assert torch.equal(old[:, wg * 6 + hg * 3 + c], patch)
    with pytest.raises(ValueError):
        birefnet.image_to_patches(x, 2, 3, "hg-wg-c")


@pytest.fixture(scope="module")
def lite_model(lite_weights):
    return birefnet.load_model(str(lite_weights), variant="lite")


def test_loaded_model_api(lite_model):
    assert lite_model.preset.name == "lite" and lite_model.patch_order == "wg-hg-c"
    assert not lite_model.training
    with torch.inference_mode():
        logits = lite_model(torch.zeros(1, 3, 64, 96))
    assert logits.shape == (1, 1, 64, 96) and logits.dtype == torch.float32
    with pytest.raises(InputError, match="multiples of 32"):
        lite_model(torch.zeros(1, 3, 60, 64))


def test_predict_matte_sizes_and_range(lite_model):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (150, 97, 3), dtype=np.uint8)
    native = birefnet.predict_matte_native(lite_model, rgb, size=(128, 96))
    assert native.shape == (128, 96) and native.dtype == np.float32
    assert 0.0 <= native.min() and native.max() <= 1.0
    lite_model.resolution = (96, 64)  # what predict_matte uses instead of the preset's 1024²
    try:
        matte = birefnet.predict_matte(lite_model, rgb)
    finally:
        lite_model.resolution = None
    assert matte.shape == (150, 97) and matte.dtype == np.float32
    assert 0.0 <= matte.min() and matte.max() <= 1.0
    with pytest.raises(InputError):
        birefnet.predict_matte_native(lite_model, rgb, size=(100, 96))
    with pytest.raises(InputError):
        birefnet.predict_matte(lite_model, rgb.astype(np.float32))


def test_preprocessing_is_the_official_one(golden):
    """At the model size the input is only normalised: the golden generator's normalise()."""
    img = golden.make_image(64, 96)
    ours = birefnet.preprocess(img, (64, 96)).numpy()
    assert np.allclose(ours, golden.normalise(img), atol=1e-6)
    # resizing goes through PIL's bilinear filter on the 8-bit image, as torchvision's Resize does
    from PIL import Image

    expected = np.asarray(Image.fromarray(img).resize((48, 32), Image.BILINEAR))
    assert np.allclose(birefnet.preprocess(img, (32, 48)).numpy(), golden.normalise(expected), atol=1e-6)


def test_patch_order_override_changes_the_result(lite_weights):
    a = birefnet.load_model(str(lite_weights), variant="lite")
    b = birefnet.load_model(str(lite_weights), variant="lite", patch_order="c-hg-wg")
    assert b.patch_order == "c-hg-wg"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert (a(x) - b(x)).abs().mean() > 1e-3


def test_batch_equals_single_images(lite_model):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 64, 96, generator=gen)
    with torch.inference_mode():
        both = lite_model(x)
        one = torch.cat([lite_model(x[:1]), lite_model(x[1:])])
    assert (both - one).abs().max().item() < 1e-3


def test_session_serves_the_model(lite_weights):
    from maskd.core.session import SessionSpec, open_session

    spec = SessionSpec(weights=str(lite_weights), variant="lite", device="cpu", resolution=64)
    session = open_session(spec)
    rgb = np.random.default_rng(1).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    matte = session.matte(rgb)
    assert matte.shape == (64, 64) and matte.dtype == np.float32
    info = session.describe()
    assert info["name"] == "lite" and info["device"] == "cpu" and info["dtype"] == "float32"
    session.unload()
