"""``maskd models``: the presets, what they are, which one is the default, and whether its weights are here.

"Default" is the model ``maskd serve``, ``maskd remove`` and the plugins use without ``--model``:
the one the installer chose (recorded in its manifest, even when its download could not finish),
else the built-in ``general``. A running daemon is asked what it serves.
"""

from __future__ import annotations

import argparse
import json
import os

HELP = "List the model presets and where their weights are"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--evidence", action="store_true", help="also say why each preset has its patch order")


def default_model() -> dict:
    """``{"name", "weights" (a local file or None), "by_installer"}``: what serves without --model."""
    from maskd.core import presets
    from maskd.installers.defaults import installed_model

    chosen = installed_model()
    if not chosen:
        return {"name": presets.DEFAULT_PRESET, "weights": None, "by_installer": False}
    name = presets.resolve_preset(chosen.get("preset"), default=presets.DEFAULT_PRESET).name
    return {"name": name, "weights": chosen.get("weights"), "by_installer": True}


def _serving() -> dict | None:
    """What a running daemon serves (None when none runs; never waits on a stale connection file)."""
    from maskd.server import connection
    from maskd.server.commands.status import gather

    info = connection.read(connection.connection_path(None))
    if info is None or not connection.pid_alive(info.get("pid")):
        return None
    st = gather()
    return st if st.get("running") else None


def _rows(default: dict) -> list[dict]:
    from maskd.core import presets, weights
    from maskd.core.swin import BACKBONE_NAMES

    rows = []
    for preset in presets.PRESETS.values():
        cached = weights.cached_path(preset.repo_id, preset.filename)
        is_default = preset.name == default["name"]
        local = default["weights"] if is_default and default["weights"] else None
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
                "default": is_default,
                "cached": str(cached) if cached else None,
                "local_file": local if local and os.path.isfile(local) else None,
                "notes": preset.notes,
                "evidence": preset.patch_order_evidence,
            }
        )
    return rows


def _default_lines(default: dict, row: dict) -> list[str]:
    from maskd.core import presets

    name = default["name"]
    by = "chosen by the installer" if default["by_installer"] else "built in"
    lines = [
        f"Default: {name} ({by}; `maskd serve`, `maskd remove` and the plugins use it, "
        "`--model PRESET` picks another)."
    ]
    if default["weights"]:
        state = "present" if row["local_file"] else "MISSING: run the installer again"
        lines.append(f"  weights: the local file {default['weights']} ({state})")
    elif row["cached"]:
        lines.append(f"  weights: downloaded ({row['cached']})")
    else:
        url = presets.resolve_preset(name).url
        lines.append(
            f"  weights: NOT DOWNLOADED yet. Run `maskd fetch {name}`; without a route to Hugging Face, "
            f"download {url} elsewhere and run `./installers/install.sh --weights FILE --variant {name}`."
        )
    return lines


def run(args) -> int:
    default = default_model()
    rows = _rows(default)
    serving = _serving()
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
    table = [
        [r[k] for k, _ in cols]
        + ["yes" if r["default"] else "", "file" if r["local_file"] else "yes" if r["cached"] else "no"]
        for r in rows
    ]
    heads = [h for _, h in cols] + ["DEFAULT", "CACHED"]
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *table)]
    for line in [heads] + table:
        print("  ".join(str(x).ljust(wd) for x, wd in zip(line, widths)).rstrip())
    print()
    for r in rows:
        print(f"{r['name']}: {r['notes']}")
        if args.evidence:
            print(f"    patch order {r['patch_order']}: {r['evidence']}")
    print()
    print("\n".join(_default_lines(default, next(r for r in rows if r["default"]))))
    if serving:
        model = serving.get("model") or {}
        print(f"Serving now: {model.get('name')} on {serving.get('device')} (pid {serving.get('pid')}).")
    print(
        "Download once with `maskd fetch PRESET` (cache: huggingface_hub's, HF_HOME moves it). "
        "CACHED: yes = in that cache, file = the installer's local file.\nrmbg2 (briaai/RMBG-2.0) is "
        "licensed CC BY-NC 4.0: non-commercial use only, and its repo is gated (accept the licence on "
        "Hugging Face and log in first)."
    )
    return 0
