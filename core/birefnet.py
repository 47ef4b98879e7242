"""BiRefNet (inference only), state-dict compatible with the official checkpoints, and its public API.

    model = load_model("lite")                      # preset, repo id, .safetensors/.pth file or snapshot dir
    logits = model(normalised)                      # (B, 3, H, W) → (B, 1, H, W), the official last output
    matte = predict_matte(model, rgb_uint8)         # H×W float32 in [0, 1] at the input size
    matte = predict_matte_native(model, rgb_uint8)  # at the model's resolution

The network: a Swin v1 backbone runs on the image and on a half-size copy (features concatenated),
the three shallower features are resized to the deepest and concatenated ("context"), a squeeze
block reduces them, and the decoder climbs back up through four stages, each with an input block
that sees the image cut into patches stacked along channels (the patch order is a property of the
checkpoint, see ``core.presets.PATCH_ORDERS``), a lateral block, a gradient-attention gate and a
decoder block with deformable ASPP. All resizes are bilinear with ``align_corners=True``.

Differences from the official code that do not change the result (beyond float rounding):
eval BatchNorm is folded into the preceding convolution; the ASPP's 1×1 projection is applied
branch by branch instead of to the concatenation (the pooled branch becomes a per-image bias);
the final 1×1 convolution is applied before the last upsampling (both are linear, and bilinear
weights sum to one) and fused with the last input block's output convolution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from maskd.core.deform_conv import DeformableConv2d, fold_batchnorm, set_chunk_bytes
from maskd.core.errors import InputError
from maskd.core.presets import PATCH_ORDERS, Preset, check_patch_order
from maskd.core.swin import SWIN_CONFIGS, SwinTransformer
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ASPP_CHANNELS = 256
ASPP_KERNELS = (1, 3, 7)
DECODER_INTER = 64
GDT_CHANNELS = 16


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x  # bilinear with align_corners=True at the same size is the identity
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def image_to_patches(x: torch.Tensor, grid_h: int, grid_w: int, order: str) -> torch.Tensor:
    """Cut ``(B, C, H, W)`` into a ``grid_h × grid_w`` grid of patches stacked along channels."""
    b, c, h, w = x.shape
    t = x.reshape(b, c, grid_h, h // grid_h, grid_w, w // grid_w)  # b c hg h wg w
    if order == "c-hg-wg":
        t = t.permute(0, 1, 2, 4, 3, 5)
    elif order == "wg-hg-c":
        t = t.permute(0, 4, 2, 1, 3, 5)
    else:
        raise ValueError(f"unknown patch order {order!r}; use one of {PATCH_ORDERS}")
    return t.reshape(b, c * grid_h * grid_w, h // grid_h, w // grid_w)


class _Folded(nn.Module):
    """Base for blocks that fold eval BatchNorm into convolutions once weights are loaded."""

    def _set(self, name: str, value: torch.Tensor | None) -> None:
        if name in self._buffers:
            self._buffers[name] = value
        else:
            self.register_buffer(name, value, persistent=False)


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None):
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if bn is None:
        return weight.clone(), (bias.clone() if bias is not None else None)
    return fold_batchnorm(weight, bias, bn)


class SimpleConvs(nn.Module):
    """Decoder input block: two 3×3 convolutions, no activation (official ``SimpleConvs``)."""

    def __init__(self, in_channels: int, out_channels: int, inter: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inter, 3, 1, 1)
        self.conv_out = nn.Conv2d(inter, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))


class ASPPBranch(nn.Module):
    """Deformable convolution + BatchNorm + ReLU (the BN is folded into the convolution)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def prepare(self) -> None:
        self.atrous_conv.prepare(self.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.atrous_conv(x), inplace=True)


