"""Errors a user can act on.

Anything raised as a ``MaskdError`` is shown to the user as its message alone (no traceback):
the message must say what went wrong, which file or value is involved and how to fix it.
"""


class MaskdError(Exception):
    """An error with a message meant for the user."""


class WeightsError(MaskdError):
    """Model weights are missing, unreadable, or do not match the architecture."""


class InputError(MaskdError):
    """An image, mask or option the caller passed cannot be used."""
