"""Installers: put the daemon, the weights and the editor plugins in place.

The modules here import only the standard library (and ``core.errors``) so the bootstrap installer
can run them with the system Python before maskd's own environment exists; ``installers.weights``
is the exception and runs inside that environment.
"""

from maskd.core.errors import MaskdError


class InstallError(MaskdError):
    """An install step failed; the message says what, where and how to fix it."""