class ASPPDeformable(_Folded):
    def __init__(self, in_channels: int):
        super().__init__()
        self.aspp1 = ASPPBranch(in_channels, ASPP_CHANNELS, 1)
        self.aspp_deforms = nn.ModuleList(ASPPBranch(in_channels, ASPP_CHANNELS, k) for k in ASPP_KERNELS)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(in_channels, ASPP_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(ASPP_CHANNELS * (2 + len(ASPP_KERNELS)), in_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)

    def prepare(self) -> None:
        for branch in (self.aspp1, *self.aspp_deforms):
            branch.prepare()
        pool_w, pool_b = _conv_bn(self.global_avg_pool[1], self.global_avg_pool[2])
        self._set("_pool_w", pool_w.flatten(1))
        self._set("_pool_b", pool_b)
        weight, bias = _conv_bn(self.conv1, self.bn1)
        # the projection of the concatenation = the sum of per-branch projections
        for i, part in enumerate(weight.split(ASPP_CHANNELS, dim=1)):
            self._set(f"_proj{i}", part.contiguous())
        self._set("_proj_b", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(F.linear(x.mean((2, 3)), self._pool_w, self._pool_b))  # (B, 256)
        n = 1 + len(ASPP_KERNELS)
        const = F.linear(pooled, getattr(self, f"_proj{n}").flatten(1), self._proj_b)  # (B, C)
        out = F.conv2d(self.aspp1(x), self._proj0) + const[:, :, None, None]
        for i, branch in enumerate(self.aspp_deforms, start=1):
            out = out + F.conv2d(branch(x), getattr(self, f"_proj{i}"))
        return F.relu(out, inplace=True)


class BasicDecBlk(_Folded):
    def __init__(self, in_channels: int, out_channels: int, inter: int = DECODER_INTER):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, inter, 3, 1, 1)
        self.dec_att = ASPPDeformable(inter)
        self.conv_out = nn.Conv2d(inter, out_channels, 3, 1, 1)
        self.bn_in = nn.BatchNorm2d(inter)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def prepare(self) -> None:
        w, b = _conv_bn(self.conv_in, self.bn_in)
        self._set("_in_w", w)
        self._set("_in_b", b)
        w, b = _conv_bn(self.conv_out, self.bn_out)
        self._set("_out_w", w)
        self._set("_out_b", b)
        self.dec_att.prepare()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.conv2d(x, self._in_w, self._in_b, padding=1), inplace=True)
        x = self.dec_att(x)
        return F.conv2d(x, self._out_w, self._out_b, padding=1)


class BasicLatBlk(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _gdt_convs(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, GDT_CHANNELS, 3, 1, 1), nn.BatchNorm2d(GDT_CHANNELS), nn.ReLU(inplace=True)
    )


