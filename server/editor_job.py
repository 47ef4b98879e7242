"""The per-file loop of an editor's own batch (``maskd gimp-batch``, ``maskd krita-batch``), run inside
GIMP's or Krita's Python.

Both editors' scripts do the same around their own open/mask/save calls: one entry per file (an
error in one file never stops the batch), one progress line per file for ``maskd`` to read while the
editor runs, the whole outcome written to a result file at the end, and each output saved under a
private temporary name and renamed into place, so that an interrupted batch never leaves half a
file. Standard library only: the editors' Python is not maskd's. ``layered_batch.run_editor``
copies this file beside the editor script as ``maskd_editor_job.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

PROGRESS_TAG = "MASKD-BATCH "  # the line prefix of each file's entry; ``layered_batch`` reads it


def error_message(exc: BaseException) -> str:
    """One line for a file's failure: GLib errors carry theirs in ``message``; never empty."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


def run_job(job: dict, outcome: dict, result_path: str, process) -> None:
    """``process(item, entry)`` for each file of ``job`` (``item``: its ``src`` and ``dst``;
    ``entry``: the dict it fills with ``masked``/``skipped``), unless ``outcome`` already holds an
    ``error`` (the editor lacks the maskd plugin). A failure is the file's ``error``; each entry is
    printed as a progress line as it ends; the outcome goes to ``result_path`` at the end."""
    for item in job["files"] if "error" not in outcome else []:
        entry = {"src": item["src"], "dst": item["dst"]}
        try:
            process(item, entry)
        except Exception as exc:  # one bad file never stops the batch
            entry["error"] = error_message(exc)
        outcome["files"].append(entry)
        print(PROGRESS_TAG + json.dumps(entry), flush=True)
    with open(result_path, "w") as f:
        json.dump(outcome, f)


def save_atomically(dst: str, suffix: str, save, editor: str) -> None:
    """``save(tmp_path) -> bool`` writes the file under a temporary name with ``suffix`` (the editor
    picks the format from it), then it is renamed onto ``dst``. The temporary name is in a fresh
    private folder beside ``dst`` (random name, mode 0700): no name in it can have been planted,
    whatever the editor's save does with an existing file."""
    folder, name = os.path.split(dst)
    private = tempfile.mkdtemp(prefix=f".{name}.maskd-", dir=folder or ".")
    tmp = os.path.join(private, "part" + suffix)
    try:
        if not save(tmp):
            raise RuntimeError(f"{editor} could not save the file")
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(private, ignore_errors=True)
