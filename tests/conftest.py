"""Shared test setup: quiet TensorFlow, Keras 2 via ``import zoo``, the ``slow`` marker."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")


import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture
def fresh_session():
    """A clean Keras session and a fixed seed around a test."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    yield
    tf.keras.backend.clear_session()


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (``--dist loadgroup``), the tests that share a module-scoped fixture
    (a trained run, a built supernet, a weights server) run on one worker, so each such
    fixture is built once; every other test goes to whichever worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = [name for name, defs in info.name2fixturedefs.items()
                  if defs and defs[-1].scope == "module"]
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}:module-fixtures"))
