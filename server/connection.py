"""The connection file: where clients find the daemon, and the key that proves they may use it.

``$XDG_RUNTIME_DIR/maskd/connection.json``, else ``<tmp>/maskd-<uid>/connection.json``
(``MASKD_CONNECTION_FILE`` overrides). The folder is 0700 and the file 0600, written atomically, so
other users can neither read the key nor swap the file. Everything a client needs (the file, the
ipc socket, the daemon's lock and default log) lives in that one folder, so bind-mounting the
folder into a sandbox (as the editor tests do) is enough for a plug-in inside to connect.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from maskd.core.errors import MaskdError
from maskd.plugins.maskd_client import default_connection_file

IPC_NAME = "maskd.sock"
LOCK_NAME = "maskd.lock"
LOG_NAME = "maskd.log"
MAX_UNIX_PATH = 100  # sun_path is 104-108 bytes depending on the OS


def connection_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or default_connection_file())


def new_key() -> str:
    return secrets.token_hex(32)


def prepare_dir(folder: Path) -> None:
    """Create the folder 0700; refuse (never chmod) a symlink, a folder another user owns, or one
    others can write: another user who made ``/tmp/maskd-<uid>`` first must not get our key, and
    a shared folder given with ``--connection-file`` keeps its mode."""
    from maskd.plugins import maskd_client as mc

    try:
        mc.make_private_dir(str(folder), "connection folder")
    except mc.MaskdClientError as exc:
        raise MaskdError(str(exc)) from None


def write_atomic(path: Path, info: dict) -> None:
    prepare_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def read(path: Path) -> dict | None:
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def ipc_endpoint(folder: Path) -> str | None:
    """``ipc://<folder>/maskd.sock`` where the platform has Unix sockets and the path fits."""
    if sys.platform == "win32":
        return None
    try:
        import zmq

        if not zmq.has("ipc"):
            return None
    except ImportError:
        return None
    path = str(folder / IPC_NAME)
    return "ipc://" + path if len(path.encode()) <= MAX_UNIX_PATH else None


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


class DaemonLock:
    """An exclusive lock on ``maskd.lock`` beside the connection file, held for the daemon's life:
    a second daemon for the same connection file cannot start, and a lock left by a dead daemon
    is released by the OS, so staleness never needs guessing."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self.fh = None

    def acquire(self) -> bool:
        prepare_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self.fh = os.fdopen(fd, "r+")
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(self.fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            self.fh = None
            return False
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()
        return True

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def lock_held(folder: Path) -> bool:
    """Whether a daemon holds ``folder``'s lock now (alive, even if it does not answer)."""
    path = Path(folder) / LOCK_NAME
    if sys.platform == "win32" or not path.exists():
        return False
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
