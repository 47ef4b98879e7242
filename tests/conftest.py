"""Shared test fixtures: where the shared reference material is, generated weights, the CLI.

The shared folder (BiRefNet reference, evaluation photos, notes) sits beside the clone as
``../shared``; ``MASKD_SHARED`` overrides it. Generated weights are cached under
``.cache/test`` in the clone (``MASKD_TEST_CACHE`` overrides).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MASKD_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "birefnet"
EVALDATA = SHARED / "evaldata"
CACHE = Path(os.environ.get("MASKD_TEST_CACHE", REPO / ".cache" / "test"))


def require_editors() -> bool:
    """CI sets MASKD_REQUIRE_EDITORS=1: an editor test that cannot run must fail, not skip."""
    return os.environ.get("MASKD_REQUIRE_EDITORS") == "1"


def skip_or_fail(reason: str):
    if require_editors():
        pytest.fail(reason + " (MASKD_REQUIRE_EDITORS=1)")
    pytest.skip(reason)


def _golden_module():
    path = REFERENCE / "golden.py"
    if not path.exists():
        pytest.skip(f"BiRefNet reference not found at {REFERENCE} (set MASKD_SHARED)")
    spec = importlib.util.spec_from_file_location("maskd_golden_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def golden():
    """The shared deterministic generator (``generate_weights``, ``make_image``, ``normalise``)."""
    return _golden_module()


def generated_weights_path(variant: str) -> Path:
    """A .safetensors file in the official layout for ``variant`` ("lite" or "general"), cached."""
    manifest = REFERENCE / f"manifest-{variant}.json"
    if not manifest.exists():
        pytest.skip(f"manifest {manifest} not found (set MASKD_SHARED)")
    out = CACHE / f"generated-{variant}.safetensors"
    if not out.exists() or out.stat().st_mtime < manifest.stat().st_mtime:
        from safetensors.numpy import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        save_file(_golden_module().generate_weights(str(manifest)), str(tmp))
        os.replace(tmp, out)
    return out


@pytest.fixture(scope="session")
def lite_weights() -> Path:
    return generated_weights_path("lite")


@pytest.fixture(scope="session")
def general_weights() -> Path:
    return generated_weights_path("general")


@pytest.fixture(scope="session")
def evaldata() -> Path:
    if not (EVALDATA / "alphamatting").is_dir():
        pytest.skip(f"evaluation photos not found at {EVALDATA}")
    return EVALDATA


def maskd_command() -> list[str]:
    """How tests run the CLI: this checkout's code, whatever is installed."""
    return [sys.executable, "-m", "maskd.server"]


def maskd_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env
