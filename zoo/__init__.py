"""zoo: binary neural networks for Keras, built on Larq.

>>> import zoo
>>> model = zoo.load("birealnet18", num_classes=10, input_shape=(32, 32, 3))
"""
from zoo._env import ensure_legacy_keras

ensure_legacy_keras()

from zoo.errors import (  # noqa: E402
    DatasetNotFoundError, DuplicateNameError, InvalidInputError, UnknownNameError,
    WeightsError, ZooError,
)
from zoo.registry import MODELS, ModelEntry, Paper, Registry, register_model  # noqa: E402
from zoo.api import get_entry, info, list_models, load  # noqa: E402
from zoo import models  # noqa: E402,F401  (registers the model entries)
from zoo.weights import (  # noqa: E402
    attach_manifest, decode_predictions, download_weights, preprocess_input,
)

attach_manifest(strict=False)  # weights/manifest.json (or $ZOO_MANIFEST) -> entry.weights

__version__ = "0.1.0"

__all__ = [
    "load", "list_models", "info", "get_entry", "register_model", "Registry", "ModelEntry",
    "Paper", "MODELS", "ZooError", "UnknownNameError", "DuplicateNameError",
    "InvalidInputError", "DatasetNotFoundError", "WeightsError",
    "preprocess_input", "decode_predictions", "download_weights",
]
