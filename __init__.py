"""maskd: BiRefNet background removal as a library, a local daemon, editor plugins and a CLI.

    import maskd
    cut = maskd.remove("photo.jpg")                          # RGBA array (PIL in → PIL out)
    session = maskd.new_session()                            # a running daemon, else in-process
    mask = maskd.remove(image, session=session, output="alpha")
    alpha = maskd.refine(image, rough_mask)                  # no model needed

The repository's top-level folders install as one namespace: ``maskd.core`` (compute),
``maskd.server`` (daemon, protocol, client, CLI, this API in ``maskd.server.api``),
``maskd.plugins`` and ``maskd.installers``. Importing ``maskd`` is cheap: the API (numpy, and
torch for an in-process model) is loaded on first use.
"""

from maskd.plugins.maskd_client import CLIENT_VERSION as __version__  # noqa: F401  (the one version string)

__all__ = ["new_session", "remove", "refine", "Session", "__version__"]
_API = {"new_session", "remove", "refine", "Session"}


def __getattr__(name: str):
    if name in _API:
        from maskd.server import api

        return getattr(api, name)
    raise AttributeError(f"module 'maskd' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _API)
