"""End-to-end tier: the real default model from the store (``make model``), on the runtime and in the
weight format the run names (``ALLINONE_TEST_BACKEND``, ``ALLINONE_TEST_PRECISION``; `make test` runs
this tier with both on ``auto``, what users get)."""

from __future__ import annotations

import pytest

from ops.common.paths import REPO_ROOT

STORE = REPO_ROOT / "models"


@pytest.fixture(scope="session")
def default_model_dir():
    current = STORE / "current"
    if not current.exists():
        pytest.fail("The default model is not installed: run `make model` (python -m ops.models install-default).")
    return current


@pytest.fixture(scope="session")
def real_engine(default_model_dir, tasks):
    from tests.conftest import make_test_engine

    engine = make_test_engine(default_model_dir, tasks, max_new_tokens=48)
    yield engine
    engine.close()
