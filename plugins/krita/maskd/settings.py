"""The docker's choices, kept in kritarc's ``[maskd]`` section.

Krita's "Import Python Plugin from File" deletes the plugin folder, so nothing the user chose may
live there; ``Krita.writeSetting`` stores it in kritarc next to Krita's own settings. The daemon
config (``maskd_config.json``) is the installer's and stays in the plugin folder.
"""

from __future__ import annotations

import json
import os

from . import maskd_client as mc  # copied next to the plugin by the installer (the shared words)

_L = mc.LABELS
OUTPUTS = {
    "transparency-mask": _L["output.mask.krita"],
    "selection": _L["output.selection"],
    "new-layer": _L["output.layer"],
    "apply": _L["output.apply"],
}
QUALITIES = {key: _L["quality." + key] for key in ("default", "fast", "quality")}
EXISTING_MASK = {key: _L["existing_mask." + key] for key in ("intersect", "replace")}
# the shadow styles of `maskd remove --shadow` (core/shadow.py); a script may add key=value overrides
SHADOW_STYLES = {key: _L["shadow." + key] for key in ("soft", "contact", "drop", "front")}
DEFAULTS = {
    "output": "transparency-mask",
    "refine": True,
    "decontaminate": True,
    "quality": "default",
    "model": "",
    "existing_mask": "intersect",  # what a new transparency mask does with one the layer has
    "shadow": False,  # "Add shadow layer"
    "shadow_style": "soft",
    "background": False,  # "Add background layer"
    "background_color": "#ffffff",
}
SECTION = "maskd"
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


def _krita():
    try:
        from krita import Krita

        return Krita.instance()
    except Exception:  # outside Krita (unit tests)
        return None


def load() -> dict:
    """The saved choices, falling back to the defaults for anything missing or invalid."""
    values = dict(DEFAULTS)
    app = _krita()
    if app is None:
        return values
    raw = app.readSetting(SECTION, "settings", "")
    try:
        saved = json.loads(raw) if raw else {}
    except ValueError:
        saved = {}
    if isinstance(saved, dict):
        for key, default in DEFAULTS.items():
            if isinstance(saved.get(key), type(default)):
                values[key] = saved[key]
    if values["output"] not in OUTPUTS:
        values["output"] = DEFAULTS["output"]
    if values["quality"] not in QUALITIES:
        values["quality"] = DEFAULTS["quality"]
    if values["existing_mask"] not in EXISTING_MASK:
        values["existing_mask"] = DEFAULTS["existing_mask"]
    if values["shadow_style"] not in SHADOW_STYLES:
        values["shadow_style"] = DEFAULTS["shadow_style"]
    if not _is_hex_colour(values["background_color"]):
        values["background_color"] = DEFAULTS["background_color"]
    return values


def _is_hex_colour(text: str) -> bool:
    raw = text.lstrip("#").lower()
    return text.startswith("#") and len(raw) == 6 and all(c in "0123456789abcdef" for c in raw)


def save(values: dict) -> None:
    app = _krita()
    if app is None:
        return
    clean = {key: values.get(key, default) for key, default in DEFAULTS.items()}
    app.writeSetting(SECTION, "settings", json.dumps(clean, sort_keys=True))


def daemon_options(values: dict) -> dict:
    """The job's options from the docker's choices: the daemon's pipeline options plus the
    finishing layers (``shadow``: a style or None, ``background``: "#rrggbb" or None), which the
    job takes out before asking the daemon."""
    options = {
        "refine": bool(values.get("refine", True)),
        "quality": values.get("quality", "default"),
        "decontaminate": bool(values.get("decontaminate", True)),
        "existing_mask": values.get("existing_mask", "intersect"),
        "shadow": values.get("shadow_style", "soft") if values.get("shadow") else None,
        "background": values.get("background_color", "#ffffff") if values.get("background") else None,
    }
    return options


def daemon_config(config: dict, model: str) -> dict:
    """The installer's daemon config, with the chosen preset added to the autostart command.

    A running daemon holds one model; the preset only decides which model a daemon the plugin
    starts loads (the docker says when the running one differs).
    """
    config = dict(config)
    command = list(config.get("daemon_command") or [])
    if model and command:
        config["daemon_command"] = command + ["--model", model]
    return config
