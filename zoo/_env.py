"""Make sure TensorFlow runs with Keras 2 (tf-keras), which Larq requires.

Imported first by ``zoo/__init__.py``: it sets ``TF_USE_LEGACY_KERAS=1`` before
TensorFlow is imported, and refuses to continue when TensorFlow was already
imported with Keras 3 (then the variable comes too late to take effect).
"""
import os
import sys

KERAS3_MESSAGE = (
    "zoo needs Keras 2 (the tf-keras package), but TensorFlow was already imported "
    "with Keras 3. Import zoo before TensorFlow, or set TF_USE_LEGACY_KERAS=1 in the "
    "environment before Python starts (e.g. `export TF_USE_LEGACY_KERAS=1`)."
)


def _quiet_import_tensorflow():
    """Import TensorFlow with the C++ start-up chatter (CUDA plugin registration on
    machines without a GPU) kept off stderr; ZOO_TF_VERBOSE=1 shows it."""
    if os.environ.get("ZOO_TF_VERBOSE") == "1":
        import tensorflow  # noqa: F401

        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. a captured stream in tests
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stderr_fd)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, stderr_fd)
        os.close(saved)
        os.close(devnull)


def ensure_legacy_keras():
    """Set ``TF_USE_LEGACY_KERAS=1`` or raise if it is too late for it."""
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ chatter off; errors still raise
        _quiet_import_tensorflow()
        return
    import tensorflow as tf

    if tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        return
    raise ImportError(KERAS3_MESSAGE)
