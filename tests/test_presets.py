"""The preset table: every released checkpoint with its repo, backbone, size, patch order, licence."""

from __future__ import annotations

import pytest
from maskd.core.errors import WeightsError
from maskd.core.presets import PATCH_ORDERS, PRESETS, check_patch_order, resolve_preset

EXPECTED = {  # name: (repo, backbone, (h, w), patch order)
    "general": ("ZhengPeng7/BiRefNet", "swin_v1_l", (1024, 1024), "wg-hg-c"),
    "lite": ("ZhengPeng7/BiRefNet_lite", "swin_v1_t", (1024, 1024), "wg-hg-c"),
    "hr": ("ZhengPeng7/BiRefNet_HR", "swin_v1_l", (2048, 2048), "c-hg-wg"),
    "matting": ("ZhengPeng7/BiRefNet-matting", "swin_v1_l", (1024, 1024), "wg-hg-c"),
    "lite-2k": ("ZhengPeng7/BiRefNet_lite-2K", "swin_v1_t", (1440, 2560), "wg-hg-c"),
    "dynamic": ("ZhengPeng7/BiRefNet_dynamic", "swin_v1_l", (1024, 1024), "c-hg-wg"),
    "portrait": ("ZhengPeng7/BiRefNet-portrait", "swin_v1_l", (1024, 1024), "wg-hg-c"),
    "rmbg2": ("briaai/RMBG-2.0", "swin_v1_l", (1024, 1024), "wg-hg-c"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_table(name):
    preset = resolve_preset(name)
    repo, backbone, resolution, order = EXPECTED[name]
    assert (preset.name, preset.repo_id, preset.backbone, preset.resolution, preset.patch_order) == (
        name,
        repo,
        backbone,
        resolution,
        order,
    )
    assert preset.filename == "model.safetensors"
    assert preset.patch_order_evidence and preset.licence
    assert all(r % 32 == 0 for r in preset.resolution)
    assert preset.url == f"https://huggingface.co/{repo}/resolve/main/model.safetensors"


def test_every_preset_is_well_formed():
    for preset in PRESETS.values():
        assert preset.patch_order in PATCH_ORDERS
        assert preset.backbone in ("swin_v1_t", "swin_v1_s", "swin_v1_b", "swin_v1_l")


def test_rmbg2_says_it_is_non_commercial_and_gated():
    rmbg = resolve_preset("rmbg2")
    assert rmbg.non_commercial and rmbg.gated
    assert "CC BY-NC 4.0" in rmbg.licence
    assert "NON-COMMERCIAL" in rmbg.notes.upper()
    assert not any(p.non_commercial for p in PRESETS.values() if p.name != "rmbg2")


@pytest.mark.parametrize(
    "alias,name",
    [
        ("ZhengPeng7/BiRefNet_lite", "lite"),
        ("zhengpeng7/birefnet", "general"),
        ("BiRefNet_HR", "hr"),
        ("briaai/RMBG-2.0", "rmbg2"),
        (" Lite ", "lite"),
        ("ZhengPeng7/BiRefNet_lite-2K", "lite-2k"),
    ],
)
def test_repo_ids_and_names_resolve(alias, name):
    assert resolve_preset(alias).name == name


def test_unknown_names():
    with pytest.raises(WeightsError, match="Known presets: general, lite"):
        resolve_preset("giant")
    assert resolve_preset("giant", default="general").name == "general"
    assert resolve_preset(None, default="lite").name == "lite"


def test_patch_order_check():
    assert check_patch_order(None) is None and check_patch_order("c-hg-wg") == "c-hg-wg"
    with pytest.raises(WeightsError, match="wg-hg-c"):
        check_patch_order("rows-first")
