"""The plain-torch DCNv2 against a direct per-pixel implementation of the formula."""

from __future__ import annotations

import math

import pytest
import torch
from maskd.core.deform_conv import DeformableConv2d, deform_conv2d, fold_batchnorm


def _bilinear_zero_outside(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's rule: nothing beyond one pixel outside; each corner outside counts as zero."""
    c, h, w = img.shape
    out = torch.zeros(c, dtype=torch.float64)
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return out
    y0, x0 = math.floor(y), math.floor(x)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def reference_dcn(x, offset, mask, weight, bias, stride, pad, dil):
    """out[b,o,ho,wo] = Σ_k Σ_c W[o,c,k] · m_k · bilinear(x_c, p0 + p_k + Δp_k), in float64."""
    x, offset, weight = x.double(), offset.double(), weight.double()
    mask = mask.double() if mask is not None else None
    batch, _, _, _ = x.shape
    out_c, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    out = torch.zeros(batch, out_c, out_h, out_w, dtype=torch.float64)
    for b in range(batch):
        for ho in range(out_h):
            for wo in range(out_w):
                acc = torch.zeros(out_c, dtype=torch.float64)
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        y = ho * stride - pad + i * dil + offset[b, 2 * k, ho, wo].item()
                        xx = wo * stride - pad + j * dil + offset[b, 2 * k + 1, ho, wo].item()
                        sample = _bilinear_zero_outside(x[b], y, xx)
                        if mask is not None:
                            sample = sample * mask[b, k, ho, wo]
                        acc += weight[:, :, i, j] @ sample
                out[b, :, ho, wo] = acc + (bias.double() if bias is not None else 0.0)
    return out


CASES = [  # kernel, stride, padding, dilation, height, width
    (1, 1, 0, 1, 5, 6),
    (3, 1, 1, 1, 7, 6),
    (3, 2, 1, 1, 8, 7),
    (5, 1, 2, 2, 6, 9),
    (7, 1, 3, 1, 6, 5),
    (3, 1, 1, 1, 1, 4),  # a side of one pixel
]


@pytest.mark.parametrize("kernel,stride,pad,dil,height,width", CASES)
def test_matches_per_pixel_formula(kernel, stride, pad, dil, height, width):
    gen = torch.Generator().manual_seed(kernel * 100 + height)
    x = torch.randn(2, 3, height, width, generator=gen)
    out_h = (height + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
    out_w = (width + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
    # large offsets: many samples land partly or wholly outside the image
    offset = torch.randn(2, 2 * kernel * kernel, out_h, out_w, generator=gen) * 3.0
    offset[0, 0, 0, 0] = -1.0  # exactly one pixel outside: zero
    offset[0, 1, 0, 0] = 0.5
    mask = torch.rand(2, kernel * kernel, out_h, out_w, generator=gen) * 2.0
    weight = torch.randn(4, 3, kernel, kernel, generator=gen)
    bias = torch.randn(4, generator=gen)
    ours = deform_conv2d(x, offset, mask, weight, bias, stride, pad, dil)
    ref = reference_dcn(x, offset, mask, weight, bias, stride, pad, dil)
    assert ours.shape == ref.shape
    assert (ours.double() - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("height,width", [(9, 9), (6, 10)])
def test_without_mask_matches_per_pixel_formula(height, width):
    # no mask (unit weights per tap); a square image clamps both axes at once, a wide one per axis
    gen = torch.Generator().manual_seed(height * width)
    x = torch.randn(1, 4, height, width, generator=gen).contiguous(memory_format=torch.channels_last)
    offset = torch.randn(1, 18, height, width, generator=gen) * 3.0
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    ours = deform_conv2d(x, offset, None, weight, None, 1, 1, 1)
    ref = reference_dcn(x, offset, None, weight, None, 1, 1, 1)
    assert (ours.double() - ref).abs().max().item() < 1e-4


def test_zero_offsets_and_unit_mask_is_a_plain_convolution():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5, 11, 13, generator=gen)
    weight = torch.randn(6, 5, 3, 3, generator=gen)
    offset = torch.zeros(1, 18, 11, 13)
    ours = deform_conv2d(x, offset, torch.ones(1, 9, 11, 13), weight, None, 1, 1, 1)
    plain = torch.nn.functional.conv2d(x, weight, padding=1)
    assert (ours - plain).abs().max().item() < 1e-4


def test_chunked_equals_unchunked():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 23, 19, generator=gen)
    offset = torch.randn(2, 98, 23, 19, generator=gen) * 4
    mask = torch.rand(2, 49, 23, 19, generator=gen) * 2
    weight = torch.randn(16, 8, 7, 7, generator=gen)
    whole = deform_conv2d(x, offset, mask, weight, None, 1, 3, 1, max_chunk_bytes=None)
    # one output row per band, and an uneven band size
    row_bytes = (8 * 4 + 80) * 49 * 19  # one output row's columns and sampling plan
    for chunk in (row_bytes, row_bytes * 5):
        banded = deform_conv2d(x, offset, mask, weight, None, 1, 3, 1, max_chunk_bytes=chunk)
        assert torch.equal(banded, whole)


def test_module_folds_batchnorm_exactly_enough():
    gen = torch.Generator().manual_seed(3)
    conv = DeformableConv2d(6, 10, kernel_size=3, padding=1)
    bn = torch.nn.BatchNorm2d(10).eval()
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        bn.weight.copy_(torch.rand(10, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(10, generator=gen))
        bn.running_mean.copy_(torch.randn(10, generator=gen))
        bn.running_var.copy_(torch.rand(10, generator=gen) + 0.5)
    x = torch.randn(1, 6, 9, 8, generator=gen)
    with torch.no_grad():
        offset = conv.offset_conv(x)
        mask = 2 * torch.sigmoid(conv.modulator_conv(x))
        expected = bn(reference_dcn(x, offset, mask, conv.regular_conv.weight, None, 1, 1, 1).float())
        conv.prepare(bn)
        got = conv(x)
    assert (got - expected).abs().max().item() < 1e-4
    w, b = fold_batchnorm(conv.regular_conv.weight, None, bn)
    assert w.shape == conv.regular_conv.weight.shape and b.shape == (10,)


def test_rejects_offsets_of_the_wrong_shape():
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d(
            torch.zeros(1, 2, 8, 8), torch.zeros(1, 17, 8, 8), None, torch.zeros(3, 2, 3, 3), padding=1
        )
