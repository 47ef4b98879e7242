"""Writing files atomically and safely, in folders other users may share.

Every output maskd writes (images, layered files, sidecars) goes through ``write_atomic``: the data
goes to a temporary file in the output's folder, then one ``rename`` puts it in place, so an
interrupted run leaves the old file or the new one, never half of one.

The temporary is made like ``mkstemp``: a random name, created with ``O_CREAT | O_EXCL`` (and
``O_NOFOLLOW``), so a name planted in advance — a symlink to someone's file, in a shared folder —
is never opened or followed; the random part is retried on a clash. Names look like
``.NAME.maskd-XXXXXXXX.tmp``: hidden, and recognisably maskd's.

A ``kill -9`` between creating and renaming leaves such a file behind. ``write_atomic`` removes
stale ones the first time it writes into a folder (once per folder per process): only names with
maskd's pattern, only regular files (a symlink is never touched), only files owned by this user,
and only ones untouched for ``STALE_AFTER_S`` (an hour: far longer than any write takes, so a
concurrent maskd writing there keeps its temporary). Removing a name never follows it.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path

TEMP_MARK = ".maskd-"
TEMP_SUFFIX = ".tmp"
STALE_AFTER_S = 3600.0
_STALE_NAME = re.compile(r"^\..+\.maskd-[A-Za-z0-9_]{6,}\.tmp$")
_cleaned: set[str] = set()
_umask_cache: list[int] = []


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` is set-and-return: racy in threads)."""
    if not _umask_cache:
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("Umask:"):
                        _umask_cache.append(int(line.split()[1], 8))
                        break
        except OSError:
            pass
        if not _umask_cache:
            mask = os.umask(0o022)
            os.umask(mask)
            _umask_cache.append(mask)
    return _umask_cache[0]


def temporary(path: Path) -> tuple[int, Path]:
    """(fd, name) of a new temporary file beside ``path``: random name, created exclusively, mode 0600."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:180]}{TEMP_MARK}", suffix=TEMP_SUFFIX, dir=path.parent)
    return fd, Path(name)


def write_atomic(path, data: bytes | memoryview, *, sync: bool = False, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a random temporary in the same folder and a rename.

    The new file gets ``mode`` if given, else keeps the mode of the regular file it replaces, else
    gets ``0666 & ~umask`` (as a plain ``open`` would). A symlink at ``path`` is replaced, never
    followed. ``sync`` flushes the data to disk before the rename. Raises ``OSError``; the
    temporary never survives a failure.
    """
    path = Path(path)
    clean_stale(path.parent)
    fd, tmp = temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
            if mode is None:
                try:
                    old = os.lstat(path)
                    mode = stat.S_IMODE(old.st_mode) if stat.S_ISREG(old.st_mode) else None
                except FileNotFoundError:
                    pass
            os.fchmod(fh.fileno(), (0o666 & ~umask()) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def clean_stale(folder, *, now: float | None = None, force: bool = False) -> list[Path]:
    """Remove maskd's own temporaries left in ``folder`` by a killed run (see the module docstring).

    Runs once per folder per process unless ``force``; returns what it removed. Never raises.
    """
    folder = Path(folder)
    key = os.path.abspath(folder)
    if key in _cleaned and not force:
        return []
    _cleaned.add(key)
    removed = []
    now = time.time() if now is None else now
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _STALE_NAME.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
                continue
            if now - st.st_mtime < STALE_AFTER_S:
                continue
            os.unlink(entry.path)  # unlink removes the name itself, never what it might point to
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed
