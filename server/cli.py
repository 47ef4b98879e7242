"""The ``maskd`` command line: one console script, one module per subcommand.

Each subcommand lives in ``server/commands/<name>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``maskd --help`` stays fast and torch is never imported for it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from maskd.server import __version__

# name -> module under server.commands (dashes become underscores)
COMMANDS = [
    ("serve", "Start the daemon (loads the model once, serves GIMP, Krita and the CLI)"),
    ("status", "Show whether the daemon runs, where, and what it holds"),
    ("stop", "Stop the running daemon"),
    ("remove", "Remove the background of images, folders and layered files"),
    ("refine", "Refine a rough mask to a full-resolution alpha (no model needed)"),
    ("finish", "Finish existing cut-outs: background, shadow, crop, canvas (no model needed)"),
    ("models", "List the model presets and where their weights are"),
    ("fetch", "Download a preset's weights once (or check a local weights file)"),
    ("install-plugins", "Install the GIMP and Krita plugins into every editor found"),
    ("uninstall", "Remove exactly what the installer put in place"),
    ("doctor", "Check daemon, weights, device and plugins, and say what to fix"),
    ("gimp-batch", "Run GIMP's own batch mode over a folder of XCF files"),
    ("krita-batch", "Run Krita's kritarunner over a folder of KRA files"),
]


def _module(name: str):
    return importlib.import_module("maskd.server.commands." + name.replace("-", "_"))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskd",
        description="Background removal with BiRefNet for GIMP, Krita and the command line.",
    )
    parser.add_argument("--version", action="version", version="maskd " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only == name:
            _module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from maskd.core.errors import MaskdError

    argv = list(sys.argv[1:] if argv is None else argv)
    known = {name for name, _ in COMMANDS}
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in known:
        command = None
    try:
        parser = build_parser(only=command)
    except ModuleNotFoundError as exc:
        print(f"maskd {command}: this command is not available in this build ({exc})", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(_module(args.command).run(args) or 0)
    except MaskdError as exc:
        print(f"maskd {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"maskd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
