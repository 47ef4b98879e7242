"""maskd for Krita: BiRefNet background removal as an editable transparency mask.

Krita imports this package at start-up when ``enable_maskd=true`` is in kritarc's ``[python]``
section; it registers the "Background Removal" docker and the Tools ▸ Scripts ▸ "Remove
Background (maskd)" action. Scripts call ``maskd.remove_background(...)`` (see ``api.py``).
"""

from __future__ import annotations

import json
import os
import sys
import time

from .api import remove_background, start_job  # noqa: F401  (the scripting entry point)
from .runner import JobError  # noqa: F401

try:  # the one version string: the client's, which the installer copies next to the plugin
    from .maskd_client import CLIENT_VERSION as __version__
except ImportError:  # a repository checkout without the copied client
    __version__ = "unknown"
ACTION_ID = "maskd_remove_background"
ACTION_TEXT = "Remove Background (maskd)"
# set by the editor tests (and `maskd doctor`) to prove the plugin was loaded from kritarc
MARKER_ENV = "MASKD_KRITA_LOAD_MARKER"

_registered = False


def _write_marker(**fields) -> None:
    path = os.environ.get(MARKER_ENV)
    if not path:
        return
    try:
        from krita import Krita

        krita_version = Krita.instance().version()
    except Exception:
        krita_version = None
    data = {
        "plugin": "maskd",
        "version": __version__,
        "python": sys.version.split()[0],
        "krita": krita_version,
        "path": os.path.dirname(os.path.abspath(__file__)),
        "time": time.time(),
    }
    data.update(fields)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
    except OSError:
        pass


def _register() -> None:
    """Register the docker and the action once (kritarunner imports the package, too)."""
    global _registered
    if _registered:
        return
    try:
        from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita
    except ImportError:  # imported outside Krita (unit tests, tooling)
        return
    from .docker import DOCKER_ID, BackgroundRemovalDocker

    class MaskdExtension(Extension):
        def setup(self):
            _write_marker(stage="setup")

        def createActions(self, window):
            action = window.createAction(ACTION_ID, ACTION_TEXT, "tools/scripts")
            action.setToolTip("Cut out the active layer's subject with maskd (settings from the docker)")
            action.triggered.connect(_run_from_action)

    app = Krita.instance()
    app.addDockWidgetFactory(
        DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, BackgroundRemovalDocker)
    )
    app.addExtension(MaskdExtension(app))
    try:
        from PyQt5.QtWidgets import QApplication

        from .runner import shutdown

        QApplication.instance().aboutToQuit.connect(shutdown)
    except Exception:
        pass
    _registered = True


def _run_from_action() -> None:
    """Tools ▸ Scripts: same job as the button, with the docker's saved choices."""
    from . import settings as cfg

    values = cfg.load()
    options = cfg.daemon_options(values)
    options["model"] = values["model"]
    job = start_job(None, None, values["output"], options)
    if job.done and job.error is not None:
        _notify(job.error.message)
    else:
        job.finished.connect(lambda j: _notify(j.error.message) if j.error is not None else None)


def _notify(text: str) -> None:
    """Errors from the action show on the canvas even when the docker is hidden."""
    try:
        from krita import Krita

        window = Krita.instance().activeWindow()
        view = window.activeView() if window is not None else None
        if view is not None:
            view.showFloatingMessage("maskd: " + text, Krita.instance().icon("warning"), 8000, 1)
    except Exception:
        pass


_register()
