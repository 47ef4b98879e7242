"""Starting the daemon with the user session, for editors that cannot start it themselves.

A Flatpak (or Snap) editor runs in a sandbox: it cannot start a host program, and it does not see
the host's ``$XDG_RUNTIME_DIR`` where the daemon's connection file lives. So for those editors the
installer:

- adds an autostart entry (Linux: a systemd user unit, enabled for ``default.target``; macOS: a
  launchd agent; Windows: a Startup-folder script) running ``maskd serve --foreground``;
- on Linux runs it through ``python -m maskd.installers.service run --mirror PATH… -- COMMAND``: a small
  supervisor that copies the daemon's connection file (mode 0600) into a folder each sandbox sees
  at the same path (``~/.var/app/<app-id>/data/maskd/connection.json`` for Flatpak,
  ``~/snap/krita/common/maskd/connection.json`` for Snap) whenever it changes, and removes the
  copies when the daemon stops. The plugins in sandboxes read that copy and reach the daemon over
  TCP on 127.0.0.1 (sandboxed editors share the host's network; the ipc socket is not visible).
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from maskd.installers.locations import LAUNCHD_LABEL, SERVICE_NAME, Platform
from maskd.installers.manifest import Manifest


def _systemd_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "/._-+=:,@" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def supervisor_command(python: Path, serve_command: list[str], mirrors: list[Path]) -> list[str]:
    command = [str(python), "-m", "maskd.installers.service", "run"]
    for mirror in mirrors:
        command += ["--mirror", str(mirror)]
    return command + ["--"] + [str(c) for c in serve_command]


def service_text(plat: Platform, command: list[str], log_file: Path | None = None) -> str:
    """The autostart entry's text for ``plat`` (``command`` runs the daemon in the foreground)."""
    if plat.system == "linux":
        return (
            "# Written by the maskd installer; `maskd uninstall` removes it.\n"
            "[Unit]\n"
            "Description=maskd background removal daemon (serves sandboxed GIMP/Krita)\n\n"
            "[Service]\n"
            "Type=simple\n"
            f"ExecStart={' '.join(_systemd_quote(c) for c in command)}\n"
            "Restart=on-failure\n"
            "RestartSec=5\n\n"
            "[Install]\n"
            "WantedBy=default.target\n"
        )
    if plat.system == "darwin":
        plist = {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": [str(c) for c in command],
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ProcessType": "Background",
        }
        if log_file:
            plist["StandardOutPath"] = plist["StandardErrorPath"] = str(log_file)
        return plistlib.dumps(plist).decode("utf-8")
    quoted = " ".join(f'"{c}"' if " " in str(c) else str(c) for c in command)
    return (
        "@echo off\r\nrem Written by the maskd installer; `maskd uninstall` removes it.\r\n"
        f'start "maskd" /min {quoted}\r\n'
    )


def _systemctl_user_available() -> bool:
    if not shutil.which("systemctl"):
        return False
    try:
        r = subprocess.run(
            ["systemctl", "--user", "show-environment"],
            capture_output=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def install_service(
    plat: Platform,
    manifest: Manifest,
    serve_command: list[str],
    *,
    python: Path | None = None,
    mirrors: list[Path] = (),
    start: bool = True,
) -> list[str]:
    """Write and enable the autostart entry; returns lines for the summary."""
    path = plat.service_file()
    lines = []
    if plat.system == "linux":
        command = supervisor_command(
            Path(python or sys.executable), list(serve_command) + ["--foreground"], list(mirrors)
        )
    else:
        command = list(serve_command) + ["--foreground"] if plat.system == "darwin" else list(serve_command)
    manifest.ensure_dir(path.parent)
    text = service_text(plat, command, log_file=plat.data_dir / "daemon.log")
    path.write_text(text, encoding="utf-8", newline="")
    manifest.add("service", path, system=plat.system, name=SERVICE_NAME)
    lines.append(f"autostart entry {path}")
    if plat.system == "linux":
        wants = path.parent / "default.target.wants"
        manifest.ensure_dir(wants)
        link = wants / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path("..") / path.name)
        manifest.add("file", link)
        if start and plat.probe and _systemctl_user_available():
            for args in (["daemon-reload"], ["restart", f"{SERVICE_NAME}.service"]):
                subprocess.run(
                    ["systemctl", "--user"] + args, capture_output=True, timeout=60, stdin=subprocess.DEVNULL
                )
            lines.append(f"started it now (systemctl --user status {SERVICE_NAME})")
        else:
            lines.append(
                "it starts at your next login (no systemd user session reachable now; "
                f"or run: systemctl --user start {SERVICE_NAME})"
            )
    elif plat.system == "darwin" and start and plat.probe and shutil.which("launchctl"):
        subprocess.run(["launchctl", "unload", str(path)], capture_output=True, timeout=30)
        subprocess.run(["launchctl", "load", str(path)], capture_output=True, timeout=30)
        lines.append("loaded it now (launchctl list | grep maskd)")
    for mirror in mirrors:
        manifest.ensure_dir(Path(mirror).parent)
        manifest.add("file", mirror)
    return lines


# --------------------------------------------------------------------------- the supervisor


def _copy_private(data: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(dest.parent, 0o700)
    from maskd.core.atomicfile import write_atomic

    write_atomic(dest, data, mode=0o600)


def run_with_mirrors(
    command: list[str], mirrors: list[Path], primary: Path | None = None, poll: float = 0.5
) -> int:
    """Run the daemon in the foreground, keeping copies of its connection file where sandboxes see them."""
    primary = Path(primary or Platform.current().default_connection_file())
    env = dict(os.environ, MASKD_CONNECTION_FILE=str(primary))
    proc = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    last = None
    try:
        while proc.poll() is None:
            try:
                data = primary.read_bytes()
            except OSError:
                data = None
            if data != last:
                for mirror in mirrors:
                    if data is None:
                        Path(mirror).unlink(missing_ok=True)
                    else:
                        _copy_private(data, Path(mirror))
                last = data
            time.sleep(poll)
    finally:
        for mirror in mirrors:
            Path(mirror).unlink(missing_ok=True)
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maskd.installers.service",
        description="Run maskd serve; mirror its connection file into sandboxes",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run")
    run.add_argument("--mirror", action="append", default=[], type=Path)
    run.add_argument("--primary", type=Path, default=None)
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the daemon command after --")
    return run_with_mirrors(command, args.mirror, args.primary)


if __name__ == "__main__":
    sys.exit(main())
