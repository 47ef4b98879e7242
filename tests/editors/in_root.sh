#!/bin/sh
# Run a command inside the editors' root in a private mount namespace: /proc,
# /dev, a fresh tmpfs /tmp and bind mounts vanish with the process, so deleting
# the root can never reach the host's /dev, and Krita's single-instance lock in
# /tmp never collides between runs.
#
# usage: in_root.sh ROOT [-b HOSTDIR:ROOTDIR]... -- command [args...]
# The environment inside is clean (HOME=/root, PATH, LANG); pass more with `env`.
set -eu
ROOT=$(readlink -f "$1"); shift
BINDS=""
while [ $# -gt 0 ]; do
  case "$1" in
    -b) BINDS="$BINDS $2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ -x "$ROOT/bin/sh" ] || { echo "in_root: $ROOT is not a root fs" >&2; exit 2; }
export ROOT BINDS
exec unshare --mount --propagation private -- sh -eu -c '
  mount -t proc proc "$ROOT/proc"
  mount --rbind /dev "$ROOT/dev"
  mount -t tmpfs -o size=1g tmpfs "$ROOT/tmp"
  for b in $BINDS; do
    src=${b%%:*}; dst=${b#*:}
    mkdir -p "$ROOT$dst"
    mount --bind "$src" "$ROOT$dst"
  done
  [ -f /etc/resolv.conf ] && cp /etc/resolv.conf "$ROOT/etc/resolv.conf" || true
  exec chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
' in_root "$@"
