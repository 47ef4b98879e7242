"""maskd: BiRefNet background removal as a library, a local daemon, editor plugins and a CLI.

The repository's top-level folders install as one namespace: ``maskd.core`` (compute),
``maskd.server`` (daemon, protocol, client, CLI), ``maskd.plugins`` and ``maskd.installers``.
Importing ``maskd`` is cheap: nothing below is loaded until it is used.
"""

from maskd.plugins.maskd_client import CLIENT_VERSION as __version__  # noqa: F401  (the one version string)
