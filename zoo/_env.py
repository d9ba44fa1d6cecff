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


def ensure_legacy_keras():
    """Set ``TF_USE_LEGACY_KERAS=1`` or raise if it is too late for it."""
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return
    import tensorflow as tf

    if str(getattr(tf.keras, "__version__", "")).startswith("2."):
        return
    raise ImportError(KERAS3_MESSAGE)
