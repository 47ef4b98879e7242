"""The full-resolution refinement on a GPU: ``core.pipeline``'s steps as whole-image torch tensors.

Why: on the CPU the pipeline walks the uncertain band tile by tile with OpenCV (about 1.2 s for a
4000×4000 layer on two cores). On a CUDA or MPS device the same arithmetic runs on whole-image
tensors instead — no tiles, masks where the CPU path copies tiles — so the refinement costs a few
tens of milliseconds beside the model. Every step mirrors its CPU twin (named in each docstring)
and the tests compare the two on torch's CPU device; what only OpenCV does cheaply on the small
model grid (the trimap's elliptic dilation, the hard-mask test) stays there.

OpenCV conventions kept: box filters with mirrored borders (``BORDER_REFLECT_101``), bilinear
sampling with pixel centres aligned and edges replicated (``cv2.resize``/``warpAffine``),
``INTER_AREA`` downsampling (as an exact matrix product) and ``INTER_NEAREST`` upsampling.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from maskd.core import foreground as fgmod
from maskd.core import guided_filter as gf
from maskd.core import imageio
from maskd.core import trimap as trimapmod
from maskd.core.colour import linear_to_srgb_torch

_EPS = 1e-5


def upload(array: np.ndarray, device) -> torch.Tensor:
    """A float32 numpy array (copied if it is not contiguous float32) as a tensor on ``device``."""
    return torch.from_numpy(np.require(array, dtype=np.float32, requirements=["C", "W"])).to(device)


def release(device) -> None:
    """Give cached GPU memory back (after running out of it): ``maskd.core.device.release_memory``."""
    from maskd.core.device import release_memory

    release_memory(device)


# ----------------------------------------------------------------------------- OpenCV's operators


def _reflect_index(n: int, pad: int, device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``pad`` each side, mirrored as BORDER_REFLECT_101."""
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i < n, i, period - i)


_CUMSUM_FROM = 8  # box radius from which running sums (float64) beat direct sums


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)² window of a C×H×W tensor, mirrored borders (``cv2.blur``/``boxFilter``).

    Separable. Small windows: direct sums (a depthwise convolution). Large ones (the colour
    fill's and blur-fusion's radii reach 160 model pixels): running sums in float64, O(1) per
    pixel — float32 differences of large cumulative sums would lose the guided filter's precision.
    MPS has no float64 and keeps the direct sums.
    """
    if r <= 0:
        return x
    if r >= _CUMSUM_FROM and x.device.type != "mps":
        return _box_running(_box_running(x, r, 2), r, 1)
    c = x.shape[0]
    k = 2 * r + 1
    ones = torch.full((c, 1, 1, k), 1.0 / k, dtype=x.dtype, device=x.device)
    y = x.index_select(2, _reflect_index(x.shape[2], r, x.device))
    y = F.conv2d(y.unsqueeze(0), ones, groups=c)[0]
    y = y.index_select(1, _reflect_index(x.shape[1], r, x.device))
    return F.conv2d(y.unsqueeze(0), ones.transpose(2, 3), groups=c)[0]


def _box_running(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """The (2r+1)-wide mean along ``dim`` by differences of float64 running sums."""
    k = 2 * r + 1
    y = x.index_select(dim, _reflect_index(x.shape[dim], r, x.device)).to(torch.float64)
    shape = list(y.shape)
    shape[dim] = 1
    s = torch.cat([torch.zeros(shape, dtype=torch.float64, device=x.device), y.cumsum(dim)], dim)
    n = x.shape[dim]
    return ((s.narrow(dim, k, n) - s.narrow(dim, 0, n)) * (1.0 / k)).to(x.dtype)


def _area_matrix(n_out: int, n_in: int, device) -> torch.Tensor:
    """The n_out×n_in weights of OpenCV's INTER_AREA downsampling along one axis."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), np.float64)
    for d in range(n_out):
        start, end = d * scale, (d + 1) * scale
        for s in range(int(math.floor(start)), min(n_in, int(math.ceil(end)))):
            m[d, s] = (min(end, s + 1) - max(start, s)) / scale
    return upload(m, device)


