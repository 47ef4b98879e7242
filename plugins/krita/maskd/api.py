"""The scripting entry point: ``maskd.remove_background(...)`` from Krita's Scripter or a script.

It runs the very job the docker's button runs and waits for it on a local Qt event loop, so
Krita keeps repainting and the docker keeps showing progress while a script waits.
"""

from __future__ import annotations

from PyQt5.QtCore import QEventLoop

from . import settings as cfg
from .runner import Job, JobError

_listeners = []  # callables(job) told about every job (the docker shows scripted jobs too)


def add_job_listener(callback) -> None:
    _listeners.append(callback)


def start_job(document=None, node=None, output="transparency-mask", options=None) -> Job:
    """Start a job without waiting (the docker and the Tools ▸ Scripts action use this)."""
    job = Job(document, node, output, options)
    for callback in list(_listeners):
        try:
            callback(job)
        except Exception:
            pass
    return job.start()


def remove_background(document=None, node=None, output="transparency-mask", **options):
    """Remove the background of ``node`` (default: the active layer of the active document).

    ``output``: "transparency-mask" (default; the layer's pixels are never touched), "selection",
    "new-layer" (a cut-out copy above the layer) or "apply" (the layer is replaced by its cut-out).
    ``options``: ``refine``, ``decontaminate``, ``quality`` ("fast"/"default"/"quality"), ``model``
    (the preset a daemon started by the plugin loads), and the daemon's other pipeline options
    (``threshold``, ``grow``, ``feather``, ``fill_holes``, ``invert``); missing ones come from the
    docker's saved settings.
    Finishing layers (separate and editable; nothing is flattened): ``shadow="soft"|"contact"|
    "drop"|"front"`` (optionally with ``maskd remove --shadow`` overrides, e.g. "drop,opacity=0.3")
    adds "<layer> shadow" directly under the layer: a paint layer in the shadow colour whose
    transparency mask is the generated shadow; ``background="#rrggbb"`` adds "<layer> background",
    a paint layer in that colour over the canvas, at the bottom of the layer's parent. ``None``
    turns either off.
    Returns the created node (a ``Selection`` for "selection"); raises ``JobError`` with a
    readable message when it fails, leaving the document unchanged.
    """
    saved = cfg.load()
    merged = cfg.daemon_options(saved)
    merged["model"] = saved["model"]
    merged.update(options)
    job = start_job(document, node, output, merged)
    if not job.done:
        loop = QEventLoop()
        job.finished.connect(loop.quit)
        if not job.done:  # the worker may have finished before the connection
            loop.exec_()
    if job.error is not None:
        raise job.error
    return job.result_node


__all__ = ["remove_background", "start_job", "add_job_listener", "JobError"]
