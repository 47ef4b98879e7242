"""The test-only ``stand-in`` model and ``null`` worker live in ``tests/standins.py``, not the product.

The product keeps only the registry they plug into (``core.extensions``): its files hold no
stand-in or null-worker code, its CLI and its daemon's ``hello`` name neither, and a maskd process
knows them only when ``$MASKD_EXTENSIONS`` names ``tests.standins``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

from tests.daemon_fixtures import short_tmp, start_daemon
from tests.helpers import REPO, STANDINS_ENV, maskd_env, product_files, run_maskd

TEST_ONLY_NAME = re.compile(r"(?i)stand_?in(?!g)|null_?(work|delay|worker)")
TEST_ONLY_STRING = re.compile(r"(?i)^(stand-in|null)$|null_delay")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (their prose may point at the tests)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_the_product_files_hold_no_stand_in_or_null_worker():
    found = []
    for path in product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            name = getattr(node, "name", None) or getattr(node, "id", None) or getattr(node, "attr", None)
            if isinstance(name, str) and TEST_ONLY_NAME.search(name):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: name {name}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if TEST_ONLY_STRING.search(node.value.strip()):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: string {node.value!r}")
    assert not found, "test-only code in the product:\n" + "\n".join(found)


def _product_env() -> dict:
    env = maskd_env()
    env.pop("MASKD_EXTENSIONS", None)
    return env


def _run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return run_maskd(*args, env=env, timeout=120)


def test_the_cli_names_no_test_only_model_or_worker(tmp_path):
    env = _product_env()
    for args in (["serve", "--help"], ["models"], ["--help"]):
        r = _run(*args, env=env)
        assert r.returncode == 0, r.stderr
        assert not re.search(r"(?i)stand-?in\b|\bnull\b", r.stdout), (args, r.stdout)
    r = _run("serve", "--worker", "null", "--connection-file", str(tmp_path / "c.json"), env=env)
    assert r.returncode == 1 and "no such worker" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "c.json").exists()


def test_without_the_extension_the_product_registers_only_its_own():
    code = (
        "from maskd.core import session; from maskd.server import daemon, api, ray_batch; "
        "from maskd.core.session import SessionSpec, open_session; "
        "print(sorted(daemon.WORKERS), sorted(session._SESSION_KINDS), "
        "type(open_session(SessionSpec(model='stand-in'))).__name__)"
    )
    cmd = [sys.executable, "-c", code]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_product_env(), cwd="/", timeout=120)
    assert r.stdout.split() == ["['pipeline']", "[]", "BiRefNetSession"], r.stdout + r.stderr


def test_a_misnamed_extension_module_is_a_clear_error(tmp_path):
    env = maskd_env(MASKD_EXTENSIONS="tests.no_such_module")
    r = _run("serve", "--worker", "null", "--connection-file", str(tmp_path / "c.json"), env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "MASKD_EXTENSIONS" in r.stderr and "tests.no_such_module" in r.stderr, r.stderr


def test_a_stand_in_daemons_hello_advertises_no_test_only_name(tmp_path_factory):
    """Its model is the stand-in (what it serves), but no preset, option or worker is test-only."""
    assert os.environ.get("MASKD_EXTENSIONS") != STANDINS_ENV["MASKD_EXTENSIONS"], "set per process only"
    d = start_daemon(short_tmp(tmp_path_factory, "hello"))
    try:
        with d.client() as c:
            hello = c.hello()
            status = c.status()
        assert hello["model"]["name"] == "stand-in" and status["worker"] == "null"
        assert "stand-in" not in [p["name"] for p in hello["presets"]]
        rest = json.dumps({k: v for k, v in hello.items() if k != "model"})
        assert not re.search(r"(?i)stand-?in|null", rest), rest
    finally:
        d.stop()
