"""Extension modules: code outside maskd that registers more session kinds or daemon workers.

maskd looks up two things by name: the session kind behind ``--model NAME``
(``core.session.register_session_kind``) and the daemon's worker behind ``maskd serve --worker
NAME`` (``server.daemon.register_worker``). Out of the box there is one worker (``pipeline``) and no
extra session kind: every model name goes to BiRefNet's presets.

Why an environment variable: a name must resolve in every process of a run, and maskd starts
processes of its own (``maskd serve`` re-executes itself as the daemon, a batch command starts a
daemon, ``--ray`` runs the model in Ray's worker processes), so registering in the process that
was started first is not enough. ``$MASKD_EXTENSIONS`` (comma-separated module names, like
pytest's ``PYTEST_PLUGINS``) is inherited by those processes (``server.ray_batch`` hands it to
its Ray job's workers) and each imports the modules, once, the first time a name is not found;
importing a module is what registers its names.

The product itself never sets it. The test suite does, for its weight-free ``stand-in`` model and
its ``null`` transport worker (``tests/standins.py``), so that code ships only with the tests.
"""

from __future__ import annotations

import importlib
import os
import threading

from maskd.core.errors import MaskdError

ENV = "MASKD_EXTENSIONS"

_loaded: set[str] = set()
_lock = threading.Lock()


def modules() -> list[str]:
    """The module names ``$MASKD_EXTENSIONS`` gives (empty when it is unset)."""
    return [name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()]


def load() -> None:
    """Import each module named in ``$MASKD_EXTENSIONS`` that is not imported yet.

    A module that cannot be imported is an error that names it (a misspelt name must not look like
    an unknown model)."""
    with _lock:
        for name in modules():
            if name in _loaded:
                continue
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise MaskdError(f"{ENV} names {name}, which cannot be imported: {exc}") from None
            _loaded.add(name)
