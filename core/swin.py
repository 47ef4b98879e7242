"""Swin Transformer v1 backbone (detection style), state-dict names as in the BiRefNet checkpoints.

Detection style means: the token grid is padded (with zeros, after ``norm1``) up to a multiple of
the window size, padded tokens take part in attention as the official code lets them, shifted
windows are masked, and every stage's output gets its own LayerNorm (``norm0``..``norm3``).

Speed: tokens stay in one ``(B·H·W, C)`` matrix; cyclic shift, padding and window partition are one
``index_select`` with a precomputed index (and one back), window attention runs through
``scaled_dot_product_attention`` with the relative-position bias (precomputed once per block) as
additive mask, and only the windows that straddle the shift boundary get the shift mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int

    @property
    def channels(self) -> list[int]:
        """Output channels of the four stages."""
        return [self.embed_dim * 2**i for i in range(4)]


SWIN_CONFIGS = {
    "swin_v1_t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_v1_s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_v1_b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_v1_l": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}

BACKBONE_NAMES = {"swin_v1_t": "Swin-T", "swin_v1_s": "Swin-S", "swin_v1_b": "Swin-B", "swin_v1_l": "Swin-L"}


def relative_position_index(window: int) -> torch.Tensor:
    """``(N, N)`` index into the bias table for every pair of tokens of a window (N = window²)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


