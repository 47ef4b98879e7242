"""``maskd krita-batch FOLDER (-o OUT | --in-place)``: Krita's kritarunner over a folder of KRA files.

Krita (``kritarunner``, no window) opens each file, calls the maskd plugin's scripting entry
point ``maskd.remove_background(doc, node, output="transparency-mask")`` on the chosen layers and
saves the file with Krita itself. Layers are chosen as by ``maskd remove`` (``--layers``; default:
the bottom-most visible paint layer that is not one flat colour); layers that already have a
transparency mask are left alone. Each file is saved to a temporary name and renamed into place.

Needs Krita 5.2 and the maskd plugin (``maskd install-plugins``; it need not be enabled for
scripts). The daemon is the running one, or one started for the batch and stopped afterwards. The
same recipe by hand (kritarunner always exits 0; the job's result file says what happened)::

    QT_QPA_PLATFORM=offscreen PYTHONPATH=DIR kritarunner -s maskd_krita_batch -f inside_krita DIR/job.json

This file is also the module kritarunner runs: ``inside_krita`` and its helpers use only the
standard library and Krita's own modules (Krita's Python is not maskd's).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys

HELP = "Run Krita's kritarunner over a folder of KRA files"
KRITA_FOLDERS = [
    "/Applications/krita.app/Contents/MacOS",
    r"C:\Program Files\Krita (x64)\bin",
]


# ---- inside Krita -------------------------------------------------------------------------------


def _pykrita_folders() -> list[str]:
    from PyQt5.QtCore import QStandardPaths

    found = []
    for kind in (QStandardPaths.GenericDataLocation, QStandardPaths.AppDataLocation):
        for base in QStandardPaths.standardLocations(kind):
            found += [os.path.join(base, "krita", "pykrita"), os.path.join(base, "pykrita")]
    if os.environ.get("APPDATA"):
        found.append(os.path.join(os.environ["APPDATA"], "krita", "pykrita"))
    found.append(os.path.expanduser("~/Library/Application Support/krita/pykrita"))
    return found


def _import_plugin(job):
    folders = ([job["pykrita"]] if job.get("pykrita") else []) + _pykrita_folders()
    for folder in folders:
        if os.path.isfile(os.path.join(folder, "maskd", "__init__.py")):
            sys.path.insert(0, folder)
            import maskd

            return maskd
    raise RuntimeError(
        "the maskd Krita plugin is not installed (looked in "
        f"{', '.join(dict.fromkeys(folders))}): run `maskd install-plugins` and try again"
    )


def _walk(node, parent_path="", parent_shown=True):
    """(node, path, shown) for every layer under ``node``, top of the stack first (as maskd lists them)."""
    for child in reversed(node.childNodes()):
        if child.type().endswith("mask"):
            continue
        path = parent_path + child.name()
        shown = parent_shown and bool(child.visible())
        yield child, path, shown
        if child.type() == "grouplayer":
            yield from _walk(child, path + "/", shown)


def _is_flat(node, doc) -> bool:
    data = bytes(node.pixelData(0, 0, doc.width(), doc.height()))
    n = doc.width() * doc.height()
    size = len(data) // n if n else 0
    return not size or data == data[:size] * n or (size == 4 and data[3::4].count(0) == n)


def _has_mask(node) -> bool:
    return any(c.type() == "transparencymask" for c in node.childNodes())


def _choose(doc, spec):
    """(nodes to mask, notes) by maskd's one rule (``core.layered.choice``, copied beside this script)."""
    from maskd_layer_choice import Layer, choose

    kinds = {"paintlayer": "paint", "grouplayer": "group"}
    items = list(_walk(doc.rootNode()))
    layers = [Layer(p, n.name(), kinds.get(n.type(), n.type()), shown, _has_mask(n)) for n, p, shown in items]
    indices, notes = choose(layers, spec, lambda i: _is_flat(items[i][0], doc))
    return [(items[i][0], items[i][1]) for i in indices], notes


def inside_krita(args) -> None:
    """kritarunner entry point: mask and save every file of the job (``args[0]``); one progress line each."""
    from krita import Krita
    from maskd_editor_job import run_job, save_atomically

    with open(args[0]) as f:
        job = json.load(f)
    outcome = {"files": []}
    try:
        maskd = _import_plugin(job)
    except Exception as exc:
        outcome["error"] = str(exc)
        maskd = None
    app = Krita.instance()
    options = dict(job.get("options", {}), decontaminate=False)

    def process(item, entry):
        doc = app.openDocument(item["src"])
        if doc is None:
            raise RuntimeError("Krita could not open the file (damaged, or not a Krita document)")
        try:
            doc.setBatchmode(True)
            doc.waitForDone()
            chosen, entry["skipped"] = _choose(doc, job.get("layers"))
            for node, _path in chosen:
                maskd.remove_background(doc, node, output="transparency-mask", **options)
            doc.waitForDone()
            entry["masked"] = [path for _, path in chosen]
            if chosen or item["dst"] != item["src"]:
                save_atomically(item["dst"], ".kra", doc.saveAs, "Krita")
        finally:
            doc.close()

    run_job(job, outcome, job["result"], process)


# ---- the maskd command --------------------------------------------------------------------------


def add_arguments(p) -> None:
    from maskd.server.layered_batch import add_editor_batch_arguments

    add_editor_batch_arguments(p, ".kra", "krita")


def find_kritarunner() -> list[str]:
    from maskd.core.errors import MaskdError

    if os.environ.get("MASKD_KRITARUNNER"):
        return shlex.split(os.environ["MASKD_KRITARUNNER"])
    names = ["kritarunner", "kritarunner.exe"]
    candidates = [shutil.which(n) for n in names] + [os.path.join(d, n) for d in KRITA_FOLDERS for n in names]
    for exe in candidates:
        if exe and os.path.isfile(exe):
            return [exe]
    raise MaskdError(
        "Krita's kritarunner was not found (looked on PATH and in the usual install folders). "
        "Install Krita 5.2, or pass --krita COMMAND (the kritarunner command line)"
    )


def run(args) -> int:
    from maskd.server.layered_batch import run_editor

    def launch(command, job_dir):
        env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
        env["PYTHONPATH"] = str(job_dir) + os.pathsep + env.get("PYTHONPATH", "")
        return command + ["-s", "maskd_krita_batch", "-f", "inside_krita", str(job_dir / "job.json")], env

    return run_editor(args, "krita", ".kra", __file__, find_kritarunner, launch)
