#!/usr/bin/env bash
# maskd installer for Linux and macOS: maskd's own Python environment, the right torch build, the
# model weights and the GIMP/Krita plugins, in one command. Safe to re-run (upgrades in place).
#   ./installers/install.sh                          # everything, default model for this machine
#   ./installers/install.sh --weights FILE --variant lite   # no network to the hub: a local file
#   ./installers/install.sh --help                   # every option
#   ./installers/install.sh --uninstall              # remove what it installed
# The logic lives in installers/install.py (standard library only); this only finds a Python >= 3.10
# that can create virtual environments. On Debian/Ubuntu, where the venv module (ensurepip) is a
# separate package, it installs that package with apt-get: directly as root, through sudo otherwise.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# new enough, and able to create a venv with pip in it (Debian ships ensurepip in pythonX.Y-venv)
new_enough() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; }
has_venv() { new_enough "$1" && "$1" -c 'import venv, ensurepip' >/dev/null 2>&1; }

find_python() {
    local candidate first=""
    for candidate in python3 python3.13 python3.12 python3.11 python3.10 python; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if has_venv "$candidate"; then echo "$candidate"; return; fi
        if [ -z "$first" ] && new_enough "$candidate"; then first="$candidate"; fi
    done
    echo "$first"
}

# apt-get as root, or through sudo for a normal user; says what it runs and why
apt_install() {
    local as=""
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "install.sh: $1 is missing and installing it needs root: run as root" \
                "\`apt-get install -y ${*:2}\`, then this again." >&2
            exit 1
        fi
        as="sudo"
    fi
    echo "install.sh: $1 is missing; installing it: ${as:+$as }apt-get install -y ${*:2}" >&2
    # a fresh container has no package lists yet: update once and try again
    $as apt-get install -y "${@:2}" || { $as apt-get update && $as apt-get install -y "${@:2}"; } || {
        echo "install.sh: apt-get could not install ${*:2} (see above)." >&2
        exit 1
    }
}

py="${MASKD_PYTHON:-}"
[ -n "$py" ] || py="$(find_python)"
if command -v apt-get >/dev/null 2>&1; then
    if [ -z "$py" ] && [ -z "${MASKD_PYTHON:-}" ]; then
        apt_install "Python 3" python3 python3-venv
        py="$(find_python)"
    elif [ -n "$py" ] && new_enough "$py" && ! has_venv "$py" \
        && [ "$("$py" -c 'import sys; print(sys.base_prefix)')" = /usr ]; then  # Debian's own Python
        version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt_install "Python's venv module for $py" "python$version-venv"
    fi
fi
if [ -z "$py" ] || ! has_venv "$py"; then
    echo "install.sh: maskd needs Python 3.10 or newer with the venv module${py:+ ($py has none, or is older)}." >&2
    if command -v apt-get >/dev/null 2>&1; then
        echo "  Debian/Ubuntu: apt-get install -y python3 python3-venv (as root)" >&2
    elif [ "$(uname -s)" = Darwin ]; then
        echo "  macOS: install Python from https://www.python.org/downloads/ or 'brew install python'" >&2
    fi
    echo "  Or point MASKD_PYTHON at one: MASKD_PYTHON=/path/to/python3 $0 $*" >&2
    exit 1
fi
exec "$py" "$here/install.py" "$@"