class Decoder(_Folded):
    def __init__(self, channels: list[int]):
        super().__init__()
        ipt_in = [3 * 4**k for k in (5, 4, 3, 2, 0)]  # patch grids 32², 16², 8², 4², 1²
        ipt_out = [channels[0] // 8, channels[0] // 8, channels[1] // 8, channels[2] // 8, channels[3] // 8]
        for i, level in enumerate((5, 4, 3, 2, 1)):
            self.add_module(f"ipt_blk{level}", SimpleConvs(ipt_in[i], ipt_out[i]))
        self.decoder_block4 = BasicDecBlk(channels[0] + ipt_out[0], channels[1])
        self.decoder_block3 = BasicDecBlk(channels[1] + ipt_out[1], channels[2])
        self.decoder_block2 = BasicDecBlk(channels[2] + ipt_out[2], channels[3])
        self.decoder_block1 = BasicDecBlk(channels[3] + ipt_out[3], channels[3] // 2)
        self.conv_out1 = nn.Sequential(nn.Conv2d(channels[3] // 2 + ipt_out[4], 1, 1, 1, 0))
        self.lateral_block4 = BasicLatBlk(channels[1], channels[1])
        self.lateral_block3 = BasicLatBlk(channels[2], channels[2])
        self.lateral_block2 = BasicLatBlk(channels[3], channels[3])
        # multi-scale supervision and gradient prediction heads: trained, unused at inference,
        # kept so the checkpoints load strictly
        for level, ch in zip((4, 3, 2), channels[1:]):
            self.add_module(f"conv_ms_spvn_{level}", nn.Conv2d(ch, 1, 1, 1, 0))
        for level, ch in zip((4, 3, 2), channels[1:]):
            self.add_module(f"gdt_convs_{level}", _gdt_convs(ch))
        for level in (4, 3, 2):
            self.add_module(f"gdt_convs_pred_{level}", nn.Sequential(nn.Conv2d(GDT_CHANNELS, 1, 1, 1, 0)))
        for level in (4, 3, 2):
            self.add_module(f"gdt_convs_attn_{level}", nn.Sequential(nn.Conv2d(GDT_CHANNELS, 1, 1, 1, 0)))
        self.split_at = channels[3] // 2

    def prepare(self) -> None:
        for level in (4, 3, 2, 1):
            getattr(self, f"decoder_block{level}").prepare()
        for level in (4, 3, 2):
            seq = getattr(self, f"gdt_convs_{level}")
            w, b = _conv_bn(seq[0], seq[1])
            self._set(f"_gdt{level}_w", w)
            self._set(f"_gdt{level}_b", b)
        final = self.conv_out1[0]
        head_w = final.weight.detach()[:, : self.split_at].clone()  # applies to the decoder features
        ipt_w = final.weight.detach()[:, self.split_at :].flatten(1)  # applies to ipt_blk1's output
        last = self.ipt_blk1.conv_out
        ipt_w64 = ipt_w.cpu().double()  # float64 on the CPU: MPS has no float64
        fused_w = torch.einsum("po,oikl->pikl", ipt_w64, last.weight.detach().cpu().double())
        fused_b = ipt_w64 @ last.bias.detach().cpu().double() + final.bias.detach().cpu().double()
        self._set("_head_w", head_w)
        self._set("_ipt1_w", fused_w.to(head_w.device, head_w.dtype))
        self._set("_ipt1_b", fused_b.to(head_w.device, head_w.dtype))

    def _gate(self, p: torch.Tensor, level: int) -> torch.Tensor:
        g = F.relu(F.conv2d(p, getattr(self, f"_gdt{level}_w"), getattr(self, f"_gdt{level}_b"), padding=1))
        attn = getattr(self, f"gdt_convs_attn_{level}")[0](g).sigmoid()
        return p * attn

    def _patches(self, x: torch.Tensor, ref: torch.Tensor, order: str) -> torch.Tensor:
        gh, gw = x.shape[-2] // ref.shape[-2], x.shape[-1] // ref.shape[-1]
        return _resize(image_to_patches(x, gh, gw, order), ref.shape[-2:])

    def forward(self, x, x1, x2, x3, x4, order: str) -> torch.Tensor:
        x4 = torch.cat((x4, self.ipt_blk5(self._patches(x, x4, order))), 1)
        p = self._gate(self.decoder_block4(x4), 4)
        p = _resize(p, x3.shape[-2:]) + self.lateral_block4(x3)
        p = torch.cat((p, self.ipt_blk4(self._patches(x, p, order))), 1)
        p = self._gate(self.decoder_block3(p), 3)
        p = _resize(p, x2.shape[-2:]) + self.lateral_block3(x2)
        p = torch.cat((p, self.ipt_blk3(self._patches(x, p, order))), 1)
        p = self._gate(self.decoder_block2(p), 2)
        p = _resize(p, x1.shape[-2:]) + self.lateral_block2(x1)
        p = torch.cat((p, self.ipt_blk2(self._patches(x, p, order))), 1)
        p = self.decoder_block1(p)
        # conv_out1(cat(resize(p), ipt_blk1(x))) computed as resize(W_a p) + (W_b ∘ conv_out)(conv1(x))
        out = _resize(F.conv2d(p, self._head_w), x.shape[-2:])
        return self._add_full_res_tail(out, x)

    def _add_full_res_tail(self, out: torch.Tensor, x: torch.Tensor, band: int = 128) -> torch.Tensor:
        """``out += fused(conv1(x))`` in bands of rows: conv1's 64 channels at full resolution would
        be the largest tensor of the whole forward (256 MB at 1024²)."""
        conv1 = self.ipt_blk1.conv1
        height = x.shape[-2]
        for r0 in range(0, height, band):
            r1 = min(height, r0 + band)
            a, b = max(r0 - 2, 0), min(r1 + 2, height)
            inner = conv1(x[:, :, a:b])  # rows a..b-1; only the band's edge rows saw a fake border
            lo, hi = max(r0 - 1, 0), min(r1 + 1, height)  # conv1 rows the second conv needs
            inner = inner[:, :, lo - a : hi - a]
            inner = F.pad(inner, (0, 0, int(r0 == 0), int(r1 == height)))  # the image's own zero border
            out[:, :, r0:r1] += F.conv2d(inner, self._ipt1_w, self._ipt1_b, padding=(0, 1))
        return out


class BiRefNet(nn.Module):
    """The network. ``forward(x)`` → final logits ``(B, 1, H, W)`` (float32)."""

    def __init__(self, backbone: str = "swin_v1_l"):
        super().__init__()
        self.backbone_name = backbone
        config = SWIN_CONFIGS[backbone]
        channels = [2 * c for c in reversed(config.channels)]  # image + half-size copy, deepest first
        self.bb = SwinTransformer(config)
        self.squeeze_module = nn.Sequential(BasicDecBlk(channels[0] + sum(channels[1:]), channels[0]))
        self.decoder = Decoder(channels)
        self.preset: Preset | None = None
        self.patch_order = "c-hg-wg"
        self.resolution: tuple[int, int] | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module.prepare())

    def prepare(self) -> None:
        """Derive the folded/fused inference weights from the loaded checkpoint tensors."""
        with torch.no_grad():
            self.bb.prepare()
            self.squeeze_module[0].prepare()
            self.decoder.prepare()

    def set_patch_order(self, order: str) -> None:
        self.patch_order = check_patch_order(order)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone on the image and on a half-size copy; the deepest level gets the context."""
        h, w = x.shape[-2:]
        full = self.bb(x)
        half = self.bb(F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", align_corners=True))
        feats = [torch.cat((f, _resize(g, f.shape[-2:])), 1) for f, g in zip(full, half)]
        del full, half
        x1, x2, x3, x4 = feats
        size = x4.shape[-2:]
        x4 = torch.cat((_resize(x1, size), _resize(x2, size), _resize(x3, size), x4), 1)
        return [x1, x2, x3, x4]

    def decode(
        self, x: torch.Tensor, feats: list[torch.Tensor], patch_order: str | None = None
    ) -> torch.Tensor:
        x1, x2, x3, x4 = feats
        x4 = self.squeeze_module(x4)
        return self.decoder(x, x1, x2, x3, x4, patch_order or self.patch_order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32:
            raise InputError(
                f"BiRefNet needs a (B, 3, H, W) input with H and W multiples of 32, got {tuple(x.shape)}"
            )
        param = self.decoder.conv_out1[0].weight
        x = x.to(device=param.device, dtype=param.dtype).contiguous(memory_format=torch.channels_last)
        return self.decode(x, self.encode(x)).float()


# --------------------------------------------------------------------------------------------
# public API


def load_model(
    source: str | None = None,
    *,
    variant: str | None = None,
    device: str = "cpu",
    dtype=None,
    patch_order: str | None = None,
) -> BiRefNet:
    """Load BiRefNet weights into our architecture, strictly, and return the model in eval mode.

    ``source``: a preset name (``general``, ``lite``, …), a Hugging Face repo id, a local
    ``.safetensors`` / ``.pth`` file or a snapshot directory. ``variant``: the preset whose
    architecture (and patch order) a bare file has; guessed from the tensor shapes if omitted.
    ``device``: ``auto`` (CUDA > MPS > CPU), ``cpu``, ``cuda[:N]`` or ``mps``. ``dtype``: None/"auto"
    (fp16 on GPUs, fp32 on CPU), or fp32/fp16/bf16 (names or ``torch.dtype``). ``patch_order``:
    ``"wg-hg-c"`` / ``"c-hg-wg"`` to override the preset's.
    """
    from maskd.core import device as devices
    from maskd.core import weights

    check_patch_order(patch_order)
    torch_device = devices.pick_device(device)
    torch_dtype = devices.pick_dtype(torch_device, dtype)
    located = weights.locate(source or "general", variant=variant)
    state = weights.read_state_dict(located.path)
    preset = weights.match_preset(state, located)
    with torch.device("meta"):
        model = BiRefNet(preset.backbone)
    weights.fill_derivable(state, model)
    weights.check_compatible(state, model, located, preset)
    # own copies in fp32: safetensors tensors are views of a memory-mapped file, which would be
    # paged in during the first forward and would break if the file changed under the daemon
    for key in list(state):  # one tensor at a time: each original is released as its copy is made
        value = state[key]
        state[key] = value.to(torch.float32, copy=True) if value.is_floating_point() else value.clone()
    model.load_state_dict(state, strict=True, assign=True)  # post-hook prepares folded weights
    del state
    model.preset = preset
    model.set_patch_order(patch_order or preset.patch_order)
    model.eval().requires_grad_(False)
    model.to(device=torch_device, dtype=torch_dtype)
    model.to(memory_format=torch.channels_last)
    if torch_device.type != "cpu":
        # GPUs: bands of 256 MB mean a handful of large kernels per deformable convolution
        set_chunk_bytes(model, 256 * 1024 * 1024)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size per session: pick the fastest kernels once
    model.source_path = str(located.path)
    return model


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(f"expected an H×W×3 RGB image, got an array of shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise InputError(f"expected 8-bit RGB (uint8), got {rgb.dtype}; convert with core.imageio first")
    return np.ascontiguousarray(rgb[..., :3])


def model_resolution(model: BiRefNet) -> tuple[int, int]:
    if getattr(model, "resolution", None):
        return tuple(model.resolution)
    if getattr(model, "preset", None) is not None:
        return tuple(model.preset.resolution)
    return (1024, 1024)


def preprocess(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """As the official inference: PIL bilinear resize of the 8-bit image, /255, ImageNet mean/std."""
    from PIL import Image

    h, w = size
    if rgb.shape[:2] != (h, w):
        rgb = np.array(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def predict_matte_native(model: BiRefNet, rgb, size: tuple[int, int] | None = None) -> np.ndarray:
    """The model's matte (float32 in [0, 1]) at the model resolution ``size`` = (h, w)."""
    rgb = _check_rgb(rgb)
    size = tuple(size) if size else model_resolution(model)
    if len(size) != 2 or size[0] % 32 or size[1] % 32 or min(size) < 32:
        raise InputError(f"model input size must be two multiples of 32 (height, width), got {size}")
    x = preprocess(rgb, size)
    with torch.inference_mode():
        logits = model(x)
    return torch.sigmoid(logits[0, 0]).cpu().numpy().astype(np.float32, copy=False)


def predict_matte(model: BiRefNet, rgb) -> np.ndarray:
    """H×W float32 matte in [0, 1] at the input size (the native matte resized back bilinearly)."""
    rgb = _check_rgb(rgb)
    h, w = rgb.shape[:2]
    native = predict_matte_native(model, rgb)
    if native.shape == (h, w):
        return native
    t = torch.from_numpy(native)[None, None]
    smaller = h < native.shape[0] or w < native.shape[1]
    out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=smaller)
    return out[0, 0].clamp_(0.0, 1.0).numpy()