class Grid:
    """Maps between the full-resolution image (H×W) and the model's grid (h×w), on one device."""

    def __init__(self, full_hw, low_hw, device):
        self.full_hw, self.low_hw = tuple(full_hw), tuple(low_hw)
        (height, width), (h, w) = self.full_hw, self.low_hw
        self._ry = _area_matrix(h, height, device) if h != height else None
        self._rx = _area_matrix(w, width, device).T.contiguous() if w != width else None

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """C×H×W (or H×W) → the grid, as ``cv2.resize(..., INTER_AREA)``."""
        y = x
        if self._ry is not None:
            y = torch.matmul(self._ry, y)
        if self._rx is not None:
            y = torch.matmul(y, self._rx)
        return y

    def up(self, x: torch.Tensor) -> torch.Tensor:
        """C×h×w (or h×w) → full resolution, bilinear with centres aligned and edges replicated."""
        if tuple(x.shape[-2:]) == self.full_hw:
            return x
        y = x if x.dim() == 3 else x.unsqueeze(0)
        y = F.interpolate(y.unsqueeze(0), size=self.full_hw, mode="bilinear", align_corners=False)[0]
        return y if x.dim() == 3 else y[0]

    def up_nearest(self, mask: np.ndarray, device) -> torch.Tensor:
        """A boolean grid mask at full resolution (``INTER_NEAREST``, as ``trimap.upscale_nearest``)."""
        t = upload(mask, device)[None, None]
        return F.interpolate(t, size=self.full_hw, mode="nearest")[0, 0] > 0.5


# ----------------------------------------------------------------------------- guided filter


