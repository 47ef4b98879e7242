"""maskd daemon side: the ZeroMQ daemon, the wire protocol, the Python client and the CLI."""

__version__ = "0.1.0"
