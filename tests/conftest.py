"""Shared test setup: quiet TensorFlow, Keras 2 via ``import zoo``, the ``slow`` marker."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