def guided_coefficients(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """``core.guided_filter.guided_coefficients`` for a 3×H×W guide: 4×H×W ``(a_R, a_G, a_B, b)``."""
    mean_i = box_mean(guide, r)
    mean_p = box_mean(src[None], r)[0]
    cov_ip = box_mean(guide * src[None], r) - mean_i * mean_p[None]
    pairs = torch.stack([guide[i] * guide[j] for i, j in gf.PAIRS])
    return _window_lines(mean_i, mean_p, cov_ip, box_mean(pairs, r), eps, r)


def weighted_guided_coefficients(
    guide: torch.Tensor, src: torch.Tensor, weight: torch.Tensor, r: int, eps: float
) -> torch.Tensor:
    """``core.guided_filter.weighted_guided_coefficients`` for a 3×H×W guide: 4×H×W."""
    w = weight[None]
    inv = 1.0 / box_mean(w, r)[0]
    wg = guide * w
    mean_i = box_mean(wg, r) * inv[None]
    mean_p = (box_mean((w[0] * src)[None], r)[0]) * inv
    cov_ip = box_mean(wg * src[None], r) * inv[None] - mean_i * mean_p[None]
    pairs = torch.stack([wg[i] * guide[j] for i, j in gf.PAIRS])
    return _window_lines(mean_i, mean_p, cov_ip, box_mean(pairs, r) * inv[None], eps, r)


def _window_lines(mean_i, mean_p, cov_ip, m, eps: float, r: int) -> torch.Tensor:
    """``core.guided_filter._window_lines``: each window's colour → alpha line from its moments
    (second colour moments ``m`` in ``gf.PAIRS`` order), box-averaged: 4×H×W."""
    s = [
        (m[k] - mean_i[i] * mean_i[j] + eps) if i == j else (m[k] - mean_i[i] * mean_i[j])
        for k, (i, j) in enumerate(gf.PAIRS)
    ]
    a_r, a_g, a_b = gf.solve_sym3(*s, cov_ip[0], cov_ip[1], cov_ip[2])
    b = mean_p - a_r * mean_i[0] - a_g * mean_i[1] - a_b * mean_i[2]
    return box_mean(torch.stack([a_r, a_g, a_b, b]), r)


def _apply(coef: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    return (coef[0] * guide[0] + coef[1] * guide[1] + coef[2] * guide[2] + coef[3]).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- the image on the device


class DeviceImage:
    """The layer on the device: raw colours, the blend-space colours, and both on the model's grid.

    ``raw``: 3×H×W float32 colours as given (what soft-free pixels keep); ``blend``: composited
    over mid-gray where the input has an alpha channel (the CPU path's ``_tile_pixels``);
    ``grid_blend`` / ``grid_guide``: their area averages on the grid (``pipeline._low_guides``).
    """

    def __init__(self, sub: np.ndarray, grid_hw, linear: bool, device):
        colour, alpha = imageio.split_channels(sub)
        self.device = torch.device(device)
        self.linear = linear
        integer = colour.dtype in (np.uint8, np.uint16)
        scale = imageio.value_scale(colour.dtype)
        if colour.dtype == np.uint16:  # not every device does uint16 arithmetic: widen on the way
            c = torch.from_numpy(np.ascontiguousarray(colour).view(np.int16)).to(self.device)
            c = c.to(torch.int32) & 0xFFFF
        else:
            c = np.require(colour, dtype=None if integer else np.float32, requirements=["C", "W"])
            c = torch.from_numpy(c).to(self.device)
        values = c.to(torch.float32).permute(2, 0, 1)
        if values.shape[0] == 1:
            values = values.expand(3, -1, -1)
        raw = values * (1.0 / scale) if integer else torch.nan_to_num(values.clamp(0.0, 1.0), nan=0.0)
        self.raw = raw.contiguous()
        self.blend = self.raw
        composited = alpha is not None and alpha.min() < imageio.value_scale(alpha.dtype)
        if composited:
            a = upload(imageio.to_float(alpha), self.device)
            self.blend = self.raw * a[None] + 0.5 * (1.0 - a[None])
        self.grid = Grid(self.raw.shape[1:], grid_hw, self.device)
        if integer and not composited:  # the CPU path averages the integer samples (rounded)
            low = torch.round(self.grid.down(values)) * (1.0 / scale)
        else:
            low = self.grid.down(self.blend)
        self.grid_blend = low.clamp(0.0, 1.0)
        self.grid_guide = _srgb(self.grid_blend) if linear else self.grid_blend

    def guide(self) -> torch.Tensor:
        """Full-resolution guide: sRGB-encoded colours (the blend itself unless the input is linear)."""
        return _srgb(self.blend) if self.linear else self.blend


def _srgb(x: torch.Tensor) -> torch.Tensor:
    return linear_to_srgb_torch(x.clamp(0.0, 1.0))


# ----------------------------------------------------------------------------- alpha


def refine_alpha(
    img: DeviceImage,
    matte: np.ndarray,
    *,
    radius: int,
    steps: int,
    rounds: int,
    guide_radius: int,
    guide_eps: float,
    sharpen_radius: int,
    sharpen_eps: float,
    floor: float,
    snap: float,
    hard_sigma: float,
    max_share: float | None,
    isolated_level: float | None,
    band_levels: tuple[float, float] | None = None,
    confidence_floor: float | None = None,
    wide_radius: int = 0,
) -> torch.Tensor:
    """``core.pipeline._refine_alpha`` (upsampling, back-projection, sharpening) on whole tensors.

    ``confidence_floor``: a network's matte — (back-project, sharpen) per round with the
    confidence-weighted two-scale colour fit (``pipeline._sharpen`` with ``weighted``; the wide
    windows of radius ``wide_radius``). None: an exact matte — back-project, then (sharpen,
    back-project) per round with the plain filter."""
    device, grid = img.device, img.grid
    (height, width), (h, w) = grid.full_hw, grid.low_hw
    hard = not trimapmod.is_area_average(matte)
    if hard:
        matte = cv2.GaussianBlur(matte, (0, 0), hard_sigma, borderType=cv2.BORDER_REPLICATE)
    m = upload(matte, device)
    g_low = img.grid_guide
    coef = guided_coefficients(g_low, m, guide_radius, guide_eps)
    if not hard:  # exact offsets (see core.guided_filter.joint_coefficients)
        coef[3] = m - (coef[:3] * g_low).sum(0)
    band_low, fg_low = trimapmod.band_from_matte(matte, radius, *(band_levels or ()))
    band = grid.up_nearest(band_low, device)
    guide = img.guide()
    alpha = torch.where(band, _apply(grid.up(coef), guide), grid.up_nearest(fg_low, device).to(torch.float32))
    if hard:
        steps = rounds = 0
    elif (h, w) == (height, width):
        steps = 0

    def sharpen(alpha):
        q = _sharpened(guide, alpha, sharpen_radius, sharpen_eps, confidence_floor, wide_radius)
        return torch.where(band, q, alpha)

    def back_project(alpha):
        for _ in range(steps):  # core.pipeline._back_project
            weight = alpha * (1.0 - alpha) + floor
            residual = m - grid.down(alpha)
            step = grid.up(residual / grid.down(weight)) * weight
            if max_share is not None:  # None: an exact matte's residual is given in full
                limit = grid.up(residual.abs()) * max_share
                step = torch.maximum(torch.minimum(step, limit), -limit)
            alpha = torch.where(band, (alpha + step).clamp_(0.0, 1.0), alpha)
        return alpha

    if confidence_floor is None:  # core.pipeline._refine_alpha's order for each kind of matte
        for rnd in range(rounds + 1):
            alpha = back_project(sharpen(alpha) if rnd else alpha)
    else:
        for rnd in range(max(1, rounds)):
            alpha = back_project(alpha)
            if rnd < rounds:
                alpha = sharpen(alpha)
    if isolated_level is not None and not hard:
        alpha = _drop_isolated(alpha, grid.up(m), band, isolated_level)
    alpha = torch.where(alpha < snap, torch.zeros_like(alpha), alpha)
    return torch.where(alpha > 1.0 - snap, torch.ones_like(alpha), alpha)


def _sharpened(guide, alpha, radius: int, eps: float, confidence_floor: float | None, wide_radius: int):
    """``core.pipeline._sharpen``: the guided filter of ``alpha`` on the image (None: plain), or a
    network matte's confidence-weighted fit on two scales, blended by the small window's confidence."""
    if confidence_floor is None:
        return _apply(guided_coefficients(guide, alpha, radius, eps), guide)
    weight = gf.confidence_weight(alpha, confidence_floor)
    near_fit = _apply(weighted_guided_coefficients(guide, alpha, weight, radius, eps), guide)
    wide_fit = _apply(weighted_guided_coefficients(guide, alpha, weight, wide_radius, eps), guide)
    near = ((box_mean(weight[None], radius)[0] - confidence_floor) / (1.0 - confidence_floor)).clamp(0.0, 1.0)
    return near * near_fit + (1.0 - near) * wide_fit


def _drop_isolated(alpha, matte_up, band, level: float):
    """``core.pipeline._drop_isolated``: lone values the matte does not support go back to the median."""
    med = median3(alpha)
    lone = ((alpha - med).abs() > level) & ((alpha - matte_up).abs() > level) & band
    return torch.where(lone, med, alpha)


def median3(x: torch.Tensor) -> torch.Tensor:
    """3×3 median of an H×W tensor, borders replicated (``cv2.medianBlur`` with ksize 3), in row strips."""
    padded = F.pad(x[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    out = torch.empty_like(x)
    height, width = x.shape
    strip = max(1, (1 << 22) // max(1, width))  # 9 shifted copies of a strip at a time
    for y0 in range(0, height, strip):
        y1 = min(height, y0 + strip)
        shifted = [padded[y0 + dy : y1 + dy, dx : dx + width] for dy in range(3) for dx in range(3)]
        out[y0:y1] = torch.stack(shifted).median(dim=0).values
    return out


# ----------------------------------------------------------------------------- foreground colours


def _weighted_means(fg_src, bg_src, alpha, r):
    """``core.foreground._weighted_means``."""
    blur_a = box_mean(alpha[None], r)
    f_mean = box_mean(fg_src * alpha[None], r) / (blur_a + _EPS)
    b_mean = box_mean(bg_src * (1.0 - alpha[None]), r) / ((1.0 - blur_a) + _EPS)
    return f_mean, b_mean


def _fuse(image, alpha, f_mean, b_mean):
    """``core.foreground.fuse``."""
    a = alpha[None]
    return (f_mean + a * (image - a * f_mean - (1.0 - a) * b_mean)).clamp_(0.0, 1.0)


def _background_weight(alpha):
    return torch.where(alpha <= fgmod.BACKGROUND_ALPHA, 1.0 - alpha, torch.zeros_like(alpha))


def nearest_background(image, weight, radii):
    """``core.foreground.nearest_background``: ``(B̂, found)``."""
    out = torch.zeros_like(image)
    found = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    if not bool((weight > 0).any()):
        return out, found
    weighted = image * weight[None]
    for r in radii:
        den = box_mean(weight[None], r)[0]
        ok = (den > fgmod._FILL_MIN_WEIGHT) & ~found
        if bool(ok.any()):
            num = box_mean(weighted, r) / den.clamp_min(1e-30)[None]
            out = torch.where(ok[None], num, out)
            found |= ok
        if bool(found.all()):
            break
    return out, found


def unmix(image, alpha, background, smooth):
    """``core.foreground.unmix``."""
    a = alpha[None]
    raw = (image - (1.0 - a) * background) / a.clamp_min(1e-3)
    f = raw.clamp(0.0, 1.0)
    overshoot = (raw - f).abs().amax(0, keepdim=True)
    f = image + (fgmod.GAMUT_TOLERANCE / (overshoot + fgmod.GAMUT_TOLERANCE)) * (f - image)
    weight = (a * (1.0 / fgmod.UNMIX_FULL)).clamp(0.0, 1.0)
    return smooth + weight * (f - smooth)


def foreground(img: DeviceImage, alpha: torch.Tensor, *, full_small_pass: bool) -> torch.Tensor:
    """``core.pipeline._foreground``: decontaminated colours where 0 < α < 1, the raw ones elsewhere."""
    raw, blend, grid, g = img.raw, img.blend, img.grid, img.grid_blend
    (height, width), (h, w) = grid.full_hw, grid.low_hw
    soft = (alpha > 0.0) & (alpha < 1.0)
    if not bool(soft.any()):
        return raw
    long_side = max(height, width)
    r_large, r_small = fgmod.radii(long_side)
    scale = max(h / height, w / width)
    alpha_low = grid.down(alpha)
    rl, rs = max(1, round(r_large * scale)), max(1, round(r_small * scale))
    if full_small_pass:
        f_mean1, b_mean1 = _weighted_means(g, g, alpha_low, rl)
        fallback = b_mean1
    else:  # core.foreground.fusion_means
        f_mean, b_mean = _weighted_means(g, g, alpha_low, rl)
        f1 = _fuse(g, alpha_low, f_mean, b_mean)
        f_mean, b_mean = _weighted_means(f1, b_mean, alpha_low, rs)
        fallback = b_mean
    reach_low = max(1, round(fgmod.FILL_COARSE * long_side * scale))
    bg_low, found = nearest_background(g, _background_weight(alpha_low), fgmod.fill_radii(reach_low))
    background = grid.up(torch.where(found[None], bg_low, fallback))
    if full_small_pass:  # core.foreground.small_pass on the whole image
        b_up = grid.up(b_mean1)
        f1 = _fuse(blend, alpha, grid.up(f_mean1), b_up)
        f_mean, b_mean = _weighted_means(f1, b_up, alpha, r_small)
        f = _fuse(blend, alpha, f_mean, b_mean)
        fine = max(1, round(fgmod.FILL_FINE * long_side))
        near, near_found = nearest_background(blend, _background_weight(alpha), fgmod.fill_radii(fine))
        background = torch.where(near_found[None], near, background)
    else:
        f = _fuse(blend, alpha, grid.up(f_mean), grid.up(b_mean))
    return torch.where(soft[None], unmix(blend, alpha, background, f), raw)
