"""A real second local user for attack tests: created with ``useradd`` when missing (CI runs as
root), and Python code run as that uid in a subprocess (``os.setuid`` after raising its own
descriptor limit)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import textwrap

import pytest

ATTACKER = "maskd-attacker"


def attacker_ids() -> tuple[int, int]:
    """(uid, gid) of the attacker account; skips the test when it cannot exist here."""
    if not hasattr(os, "getuid") or os.getuid() != 0:
        pytest.skip("needs root (to create a second user and become it)")
    try:
        entry = pwd.getpwnam(ATTACKER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            pytest.skip("useradd is not available")
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(ATTACKER)
    return entry.pw_uid, entry.pw_gid


def run_as_attacker(code: str, *args: str, nofile: int = 8192, **popen) -> subprocess.Popen:
    """Start ``code`` (a Python script) as the attacker; stdout/stdin are pipes."""
    uid, gid = attacker_ids()
    preamble = textwrap.dedent(f"""
        # imported as root: the attacker may not be able to read this Python's files
        import encodings.idna, json, os, resource, select, socket, struct, sys, time
        resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}))
        os.setgroups([])
        os.setgid({gid})
        os.setuid({uid})
        assert os.getuid() == {uid}
    """)
    return subprocess.Popen(
        [sys.executable, "-c", preamble + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        **popen,
    )
