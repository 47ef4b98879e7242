"""Modulated deformable convolution (DCNv2) in plain torch, chunked so memory stays bounded.

Semantics are torchvision's ``deform_conv2d`` with a mask: for output pixel ``(ho, wo)`` and kernel
tap ``k = i·kw + j`` the input is sampled bilinearly at
``(ho·stride − pad + i·dil + Δy_k, wo·stride − pad + j·dil + Δx_k)``, where the offsets are laid out
``[B, 2·kh·kw, Ho, Wo]`` as (Δy, Δx) pairs per tap; corners outside the image count as zero; the
sample is multiplied by the mask ``[B, kh·kw, Ho, Wo]`` and the result is an ordinary convolution
of those samples with ``weight``.

A direct implementation builds all ``C·kh·kw`` sampled columns for the whole image at once (about
0.8 GB for one 7×7 branch at 256² and 64 channels; several GB per 1024² BiRefNet forward). Here the
columns are built for a band of output rows at a time (``max_chunk_bytes``) and multiplied into
the output right away, so the extra memory is one band. Sampling runs through ``grid_sample``
(CPU, CUDA and MPS alike) in float32 even when the network runs in half precision, because the
sampling positions need more precision than fp16 has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CHUNK_BYTES = 48 * 1024 * 1024


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


_GRIDS: dict = {}


def _base_grid(device, geometry, out_size, sample_size):
    """Undeformed sampling positions, normalised for grid_sample as (x, y) pairs ``(taps, Ho, Wo, 2)``,
    and the pixel → normalised scale ``(2,)``; cached, so a GPU forward never waits on building them."""
    key = (str(device), geometry, out_size, sample_size)
    found = _GRIDS.get(key)
    if found is not None:
        return found
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    (out_h, out_w), (sample_h, sample_w) = out_size, sample_size
    scale_y, scale_x = 2.0 / (sample_h - 1), 2.0 / (sample_w - 1)
    tap_y = (torch.arange(kh) * dh).repeat_interleave(kw).double()
    tap_x = (torch.arange(kw) * dw).repeat(kh).double()
    base_y = (torch.arange(out_h) * sh - ph).double()
    base_x = (torch.arange(out_w) * sw - pw).double()
    grid_y = (tap_y.view(-1, 1, 1) + base_y.view(1, -1, 1)) * scale_y - 1.0  # (taps, Ho, 1)
    grid_x = (tap_x.view(-1, 1, 1) + base_x.view(1, 1, -1)) * scale_x - 1.0  # (taps, 1, Wo)
    base = torch.stack(torch.broadcast_tensors(grid_x, grid_y), -1).float().to(device)
    scale = torch.tensor([scale_x, scale_y], dtype=torch.float32).to(device)
    if len(_GRIDS) >= 32:
        _GRIDS.clear()
    _GRIDS[key] = (base, scale)
    return base, scale


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    max_chunk_bytes: int | None = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """DCNv2 forward. Returns ``(B, O, Ho, Wo)`` in channels-last memory, dtype of ``x``.

    ``max_chunk_bytes=None`` builds all columns at once (for tests: chunked must equal unchunked).
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    expected_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    expected_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if (out_h, out_w) != (expected_h, expected_w) or offset.shape[1] != 2 * taps:
        raise ValueError(
            f"offset shape {tuple(offset.shape)} does not fit input {tuple(x.shape)} and "
            f"kernel {kh}x{kw} (expected (B, {2 * taps}, {expected_h}, {expected_w}))"
        )
    out_dtype = x.dtype
    sample = x.float()
    # grid_sample(align_corners=True) cannot address a side of length 1; a zero row/column
    # beyond it changes nothing, since outside counts as zero anyway.
    if height == 1 or width == 1:
        sample = F.pad(sample, (0, int(width == 1), 0, int(height == 1)))
    sample_h, sample_w = sample.shape[-2:]
    device = x.device

    base, scale = _base_grid(device, (kh, kw, sh, sw, ph, pw, dh, dw), (out_h, out_w), (sample_h, sample_w))
    # offsets as (Δx, Δy) pairs in the last dimension (one copy), so each band's grid is one addcmul
    offset_xy = offset.float().view(batch, taps, 2, out_h, out_w).flip(2).permute(0, 1, 3, 4, 2)

    w2d = weight.reshape(out_channels, channels * taps)
    result = torch.empty(batch, out_h, out_w, out_channels, device=device, dtype=out_dtype)
    col_bytes_per_row = channels * taps * out_w * 4
    if max_chunk_bytes is None:
        rows_per_chunk = out_h
    else:
        rows_per_chunk = max(1, min(out_h, max_chunk_bytes // max(col_bytes_per_row, 1)))
    if mask is not None:
        mask = mask.view(batch, taps, out_h, out_w)

    for b in range(batch):
        image = sample[b : b + 1]
        for r0 in range(0, out_h, rows_per_chunk):
            r1 = min(out_h, r0 + rows_per_chunk)
            rows = r1 - r0
            grid = torch.addcmul(base[:, r0:r1], offset_xy[b, :, r0:r1], scale)  # (taps, rows, Wo, 2)
            cols = _sample(image, grid.view(1, taps * rows, out_w, 2))  # (1, C, taps·rows, Wo)
            cols = cols.view(channels, taps, rows * out_w)
            if mask is not None:
                cols.mul_(mask[b, :, r0:r1].reshape(1, taps, rows * out_w).float())
            cols = cols.view(channels * taps, rows * out_w).to(out_dtype)
            target = result[b, r0:r1].view(rows * out_w, out_channels)
            if bias is not None:
                torch.addmm(bias.to(out_dtype), cols.t(), w2d.t(), out=target)
            else:
                torch.mm(cols.t(), w2d.t(), out=target)
    return result.permute(0, 3, 1, 2)


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling, zero outside; on a backend without ``grid_sample`` (older MPS), on the CPU."""
    try:
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    except (NotImplementedError, RuntimeError) as exc:
        if image.device.type != "mps" or "implemented" not in str(exc):
            raise
        out = F.grid_sample(
            image.cpu(), grid.cpu(), mode="bilinear", padding_mode="zeros", align_corners=True
        )
        return out.to(image.device)


def set_chunk_bytes(model: nn.Module, max_chunk_bytes: int | None) -> None:
    """Band size of every deformable convolution in ``model`` (bigger bands: fewer, larger kernels)."""
    for module in model.modules():
        if isinstance(module, DeformableConv2d):
            module.max_chunk_bytes = max_chunk_bytes


class DeformableConv2d(nn.Module):
    """BiRefNet's deformable convolution: offsets and mask predicted from the input itself.

    Submodule names (``offset_conv``, ``modulator_conv``, ``regular_conv``) follow the checkpoints.
    Offsets and mask come from one fused convolution (their weights concatenated at ``prepare``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        taps = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, stride, padding, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, stride, padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.max_chunk_bytes: int | None = DEFAULT_CHUNK_BYTES
        # set by prepare(): fused offset+mask conv, and the output weight with a following BN folded in
        self.register_buffer("_om_weight", None, persistent=False)
        self.register_buffer("_om_bias", None, persistent=False)
        self.register_buffer("_weight", None, persistent=False)
        self.register_buffer("_bias", None, persistent=False)

    def prepare(self, bn: nn.BatchNorm2d | None = None) -> None:
        self._om_weight = torch.cat([self.offset_conv.weight, self.modulator_conv.weight]).detach().clone()
        self._om_bias = torch.cat([self.offset_conv.bias, self.modulator_conv.bias]).detach().clone()
        weight = self.regular_conv.weight.detach()
        bias = self.regular_conv.bias.detach() if self.regular_conv.bias is not None else None
        if bn is not None:
            weight, bias = fold_batchnorm(weight, bias, bn)
        self._weight, self._bias = weight.contiguous(), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._om_weight is None:
            self.prepare()
        taps = self.kernel_size * self.kernel_size
        om = F.conv2d(x, self._om_weight, self._om_bias, self.stride, self.padding)
        offset, modulator = om[:, : 2 * taps], om[:, 2 * taps :]
        mask = 2.0 * torch.sigmoid(modulator.float())
        return deform_conv2d(
            x,
            offset,
            mask,
            self._weight,
            self._bias,
            self.stride,
            self.padding,
            max_chunk_bytes=self.max_chunk_bytes,
        )


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    """Weights of one convolution equal to ``bn(conv(x))`` in eval mode (computed in float64 on
    the CPU: MPS has no float64)."""

    def f64(t):
        return t.detach().cpu().double()

    scale = f64(bn.weight) / torch.sqrt(f64(bn.running_var) + bn.eps)
    folded_w = f64(weight) * scale.view(-1, *([1] * (weight.dim() - 1)))
    base = f64(bias) if bias is not None else torch.zeros_like(scale)
    folded_b = (base - f64(bn.running_mean)) * scale + f64(bn.bias)
    return folded_w.to(weight.device, weight.dtype), folded_b.to(weight.device, weight.dtype)
