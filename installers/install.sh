#!/usr/bin/env bash
# maskd installer for Linux and macOS: maskd's own Python environment, the right torch build, the
# model weights and the GIMP/Krita plugins, in one command. Safe to re-run (upgrades in place).
#   ./installers/install.sh                          # everything, default model for this machine
#   ./installers/install.sh --weights FILE --variant lite   # no network to the hub: a local file
#   ./installers/install.sh --help                   # every option
#   ./installers/install.sh --uninstall              # remove what it installed
# The logic lives in installers/install.py (standard library only); this only finds a Python >= 3.10.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ok() { "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; }

py="${MASKD_PYTHON:-}"
if [ -z "$py" ]; then
    for candidate in python3 python3.13 python3.12 python3.11 python3.10 python; do
        if command -v "$candidate" >/dev/null 2>&1 && ok "$candidate"; then py="$candidate"; break; fi
    done
fi
if [ -z "$py" ] || ! ok "$py"; then
    echo "install.sh: maskd needs Python 3.10 or newer with the venv module." >&2
    if command -v apt-get >/dev/null 2>&1; then
        echo "  Debian/Ubuntu: sudo apt install python3 python3-venv" >&2
    elif [ "$(uname -s)" = Darwin ]; then
        echo "  macOS: install Python from https://www.python.org/downloads/ or 'brew install python'" >&2
    fi
    echo "  Or point MASKD_PYTHON at one: MASKD_PYTHON=/path/to/python3 $0 $*" >&2
    exit 1
fi
exec "$py" "$here/install.py" "$@"
