"""``maskd doctor``: check everything a "Remove Background" click depends on, and say what to fix.

Checks, in the order a click needs them: maskd and torch in this environment, the device the
model runs on, the model weights (present and valid), the daemon (reachable, what it serves), each
editor found and its plugin (installed, version, enabled, can reach or start the daemon) and the
autostart entry sandboxed editors rely on. Exit code 0 when nothing needs fixing, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

HELP = "Check daemon, weights, device and plugins, and say what to fix"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--deep", action="store_true", help="also load the weights strictly (seconds, memory)")
    p.add_argument("--connection-file", metavar="PATH", help="default: the per-user connection file")


class Report:
    def __init__(self):
        self.checks: list[dict] = []

    def add(self, area: str, state: str, message: str, fix: str = "") -> None:
        """``state``: ok | problem | note."""
        self.checks.append({"area": area, "state": state, "message": message, "fix": fix})

    @property
    def problems(self) -> list[dict]:
        return [c for c in self.checks if c["state"] == "problem"]


def _check_torch(r: Report) -> str | None:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        r.add(
            "torch",
            "problem",
            f"torch cannot be imported ({exc})",
            "re-run the installer (./installers/install.sh) or `pip install torch` in maskd's environment",
        )
        return None
    from maskd.core.device import pick_device

    build = (
        f"CUDA {torch.version.cuda}"
        if torch.version.cuda
        else "CPU/MPS"
        if sys.platform == "darwin"
        else "CPU"
    )
    r.add("torch", "ok", f"torch {torch.__version__} ({build} build)")
    device = str(pick_device("auto"))
    if device == "cpu":
        nvidia = shutil.which("nvidia-smi") or os.path.exists("/proc/driver/nvidia/version")
        if nvidia and not torch.version.cuda:
            r.add(
                "device",
                "problem",
                "an NVIDIA driver is present but this torch is a CPU build, so the GPU is not used",
                "re-run the installer with --torch cuda",
            )
        elif nvidia:
            r.add(
                "device",
                "problem",
                "an NVIDIA driver is present but torch cannot use CUDA "
                f"({torch.cuda.device_count()} devices visible)",
                "check `nvidia-smi`; the driver may be older than torch's CUDA "
                f"{torch.version.cuda}: update it, or re-run the installer with --torch-spec for an "
                "older torch",
            )
        else:
            r.add("device", "ok", "cpu (no GPU found: expect seconds per image; the lite preset is faster)")
    else:
        name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "Apple GPU"
        r.add("device", "ok", f"{device} ({name})")
    return device


def _check_weights(r: Report, settings: dict, deep: bool) -> None:
    from maskd.core import presets, weights
    from maskd.core.errors import MaskdError
    from maskd.installers.weights import safetensors_header, verify

    args = list(settings.get("model_args") or [])
    variant = args[args.index("--variant") + 1] if "--variant" in args else None
    if "--weights" in args:
        path = args[args.index("--weights") + 1]
        what = f"weights file {path}"
    else:
        name = args[args.index("--model") + 1] if "--model" in args else presets.DEFAULT_PRESET
        preset = presets.resolve_preset(name, default=presets.DEFAULT_PRESET)
        variant = variant or preset.name
        cached = weights.cached_path(preset.repo_id, preset.filename)
        if cached is None:
            r.add(
                "model",
                "problem",
                f"the '{preset.name}' weights ({preset.repo_id}) are not downloaded",
                f"`maskd fetch {preset.name}`; offline: download {preset.url} elsewhere and run "
                f"`./installers/install.sh --weights FILE --variant {preset.name}`",
            )
            return
        path, what = str(cached), f"preset '{preset.name}' ({cached})"
    if not os.path.isfile(path):
        r.add(
            "model",
            "problem",
            f"{what} is missing",
            "re-run the installer, or `maskd install-plugins "
            "--weights FILE --variant NAME` to point the plugins at another file",
        )
        return
    try:
        if path.endswith(".safetensors"):
            safetensors_header(path)
        summary = verify(path, variant, load=True) if deep else "structure ok (--deep loads it strictly)"
    except MaskdError as exc:
        r.add(
            "model",
            "problem",
            f"{what} is not usable: {exc}",
            "download it again (`maskd fetch PRESET`) or re-run the installer with "
            "--weights FILE --variant NAME",
        )
        return
    r.add("model", "ok", f"{what}: {os.path.getsize(path) / 1e6:,.0f} MB, {summary}")


def _check_daemon(r: Report, connection_file, sandboxed: bool) -> None:
    from maskd.server.commands.status import gather

    st = gather(connection_file)
    if st["running"]:
        model = st.get("model") or {}
        endpoints = ", ".join((st.get("endpoints") or {}).values())
        r.add(
            "daemon",
            "ok",
            f"reachable at {endpoints} (pid {st['pid']}, "
            f"maskd {st.get('maskd_version')}), serving {model.get('name')} on {st.get('device')}",
        )
        return
    if sandboxed:
        r.add(
            "daemon",
            "problem",
            f"not running ({st.get('reason', '')}); Flatpak/Snap editors cannot start it",
            "start it with `systemctl --user start maskd` (the autostart entry; from then on it starts at "
            "login). A plain `maskd serve` is not visible inside the sandbox",
        )
    else:
        r.add(
            "daemon",
            "note",
            "not running; the plugins and `maskd remove` start it on first use "
            f"(or start it now: `maskd serve`). Connection file: {st['connection_file']}",
        )


def _check_service(r: Report, manifest) -> None:
    from maskd.plugins import maskd_client as mc

    entries = manifest.entries_of("service")
    for entry in entries:
        if not os.path.exists(entry["path"]):
            r.add(
                "autostart",
                "problem",
                f"the autostart entry {entry['path']} is gone",
                "`maskd install-plugins` writes it again",
            )
            continue
        try:
            text = open(entry["path"], encoding="utf-8", errors="replace").read()
        except OSError:
            text = ""
        old = [m for m in mc.OLD_MODULES if f"-m {m} " in text or f"<string>{m}</string>" in text]
        if old:
            r.add(
                "autostart",
                "problem",
                f"the autostart entry {entry['path']} was written by an earlier maskd: it runs "
                + " and ".join(f"`python -m {m}`" for m in old)
                + ", which no longer exist, so the daemon does not start",
                "`maskd install-plugins` rewrites it (or re-run the installer)",
            )
            continue
        state = ""
        if entry.get("system") == "linux" and shutil.which("systemctl"):
            try:
                out = subprocess.run(
                    ["systemctl", "--user", "is-active", "maskd.service"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                state = f" (systemd: {out.stdout.strip() or 'unknown'})"
            except (OSError, subprocess.SubprocessError):
                pass
        r.add("autostart", "ok", f"{entry['path']}{state}")


def gather(args) -> Report:
    from maskd.installers import editors
    from maskd.installers.locations import Platform
    from maskd.installers.manifest import Manifest
    from maskd.server import __version__

    r = Report()
    plat = Platform.current()
    manifest = Manifest.load(plat.manifest_path)
    how = (
        f"installed by the installer ({plat.manifest_path})"
        if manifest.exists
        else "not installed by the installer"
    )
    r.add("maskd", "ok", f"maskd {__version__}, Python {sys.version.split()[0]} at {sys.executable}; {how}")
    _check_torch(r)
    _check_weights(r, manifest.settings, args.deep)
    plugin_reports = editors.inspect_all(plat)
    sandboxed = any(p.installed and p.target.sandboxed for p in plugin_reports)
    _check_daemon(r, args.connection_file, sandboxed)
    if not plugin_reports:
        r.add("editors", "note", "no GIMP 3 or Krita found (see `maskd install-plugins --list`)")
    for rep in plugin_reports:
        t = rep.target
        found = f"found ({t.found_by})" if t.found else "plugin present but editor not found"
        if rep.installed and not rep.problems:
            r.add(
                t.label,
                "ok",
                f"{found}; plugin {rep.version} in {t.plugin_dir}" + "".join(f"; {n}" for n in rep.notes),
            )
        elif not rep.problems:
            r.add(t.label, "note", found)
        for problem in rep.problems:
            text, _, fix = problem.partition(". Fix: ")
            r.add(t.label, "problem", f"{found}; {text}", fix)
    _check_service(r, manifest)
    return r


def run(args) -> int:
    r = gather(args)
    if args.json:
        print(json.dumps({"ok": not r.problems, "checks": r.checks}, indent=2))
        return 0 if not r.problems else 1
    marks = {"ok": "ok  ", "problem": "FIX ", "note": "note"}
    for c in r.checks:
        print(f"[{marks[c['state']]}] {c['area']}: {c['message']}")
        if c["fix"]:
            print(f"       fix: {c['fix']}")
    print(f"\n{len(r.problems)} problem(s) found." if r.problems else "\nAll good.")
    return 0 if not r.problems else 1
