#!/bin/sh
# Build (or reuse) the Debian 13 "trixie" root in which the editor tests run
# real GIMP 3 and Krita 5.2 headless (Debian 12 only has GIMP 2.10 / Krita 5.1).
# Idempotent: a stamp file records the package list; when it matches, nothing is
# done. Kept outside the clone (default /var/cache/maskd/trixie-root) so a reused
# CI machine skips the ~200 s build.
#
# usage: setup_root.sh [ROOT]
set -eu
ROOT=${1:-${MASKD_EDITORS_ROOT:-/var/cache/maskd/trixie-root}}
HERE=$(cd "$(dirname "$0")" && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PKGS="gimp python3-gi gir1.2-gimp-3.0 gir1.2-gegl-0.4 krita python3-pyqt5 xvfb xauth"
STAMP="$ROOT/.maskd-root-stamp"
WANT="trixie $PKGS"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "setup_root: $ROOT up to date"
  exit 0
fi
t0=$(date +%s)
mkdir -p "$(dirname "$ROOT")"
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
  rm -rf "$ROOT.partial"
  debootstrap --variant=minbase trixie "$ROOT.partial" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; exit 1; }
  mv "$ROOT.partial" "$ROOT"
fi
t1=$(date +%s)
cat > "$ROOT/etc/apt/sources.list" <<EOT
deb $MIRROR trixie main
deb $MIRROR trixie-updates main
deb ${MIRROR%/debian}/debian-security trixie-security main
EOT
mkdir -p "$ROOT/etc/dpkg/dpkg.cfg.d"
cat > "$ROOT/etc/dpkg/dpkg.cfg.d/01-maskd-nodoc" <<'EOT'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/gimp/3.0/help/*
EOT
"$HERE/in_root.sh" "$ROOT" -- sh -euc "
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
  apt-get clean
  rm -rf /var/lib/apt/lists/*
"
t2=$(date +%s)
echo "$WANT" > "$STAMP"
echo "setup_root: debootstrap $((t1 - t0)) s, packages $((t2 - t1)) s, size $(du -sxh "$ROOT" | cut -f1)"
