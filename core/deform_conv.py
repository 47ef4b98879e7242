"""Modulated deformable convolution (DCNv2) in plain torch, chunked so memory stays bounded.

Semantics are torchvision's ``deform_conv2d`` with a mask: for output pixel ``(ho, wo)`` and kernel
tap ``k = i·kw + j`` the input is sampled bilinearly at
``(ho·stride − pad + i·dil + Δy_k, wo·stride − pad + j·dil + Δx_k)``, where the offsets are laid out
``[B, 2·kh·kw, Ho, Wo]`` as (Δy, Δx) pairs per tap; corners outside the image count as zero; the
sample is multiplied by the mask ``[B, kh·kw, Ho, Wo]`` and the result is an ordinary convolution
of those samples with ``weight``.

How: the sampling is done in channels-last form. For every (pixel, tap) the four corner indices
into the image seen as an ``(H·W, C)`` table and the four bilinear weights (times the mask, zero
for a corner outside) are computed once and shared by all channels; ``embedding_bag`` (mode
``sum`` with per-sample weights) then gathers the four corner rows as contiguous C-vectors and
sums them, writing one row ``(pixel, tap·C + c)`` of the column matrix the matmul reads directly
(the weight is reordered to ``(O, kh, kw, C)`` to match). On the CPU that is one pass over
contiguous rows per sample instead of ``grid_sample``'s per-channel scattered reads plus a separate
mask pass over the columns (the sampling of BiRefNet's 7×7 branch at 256² took 2–3× less CPU time
in a single-thread profile; ``tests/bench/bench_model.py --compare`` times both in the model).
CUDA and MPS run the same operations (MPS without ``embedding_bag``: ``index_select`` and a sum).

A direct implementation builds all ``C·kh·kw`` sampled columns for the whole image at once (about
0.8 GB for one 7×7 branch at 256² and 64 channels; several GB per 1024² BiRefNet forward). Here the
columns are built for a band of output rows at a time (``max_chunk_bytes``) and multiplied into
the output right away, so the extra memory is one band. Positions and weights are computed in
float32 and the image is sampled in float32 even when the network runs in half precision, because
the sampling positions need more precision than fp16 has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# One band's columns stay well under 32 MiB: glibc's malloc serves larger blocks by mmap, fresh zeroed
# pages every band (page faults cost a 48 MB band about a quarter of its time); below its mmap threshold
# a freed band's memory is reused by the next one. 16 MB bands were as fast as 32 MB ones (the matmul
# keeps its rate down to ~1000-row bands) and hold less memory at the forward's peak.
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


_BASES: dict = {}


def _base_positions(device, geometry, out_size):
    """Undeformed sampling positions ``(Ho, Wo, taps, 2)`` as (y, x), shifted by +1 into the table's
    zero frame, float32 on ``device``; cached, so a GPU forward never waits on building them."""
    key = (str(device), geometry, out_size)
    found = _BASES.get(key)
    if found is not None:
        return found
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    out_h, out_w = out_size
    tap_y = (torch.arange(kh) * dh - ph + 1).repeat_interleave(kw)
    tap_x = (torch.arange(kw) * dw - pw + 1).repeat(kh)
    pos_y = (torch.arange(out_h) * sh).view(-1, 1, 1) + tap_y.view(1, 1, -1)  # (Ho, 1, taps)
    pos_x = (torch.arange(out_w) * sw).view(1, -1, 1) + tap_x.view(1, 1, -1)  # (1, Wo, taps)
    found = torch.stack(torch.broadcast_tensors(pos_y, pos_x), -1).float().to(device)
    if len(_BASES) >= 32:
        _BASES.clear()
    _BASES[key] = found
    return found


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
    device = x.device
    # The image as a (rows·cols, C) table per batch item, framed by zero rows and columns (one
    # before, two after). Positions are shifted by +1 into that frame and clamped to [0, size + 1]:
    # all four corners of a sample then lie inside the table, and every corner outside the image
    # reads a zero (as does everything at or beyond one pixel outside), so no per-corner test.
    padded_w = width + 3
    # written in place (no padded copy of the image besides the table itself)
    table = torch.empty(batch, height + 3, padded_w, channels, device=device)
    table[:, :1].zero_()
    table[:, height + 1 :].zero_()
    table[:, 1 : height + 1, :1].zero_()
    table[:, 1 : height + 1, width + 1 :].zero_()
    table[:, 1 : height + 1, 1 : width + 1].copy_(x.permute(0, 2, 3, 1))
    table = table.view(batch, (height + 3) * padded_w, channels)
    base = _base_positions(device, (kh, kw, sh, sw, ph, pw, dh, dw), (out_h, out_w))
    plan = _SamplingPlan(device, height, width)
    # (Δy, Δx) of every (row, column, tap) in the last dimension; free for a channels-last offset
    offset_yx = offset.permute(0, 2, 3, 1).view(batch, out_h, out_w, taps, 2)
    if mask is not None:
        mask = mask.permute(0, 2, 3, 1).view(batch, out_h, out_w, taps, 1)
    # weight in the column order (tap, channel): (taps·C, O)
    w2d = weight.permute(0, 2, 3, 1).reshape(out_channels, taps * channels).t().to(out_dtype)

    result = torch.empty(batch, out_h, out_w, out_channels, device=device, dtype=out_dtype)
    # a band's memory: its columns (C floats per sample) and the sampling plan (positions, four
    # int64 indices and four weights per sample, at most ~80 bytes while it is being built)
    col_bytes_per_row = (channels * 4 + 80) * taps * out_w
    if max_chunk_bytes is None:
        rows_per_chunk = out_h
    else:
        rows_per_chunk = max(1, min(out_h, max_chunk_bytes // max(col_bytes_per_row, 1)))

    for b in range(batch):
        for r0 in range(0, out_h, rows_per_chunk):
            r1 = min(out_h, r0 + rows_per_chunk)
            rows = r1 - r0
            band_mask = mask[b, r0:r1] if mask is not None else None
            cols = _band_columns(table[b], base[r0:r1] + offset_yx[b, r0:r1].float(), band_mask, plan)
            cols = cols.view(rows * out_w, taps * channels).to(out_dtype)
            target = result[b, r0:r1].view(rows * out_w, out_channels)
            if bias is not None:
                torch.addmm(bias.to(out_dtype), cols, w2d, out=target)
            else:
                torch.mm(cols, w2d, out=target)
    return result.permute(0, 3, 1, 2)


class _SamplingPlan:
    """The constants of the bilinear sampling into the framed (rows·cols, C) table."""

    def __init__(self, device, height: int, width: int):
        padded_w = width + 3
        self.upper = (height + 1.0, width + 1.0)
        self.row_step = torch.tensor(float(padded_w), device=device)
        # corner j of a sample whose (y0, x0) corner is table row r is row r + step[j]; int32 indices
        # (half the traffic of int64; exact while the table has < 2²⁴ rows, as the float row is)
        self.step = torch.tensor([0, 1, padded_w, padded_w + 1], device=device, dtype=torch.int32)


def _band_columns(table: torch.Tensor, pos: torch.Tensor, mask, plan: _SamplingPlan) -> torch.Tensor:
    """One band's columns: ``pos`` (rows, Wo, taps, 2) sample positions (base grid + offsets, in the
    table's frame), ``mask`` (rows, Wo, taps, 1) or None → (rows·Wo·taps, C) bilinear samples.

    Every op here is over (sample) or (sample, corner) and runs once per band, so each is written
    to vectorise: scalar clamps per axis, and the four corner weights written column by column into
    one (sample, 4) tensor (a broadcast outer product with 2-wide inner dimensions took longer than
    the gather it feeds)."""
    samples = pos.shape[0] * pos.shape[1] * pos.shape[2]
    if plan.upper[0] == plan.upper[1]:
        pos.clamp_(0.0, plan.upper[0])
    else:
        pos[..., 0].clamp_(0.0, plan.upper[0])
        pos[..., 1].clamp_(0.0, plan.upper[1])
    low = pos.floor()
    frac = pos.sub_(low).view(samples, 2)
    first = torch.addcmul(low[..., 1], low[..., 0], plan.row_step)  # table row of corner (y0, x0)
    index = first.view(samples, 1).to(torch.int32) + plan.step  # (samples, 4)
    del low, first
    # corner weights (1−fy)(1−fx), (1−fy)fx, fy(1−fx), fy·fx, the mask folded into the row weights
    frac_y, frac_x = frac[:, 0], frac[:, 1]
    if mask is not None:
        mask = mask.reshape(samples)
        high_y = frac_y * mask
        low_y = mask - high_y
    else:
        high_y = frac_y.contiguous()
        low_y = 1.0 - frac_y
    low_x = 1.0 - frac_x
    corner_w = torch.empty(samples, 4, device=pos.device)
    torch.mul(low_y, low_x, out=corner_w[:, 0])
    torch.mul(low_y, frac_x, out=corner_w[:, 1])
    torch.mul(high_y, low_x, out=corner_w[:, 2])
    torch.mul(high_y, frac_x, out=corner_w[:, 3])
    del pos, frac, frac_y, frac_x, high_y, low_y, low_x
    return _gather_sum(table, index, corner_w)


def _gather_sum(table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out[n] = Σ_j weights[n, j] · table[index[n, j]]`` — ``(N, C)``; on a backend without
    ``embedding_bag`` (older MPS), the same sum from ``index_select``."""
    try:
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")
    except (NotImplementedError, RuntimeError) as exc:
        if table.device.type != "mps" or "implemented" not in str(exc):
            raise
        picked = table.index_select(0, index.view(-1)).view(*index.shape, -1)
        return torch.einsum("njc,nj->nc", picked, weights)


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
        mask = torch.sigmoid(modulator.float()).mul_(2.0)
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
