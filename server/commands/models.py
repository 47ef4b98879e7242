"""``maskd models``: the presets, what they are, and whether their weights are here already."""

from __future__ import annotations

import argparse
import json

HELP = "List the model presets and where their weights are"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--evidence", action="store_true", help="also say why each preset has its patch order")


def _rows() -> list[dict]:
    from maskd.core import presets, weights
    from maskd.core.swin import BACKBONE_NAMES

    rows = []
    for preset in presets.PRESETS.values():
        cached = weights.cached_path(preset.repo_id, preset.filename)
        h, w = preset.resolution
        rows.append(
            {
                "name": preset.name,
                "repo": preset.repo_id,
                "backbone": BACKBONE_NAMES[preset.backbone],
                "resolution": f"{w}x{h}",
                "patch_order": preset.patch_order,
                "licence": "CC BY-NC 4.0 (non-commercial, gated)"
                if preset.non_commercial
                else preset.licence,
                "cached": str(cached) if cached else None,
                "notes": preset.notes,
                "evidence": preset.patch_order_evidence,
            }
        )
    return rows


def run(args) -> int:
    from maskd.core.presets import DEFAULT_PRESET

    rows = _rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = [
        ("name", "PRESET"),
        ("repo", "HUGGING FACE REPO"),
        ("backbone", "BACKBONE"),
        ("resolution", "SIZE (WxH)"),
        ("patch_order", "PATCHES"),
        ("licence", "LICENCE"),
    ]
    table = [[r[k] for k, _ in cols] + ["yes" if r["cached"] else "no"] for r in rows]
    heads = [h for _, h in cols] + ["CACHED"]
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *table)]
    for line in [heads] + table:
        print("  ".join(str(x).ljust(wd) for x, wd in zip(line, widths)).rstrip())
    print()
    for r in rows:
        print(f"{r['name']}: {r['notes']}")
        if args.evidence:
            print(f"    patch order {r['patch_order']}: {r['evidence']}")
    print(
        f"\nDefault: {DEFAULT_PRESET}. Download once with `maskd fetch PRESET` (cache: huggingface_hub's, "
        "HF_HOME moves it). rmbg2 (briaai/RMBG-2.0) is licensed CC BY-NC 4.0: non-commercial use only,"
    )
    print("and its repo is gated (accept the licence on Hugging Face and log in first).")
    return 0
