"""The released BiRefNet checkpoints maskd knows by name.

All presets are the same network; they differ by backbone, training data, native input size and
the order in which the decoder stacks image patches (a property of the checkpoint, see
``PATCH_ORDERS``). A user may pass a preset name (``lite``), its Hugging Face repo id
(``ZhengPeng7/BiRefNet_lite``) or the repo's last part (``BiRefNet_lite``).
"""

from __future__ import annotations

from dataclasses import dataclass

from maskd.core.errors import WeightsError

# How the decoder's input blocks stack the image cut into a grid of hg × wg patches along channels:
# "wg-hg-c": columns outer, rows, channels innermost (official code before 2024-11-05);
# "c-hg-wg": channels outer, rows, columns innermost (official code since then).
PATCH_ORDERS = ("wg-hg-c", "c-hg-wg")

_OLD_ORDER = (
    "trained before the official code switched the patch order on 2024-11-05 "
    "(commit 'Upgrade patches merging and split methods to einops version'); "
    "the weights were never re-permuted"
)
_NEW_ORDER = "uploaded after the official code switched to 'c-hg-wg' on 2024-11-05"

MIT = "MIT"
CC_BY_NC = "CC BY-NC 4.0 (non-commercial use only; gated: accept the licence on Hugging Face first)"


@dataclass(frozen=True)
class Preset:
    name: str
    repo_id: str
    filename: str
    backbone: str  # swin_v1_t | swin_v1_s | swin_v1_b | swin_v1_l
    resolution: tuple[int, int]  # (height, width) the model was trained at
    patch_order: str  # one of PATCH_ORDERS
    patch_order_evidence: str
    licence: str
    notes: str = ""

    @property
    def url(self) -> str:
        """Where the weights file can be downloaded by hand."""
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"

    @property
    def non_commercial(self) -> bool:
        return "non-commercial" in self.licence.lower()

    @property
    def gated(self) -> bool:
        return "gated" in self.licence.lower()


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "general",
            "ZhengPeng7/BiRefNet",
            "model.safetensors",
            "swin_v1_l",
            (1024, 1024),
            "wg-hg-c",
            "uploaded before 2024-11 (release notes); " + _OLD_ORDER,
            MIT,
            "the default: general-purpose dichotomous segmentation (epoch 244)",
        ),
        Preset(
            "lite",
            "ZhengPeng7/BiRefNet_lite",
            "model.safetensors",
            "swin_v1_t",
            (1024, 1024),
            "wg-hg-c",
            "uploaded 2024-08-02; confirmed by a public parity study; " + _OLD_ORDER,
            MIT,
            "Swin-T backbone: about 4x fewer FLOPs than general, slightly less accurate",
        ),
        Preset(
            "hr",
            "ZhengPeng7/BiRefNet_HR",
            "model.safetensors",
            "swin_v1_l",
            (2048, 2048),
            "c-hg-wg",
            "uploaded 2025-02-01; " + _NEW_ORDER,
            MIT,
            "high resolution: trained at 2048x2048 (4x the compute of general)",
        ),
        Preset(
            "hr-matting",
            "ZhengPeng7/BiRefNet_HR-matting",
            "model.safetensors",
            "swin_v1_l",
            (2048, 2048),
            "c-hg-wg",
            "uploaded 2025-02-12; " + _NEW_ORDER,
            MIT,
            "soft mattes (hair, fur, glass) at 2048x2048",
        ),
        Preset(
            "matting",
            "ZhengPeng7/BiRefNet-matting",
            "model.safetensors",
            "swin_v1_l",
            (1024, 1024),
            "wg-hg-c",
            "uploaded 2024-10-06; " + _OLD_ORDER,
            MIT,
            "soft mattes (hair, fur, glass) at 1024x1024",
        ),
        Preset(
            "lite-2k",
            "ZhengPeng7/BiRefNet_lite-2K",
            "model.safetensors",
            "swin_v1_t",
            (1440, 2560),
            "wg-hg-c",
            "uploaded 2024-09-24; " + _OLD_ORDER,
            MIT,
            "Swin-T trained at 2560x1440 (width x height) for large landscape images",
        ),
        Preset(
            "dynamic",
            "ZhengPeng7/BiRefNet_dynamic",
            "model.safetensors",
            "swin_v1_l",
            (1024, 1024),
            "c-hg-wg",
            "uploaded 2025-03-31; " + _NEW_ORDER,
            MIT,
            "trained at sizes 256-2304: any multiple of 32 works (1024 is the default here)",
        ),
        Preset(
            "portrait",
            "ZhengPeng7/BiRefNet-portrait",
            "model.safetensors",
            "swin_v1_l",
            (1024, 1024),
            "wg-hg-c",
            "uploaded before 2024-11 (release notes); " + _OLD_ORDER,
            MIT,
            "people and portraits",
        ),
        Preset(
            "rmbg2",
            "briaai/RMBG-2.0",
            "model.safetensors",
            "swin_v1_l",
            (1024, 1024),
            "wg-hg-c",
            "BRIA's own inference code stacks patches in the old order",
            CC_BY_NC,
            "BRIA RMBG-2.0 (BiRefNet trained on licensed data). NON-COMMERCIAL licence, gated repo: "
            "accept the terms on https://huggingface.co/briaai/RMBG-2.0 and log in (`hf auth login`)",
        ),
    ]
}

DEFAULT_PRESET = "general"


def _lookup(name: str) -> Preset | None:
    key = name.strip().lower().rstrip("/")
    if key in PRESETS:
        return PRESETS[key]
    for preset in PRESETS.values():
        repo = preset.repo_id.lower()
        if key == repo or key == repo.split("/", 1)[1]:
            return preset
    return None


def resolve_preset(name: str | None, default: str | None = None) -> Preset:
    """The preset called ``name`` (preset name, repo id or repo name, any case).

    Unknown names give ``default``'s preset when a default is given, else a ``WeightsError``
    listing the known presets.
    """
    preset = _lookup(name) if name else None
    if preset is not None:
        return preset
    if default is not None:
        return resolve_preset(default)
    raise WeightsError(
        f"unknown model preset {name!r}. Known presets: {', '.join(PRESETS)} "
        f"(or their Hugging Face repo ids, e.g. {PRESETS['lite'].repo_id}). "
        "For a weights file of your own, pass its path together with the preset whose "
        "architecture it has (e.g. `--weights FILE --variant lite`)."
    )


def is_preset(name: str | None) -> bool:
    return bool(name) and _lookup(name) is not None


def presets_with_backbone(backbone: str) -> list[Preset]:
    return [p for p in PRESETS.values() if p.backbone == backbone]


def check_patch_order(order: str | None) -> str | None:
    if order is None or order in PATCH_ORDERS:
        return order
    raise WeightsError(f"unknown decoder patch order {order!r}; use one of {', '.join(PATCH_ORDERS)}")
