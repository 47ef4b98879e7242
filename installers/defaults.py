"""What the installer set up, for commands that start the daemon without being told which model.

``maskd serve`` (and ``maskd remove`` when it starts a daemon) default to the ``general`` preset;
after an install the right default is the model the installer chose — fetched, given as a local
file, or chosen but not yet downloaded (``lite`` on a CPU machine without a route to the hub) —
and ``maskd models`` and ``maskd doctor`` name that same model. Standard library only.
"""

from __future__ import annotations

import json

from maskd.installers.locations import Platform


def _settings(plat: Platform | None) -> dict:
    plat = plat or Platform.current()
    try:
        return json.loads(plat.manifest_path.read_text(encoding="utf-8")).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def installed_serve_args(plat: Platform | None = None) -> list[str]:
    """``maskd serve`` model/device options recorded by the installer ([] when it did not install maskd)."""
    settings = _settings(plat)
    args = [str(a) for a in settings.get("model_args") or []]
    device = settings.get("device")
    if args and device and device != "auto":
        args += ["--device", str(device)]
    return args


def installed_model(plat: Platform | None = None) -> dict:
    """The model the installer chose: ``{"preset": name, "weights": local file or None}``, or {} when
    it recorded none. ``preset`` is the name given to ``--model`` or ``--variant`` (a preset name or
    repo id, to be resolved by the caller)."""
    args = [str(a) for a in _settings(plat).get("model_args") or []]

    def value(flag: str) -> str | None:
        return args[args.index(flag) + 1] if flag in args[:-1] else None

    preset = value("--model") or value("--variant")
    weights = value("--weights")
    return {"preset": preset, "weights": weights} if preset or weights else {}