class _WindowPlan:
    """Where each window token comes from, for one (batch, height, width, shift) — cached.

    Window rows are ordered (window, batch, token), with the windows that need the shift mask
    (last window row and column of the shifted grid) after all others, so attention runs on two
    contiguous slices: ``interior`` with the bias alone, ``boundary`` with bias + shift mask.
    """

    def __init__(self, batch: int, height: int, width: int, window: int, shift: int, device):
        hp, wp = -(-height // window) * window, -(-width // window) * window
        nwh, nww = hp // window, wp // window
        # padded-grid coordinates of every token of every window, in the shifted frame
        wy, wx = torch.meshgrid(torch.arange(nwh), torch.arange(nww), indexing="ij")
        ty, tx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        sy = wy.reshape(-1, 1) * window + ty.reshape(1, -1)  # (nW, N) shifted-frame rows
        sx = wx.reshape(-1, 1) * window + tx.reshape(1, -1)
        boundary = (
            ((wy == nwh - 1) | (wx == nww - 1)).reshape(-1)
            if shift
            else torch.zeros(nwh * nww, dtype=torch.bool)
        )
        order = torch.cat([torch.nonzero(~boundary).flatten(), torch.nonzero(boundary).flatten()])
        sy, sx = sy[order], sx[order]
        oy, ox = (sy + shift) % hp, (sx + shift) % wp  # roll(-shift) undone: source position
        real = (oy < height) & (ox < width)
        flat = (oy * width + ox).clamp(max=height * width - 1)
        hw = height * width
        batch_offsets = torch.arange(batch).view(1, batch, 1) * hw
        gather = flat.unsqueeze(1) + batch_offsets  # (nW, B, N)
        self.gather = gather.reshape(-1).to(device)
        pad_rows = torch.nonzero((~real).unsqueeze(1).expand_as(gather).reshape(-1)).flatten()
        self.pad_rows = pad_rows.to(device) if pad_rows.numel() else None
        # inverse: for each real token (b, y, x), its row among the window rows
        rows = torch.arange(gather.numel()).view(gather.shape)
        inverse = torch.empty(batch * hw, dtype=torch.long)
        real_b = real.unsqueeze(1).expand_as(gather)
        inverse[gather[real_b]] = rows[real_b]
        self.inverse = inverse.to(device)
        self.windows = nwh * nww
        self.interior = int((~boundary).sum()) * batch  # rows of the window batch without shift mask
        self.boundary_mask = None
        if shift:
            # region id of every shifted-frame position: 0 inside, 1/2 in the wrapped-around strips
            def region(coord, size):
                return (coord >= size - window).long() + (coord >= size - shift).long()

            ids = region(sy, hp) * 3 + region(sx, wp)  # (nW, N)
            ids = ids[int((~boundary).sum()) :]
            mask = torch.zeros(ids.shape[0], ids.shape[1], ids.shape[1])
            mask.masked_fill_(ids[:, :, None] != ids[:, None, :], float("-inf"))
            self.boundary_mask = mask.unsqueeze(1).repeat_interleave(batch, dim=0).to(device)  # (nB·B,1,N,N)


MLP_BAND_VALUES = 8 * 1024 * 1024  # hidden activations per MLP band (32 MB in fp32)
ATTN_BAND_VALUES = 8 * 1024 * 1024  # q, k, v values per band of windows


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("_bias", None, persistent=False)

    def prepare(self) -> None:
        """Gather the relative-position bias once (after weights are loaded)."""
        n = self.window * self.window
        table = self.relative_position_bias_table.detach()
        bias = table[self.relative_position_index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        self._bias = bias.unsqueeze(0).contiguous()  # (1, heads, N, N)

    def forward(self, windows: torch.Tensor, plan: _WindowPlan) -> torch.Tensor:
        """``windows``: ``(R, N, C)`` window tokens in ``plan``'s order → same shape.

        Runs on bands of windows (q, k, v and the attention output exist for one band at a time)
        and writes the projection straight into the result.
        """
        rows, n, c = windows.shape
        heads = self.num_heads
        bias = self._bias if self._bias is not None else self._fresh_bias()
        bias = bias.to(windows.dtype)
        segments = [(0, rows, bias)]
        if plan.boundary_mask is not None:  # windows across the shift boundary: bias + shift mask
            cut = plan.interior
            segments = [(0, cut, bias), (cut, rows, bias + plan.boundary_mask.to(windows.dtype))]
        out = torch.empty_like(windows)
        flat_out = out.view(rows * n, c)
        step = max(1, ATTN_BAND_VALUES // (n * 3 * c))
        weight_t, proj_bias = self.proj.weight.t(), self.proj.bias
        for start, stop, mask in segments:
            for r0 in range(start, stop, step):
                r1 = min(stop, r0 + step)
                qkv = self.qkv(windows[r0:r1]).view(r1 - r0, n, 3, heads, c // heads)
                q, k, v = qkv.permute(2, 0, 3, 1, 4)
                band_mask = mask if mask.shape[0] == 1 else mask[r0 - start : r1 - start]
                attended = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask)
                attended = attended.transpose(1, 2).reshape((r1 - r0) * n, c)
                torch.addmm(proj_bias, attended, weight_t, out=flat_out[r0 * n : r1 * n])
        return out

    def _fresh_bias(self) -> torch.Tensor:
        self.prepare()
        return self._bias


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, plan: _WindowPlan) -> torch.Tensor:
        """``x``: ``(B·H·W, C)`` tokens, row-major per image."""
        c = x.shape[-1]
        windows = self.norm1(x).index_select(0, plan.gather)
        if plan.pad_rows is not None:
            windows.index_fill_(0, plan.pad_rows, 0.0)
        n = self.window * self.window
        attended = self.attn(windows.view(-1, n, c), plan).view(-1, c)
        del windows
        x = x + attended.index_select(0, plan.inverse)
        del attended
        # the MLP's hidden layer is 4× the tokens: run it on bands of tokens, adding in place
        # (x is this block's own new tensor), so only one band of it exists at a time
        step = max(256, MLP_BAND_VALUES // (4 * c))
        for r0 in range(0, x.shape[0], step):
            band = x[r0 : r0 + step]
            band += self.mlp(self.norm2(band))
        return x


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        c = x.shape[-1]
        x = x.view(batch, height, width, c)
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
            height, width = height + height % 2, width + width % 2
        # (b, i, r, j, s, c) = x[b, 2i+r, 2j+s, c]; channel blocks ordered (0,0), (1,0), (0,1), (1,1)
        x = x.view(batch, height // 2, 2, width // 2, 2, c).permute(0, 1, 3, 4, 2, 5)
        x = x.reshape(-1, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, downsample: bool):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 4):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch or w % self.patch:
            x = F.pad(x, (0, -w % self.patch, 0, -h % self.patch))
        return self.proj(x)


class SwinTransformer(nn.Module):
    """Returns the four stage outputs as ``(B, C_i, H/2^(i+2), W/2^(i+2))`` (channels-last memory)."""

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(dim, config.depths[i], config.num_heads[i], config.window_size, downsample=i < 3)
            for i, dim in enumerate(config.channels)
        )
        for i, dim in enumerate(config.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self._plans: dict = {}

    def prepare(self) -> None:
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.prepare()
        self._plans.clear()

    def _plan(self, batch, height, width, shift, device) -> _WindowPlan:
        key = (batch, height, width, self.config.window_size, shift, str(device))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 64:
                self._plans.clear()
            plan = _WindowPlan(batch, height, width, self.config.window_size, shift, device)
            self._plans[key] = plan
        return plan

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        batch, c, height, width = x.shape
        x = self.patch_embed.norm(x.permute(0, 2, 3, 1).reshape(-1, c))
        outs = []
        for i, stage in enumerate(self.layers):
            for block in stage.blocks:
                x = block(x, self._plan(batch, height, width, block.shift, x.device))
            norm = getattr(self, f"norm{i}")
            outs.append(norm(x).view(batch, height, width, -1).permute(0, 3, 1, 2))
            if stage.downsample is not None:
                x = stage.downsample(x, batch, height, width)
                height, width = (height + 1) // 2, (width + 1) // 2
        return outs


def build_swin(name: str) -> SwinTransformer:
    return SwinTransformer(SWIN_CONFIGS[name])
