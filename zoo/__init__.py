"""zoo: binary neural networks for Keras, built on Larq.

>>> import zoo
>>> model = zoo.load("birealnet18", num_classes=10, input_shape=(32, 32, 3))

``import zoo`` sets ``TF_USE_LEGACY_KERAS=1`` (Larq needs Keras 2) before TensorFlow
loads. The API (and with it TensorFlow and every model) is imported on first use of
one of its names, so ``zoo --help`` does not pay for it.
"""
import importlib

from zoo._version import __version__
from zoo.settings import ensure_legacy_keras

ensure_legacy_keras(import_now=False)

from zoo.errors import (  # noqa: E402
    DatasetNotFoundError, DuplicateNameError, InvalidInputError, UnknownNameError,
    WeightsError, ZooError,
)

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "load": "zoo.api", "list_models": "zoo.api", "info": "zoo.api", "get_entry": "zoo.api",
    "MODELS": "zoo.api", "register_model": "zoo.registry", "Registry": "zoo.registry",
    "ModelEntry": "zoo.registry", "Paper": "zoo.papers",
    "preprocess_input": "zoo.preprocessing", "decode_predictions": "zoo.preprocessing",
    "download_weights": "zoo.hub.cache",
}

__all__ = [
    "load", "list_models", "info", "get_entry", "register_model", "Registry", "ModelEntry",
    "Paper", "MODELS", "ZooError", "UnknownNameError", "DuplicateNameError",
    "InvalidInputError", "DatasetNotFoundError", "WeightsError",
    "preprocess_input", "decode_predictions", "download_weights", "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        ensure_legacy_keras()  # quietly, and refusing Keras 3
        if name == "download_weights":
            importlib.import_module("zoo.api")  # the weight sets attached to their entries
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
