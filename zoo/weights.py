"""Weights: resolve a ``weights=`` argument to a file and load it (h5, no pickle)."""
from __future__ import annotations

import os
from pathlib import Path

from zoo.errors import WeightsError


def resolve_weights_path(weights) -> Path:
    """A path to a weights file: the file itself, or a training run directory."""
    path = Path(os.path.expanduser(str(weights)))
    if path.is_dir():
        candidate = path / "weights.h5"
        if not candidate.is_file():
            raise WeightsError(
                f"{path} is a directory without weights.h5: pass the weights file, or a run "
                f"directory written by `zoo train`."
            )
        return candidate
    if not path.is_file():
        raise WeightsError(
            f"Weights file {path} does not exist: pass an existing .h5 file or run directory."
        )
    return path


def load_weights_file(model, weights) -> None:
    """Load an h5 weights file (or a run directory's weights.h5) into ``model``."""
    path = resolve_weights_path(weights)
    try:
        model.load_weights(str(path))
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"Cannot load weights from {path} into {model.name}: {first_line}. Check that the "
            f"file is a complete h5 weights file for this model, input shape and number of classes."
        ) from error
