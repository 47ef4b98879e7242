"""``maskd gimp-batch FOLDER (-o OUT | --in-place)``: GIMP's own batch mode over a folder of XCF files.

GIMP 3 (``gimp-console``, no window) opens each file, calls the maskd plug-in
``plug-in-maskd-remove-background`` (output: layer mask) on the chosen layers and saves the file
with GIMP itself — for studios that want GIMP, not maskd, to write their XCF files. The layers are
chosen as by ``maskd remove`` (``--layers``; default: the bottom-most visible paint layer that is
not one flat colour); layers that already have a mask are left alone. Each file is saved to a
temporary name and renamed into place, so an interrupted batch never leaves half a file.

Needs GIMP 3 and the maskd plug-in (``maskd install-plugins``). The daemon is the running one, or
one started for the batch and stopped afterwards. The same recipe by hand::

    gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval \\
        -b 'import sys; sys.path.insert(0, "DIR"); import maskd_gimp_batch; \\
            maskd_gimp_batch.inside_gimp("DIR/job.json")' --quit

This file is also the script GIMP runs: ``inside_gimp`` and its helpers use only the standard
library and GIMP's own modules (GIMP's Python is not maskd's).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil

HELP = "Run GIMP's own batch mode over a folder of XCF files"
PROC_NAME = "plug-in-maskd-remove-background"
GIMP_NAMES = [
    "gimp-console-3.0",
    "gimp-console-3",
    "gimp-console",
    "gimp-console-3.0.exe",
    "gimp-console.exe",
]
GIMP_FOLDERS = [
    "/Applications/GIMP.app/Contents/MacOS",
    r"C:\Program Files\GIMP 3\bin",
    os.path.expandvars(r"%LOCALAPPDATA%\Programs\GIMP 3\bin"),
]


# ---- inside GIMP --------------------------------------------------------------------------------


def _walk(layers, parent_path="", parent_shown=True):
    for layer in layers:
        path = parent_path + layer.get_name()
        shown = parent_shown and bool(layer.get_visible())
        yield layer, path, shown
        if layer.is_group():
            yield from _walk(layer.get_children(), path + "/", shown)


def _is_flat(layer) -> bool:
    from gi.repository import Gegl

    w, h = layer.get_width(), layer.get_height()
    data = bytes(
        layer.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP)
    )
    n = w * h
    return data == data[:4] * n or data[3::4].count(0) == n


def _choose(image, spec):
    """(layers to mask, notes) by maskd's one rule (``core.layered.choice``, copied beside this script)."""
    from maskd_layer_choice import Layer, choose

    items = list(_walk(image.get_layers()))
    layers = [
        Layer(p, ly.get_name(), "group" if ly.is_group() else "paint", shown, ly.get_mask() is not None)
        for ly, p, shown in items
    ]
    indices, notes = choose(layers, spec, lambda i: _is_flat(items[i][0]))
    return [(items[i][0], items[i][1]) for i in indices], notes


def _mask_layer(proc, image, layer, options):
    from gi.repository import Gimp

    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [layer])
    cfg.set_property("output", "mask")
    cfg.set_property("refine", bool(options.get("refine", True)))
    cfg.set_property("quality", options.get("quality", "default"))
    cfg.set_property("decontaminate", False)
    cfg.set_property("use-selection", False)
    result = proc.run(cfg)
    if result.index(0) != Gimp.PDBStatusType.SUCCESS:
        message = ""
        try:
            message = Gimp.get_pdb().get_last_error()
        except Exception:
            pass
        raise RuntimeError(message or f"{PROC_NAME} failed ({result.index(0)})")


def inside_gimp(job_path: str) -> None:
    """Run in GIMP's batch interpreter: mask and save every file of the job; one progress line each."""
    import gi

    gi.require_version("Gimp", "3.0")
    gi.require_version("Gegl", "0.4")
    from gi.repository import Gimp, Gio
    from maskd_editor_job import run_job, save_atomically

    with open(job_path) as f:
        job = json.load(f)
    outcome = {"files": []}
    proc = Gimp.get_pdb().lookup_procedure(PROC_NAME)
    if proc is None:
        outcome["error"] = (
            f"the maskd plug-in ({PROC_NAME}) is not installed in this GIMP profile: "
            "run `maskd install-plugins` and try again"
        )

    def process(item, entry):
        image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(item["src"]))
        try:
            chosen, entry["skipped"] = _choose(image, job.get("layers"))
            for layer, _path in chosen:
                _mask_layer(proc, image, layer, job.get("options", {}))
            entry["masked"] = [path for _, path in chosen]
            if chosen or item["dst"] != item["src"]:

                def save(tmp):
                    return Gimp.file_save(
                        Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(tmp), None
                    )

                save_atomically(item["dst"], ".xcf", save, "GIMP")
        finally:
            if image is not None:
                image.delete()

    run_job(job, outcome, job["result"], process)


# ---- the maskd command --------------------------------------------------------------------------


def add_arguments(p) -> None:
    from maskd.server.layered_batch import add_editor_batch_arguments

    add_editor_batch_arguments(p, ".xcf", "gimp")


def find_gimp() -> list[str]:
    """The GIMP 3 console binary, or a ``MaskdError`` saying how to point at it."""
    import subprocess

    from maskd.core.errors import MaskdError

    if os.environ.get("MASKD_GIMP"):
        return shlex.split(os.environ["MASKD_GIMP"])
    candidates = [shutil.which(n) for n in GIMP_NAMES]
    candidates += [os.path.join(d, n) for d in GIMP_FOLDERS for n in GIMP_NAMES]
    for exe in (c for c in candidates if c and os.path.isfile(c)):
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "version 3" in out:
            return [exe]
    raise MaskdError(
        "GIMP 3 was not found (looked for gimp-console-3.0 on PATH and in the usual install "
        "folders). Install GIMP 3, or pass --gimp COMMAND (e.g. --gimp 'flatpak run "
        "--command=gimp-console-3.0 org.gimp.GIMP')"
    )


def run(args) -> int:
    from maskd.server.layered_batch import run_editor

    def launch(command, job_dir):
        expression = (
            f"import sys; sys.path.insert(0, {str(job_dir)!r}); import maskd_gimp_batch; "
            f"maskd_gimp_batch.inside_gimp({str(job_dir / 'job.json')!r})"
        )
        argv = command + ["-i", "-d", "-f", "--batch-interpreter=python-fu-eval", "-b", expression, "--quit"]
        return argv, dict(os.environ)

    return run_editor(args, "gimp", ".xcf", __file__, find_gimp, launch)
