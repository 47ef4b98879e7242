"""Cooperative cancellation: the one way a running job is stopped.

The caller that may want to stop work (the daemon's worker, for a client's ``cancel``) runs it
inside ``checking(check)``; long loops in core call ``point()``, which calls ``check`` (it raises
to stop). While a check is set, every torch module's forward also calls it first (a global
forward pre-hook), so a model forward stops between blocks. Outside ``checking`` a point costs
one attribute lookup. The check is per thread: other threads' work is never interrupted.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable

_local = threading.local()
_hook_lock = threading.Lock()
_hook_installed = False


def point() -> None:
    """Stop here if the current thread's job was cancelled (its check raises)."""
    check = getattr(_local, "check", None)
    if check is not None:
        if not _hook_installed:  # torch imported after the block began (a lazily loaded model)
            _install_torch_hook()
        check()


def _forward_pre_hook(_module, _args) -> None:
    point()


def _install_torch_hook() -> None:
    """Once per process, when torch is in use: each module forward is a cancel point."""
    global _hook_installed
    torch = sys.modules.get("torch")
    if _hook_installed or torch is None:
        return
    with _hook_lock:
        if not _hook_installed:
            torch.nn.modules.module.register_module_forward_pre_hook(_forward_pre_hook)
            _hook_installed = True


@contextlib.contextmanager
def checking(check: Callable[[], None]):
    """Run the block with ``check`` as this thread's cancel check."""
    _install_torch_hook()
    previous = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = previous
