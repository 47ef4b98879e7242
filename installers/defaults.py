"""What the installer set up, for commands that start the daemon without being told which model.

``maskd serve`` (and ``maskd remove`` when it starts a daemon) default to the ``general`` preset;
after an install the right default is the model the installer fetched or was given (``lite`` on
a CPU machine, or a local file). Standard library only.
"""

from __future__ import annotations

import json

from maskd.installers.locations import Platform


def installed_serve_args(plat: Platform | None = None) -> list[str]:
    """``maskd serve`` model/device options recorded by the installer ([] when it did not install maskd)."""
    plat = plat or Platform.current()
    try:
        settings = json.loads(plat.manifest_path.read_text(encoding="utf-8")).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        return []
    args = [str(a) for a in settings.get("model_args") or []]
    device = settings.get("device")
    if args and device and device != "auto":
        args += ["--device", str(device)]
    return args
