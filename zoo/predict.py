"""``zoo predict``: the top classes of image files or arrays for a weight set or a run."""
from __future__ import annotations

import os
from typing import Optional, Sequence

from zoo import data as zdata
from zoo.api import get_entry, load
from zoo.errors import InvalidInputError
from zoo.hub.loading import resolve_weights_path
from zoo.hub.spec import get_spec, is_tag, split_tag
from zoo.preprocessing import Feed, decode_predictions, feed_for, preprocess_input, read_image
from zoo.runs import load_for_evaluation, run_config


def _load_run(name: str, run_path, dataset: Optional[str]):
    """A model from a weights path (file or run dir) plus its feed (dataset from config.json)."""
    path = resolve_weights_path(run_path)
    if dataset is None:
        dataset = (run_config(path) or {}).get("dataset")
    if dataset is None:
        raise InvalidInputError(f"Pass the dataset {path} was trained on (--dataset): it sets the "
                                f"preprocessing and labels.")
    net, dspec, input_shape = load_for_evaluation(name, path, dataset)
    return net, Feed(dspec, tuple(input_shape), tuple(zdata.class_names(dspec)), str(path))


def predict(name: str, images: Sequence, weights=None, top: int = 5, dataset: Optional[str] = None):
    """Top-``top`` ``(label, probability)`` lists for image files or arrays, and the source.

    ``name`` may be ``"model.tag"``; ``weights`` a tag (default: the model's only weight
    set) or a weights file / run directory (``dataset`` from its config.json)."""
    model_name, name_tag = split_tag(name)
    entry = get_entry(model_name)
    if weights is None or is_tag(entry, weights):
        spec = get_spec(entry, weights or name_tag)
        feed = feed_for(spec)
        net = load(entry.name, weights=spec)
    else:
        net, feed = _load_run(entry.name, weights, dataset)
    arrays = [read_image(i) if isinstance(i, (str, os.PathLike)) else i for i in images]
    batch = preprocess_input(arrays, feed)
    probs = net.predict(batch, verbose=0)
    return decode_predictions(probs, top=top, name_or_spec=feed), feed.key
