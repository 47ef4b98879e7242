"""maskd daemon side: the ZeroMQ daemon, the wire protocol, the Python client and the CLI."""

from maskd.plugins.maskd_client import CLIENT_VERSION as __version__  # noqa: F401  (the one version string)
