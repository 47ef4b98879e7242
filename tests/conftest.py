"""Shared test fixtures: the BiRefNet reference generator, generated weights, evaluation photos.

Plain helpers (paths, the CLI command, installer homes, scenes) live in ``tests/helpers.py``; test
files import them from there, never from another test file or this one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Names test files used to import from here, kept so that branches written before tests/helpers.py
# still import; new code imports them from tests.helpers. (The lead may drop this after merging.)
from tests.helpers import (  # noqa: E402, F401
    CACHE,
    EVALDATA,
    REFERENCE,
    REPO,
    generated_weights_path,
    golden_module,
    maskd_command,
    maskd_env,
    skip_or_fail,
)


@pytest.fixture(scope="session")
def golden():
    """The shared deterministic generator (``generate_weights``, ``make_image``, ``normalise``)."""
    return golden_module()


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
