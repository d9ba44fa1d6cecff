"""Feeding a weight set: ``preprocess_input``, ``decode_predictions``, ``read_image``.

Images are prepared exactly as ``zoo evaluate`` feeds the weight set's test split
(``zoo.data.preprocess`` with the record's dataset, mean/std and input shape).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.errors import InvalidInputError
from zoo.hub.spec import WeightSpec, get_spec, split_tag
from zoo.api import MODELS  # the registry, with every model entry and weight set attached

@dataclasses.dataclass(frozen=True)
class Feed:
    """How to feed a model: the dataset spec and input shape zoo.data.preprocess uses, labels."""

    dataset: Any
    input_shape: Tuple[int, int, int]
    labels: Tuple[str, ...]
    key: str


def _dataset_for(spec: WeightSpec):
    pre = dict(spec.preprocessing)
    name = pre.get("dataset") or spec.dataset
    try:
        dataset = zdata.get_dataset(name)
    except Exception:  # noqa: BLE001 - an unregistered dataset: build one from the record
        native = tuple(pre.get("native_shape") or (None, None, spec.input_shape[2]))
        dataset = zdata.DatasetSpec(
            name=name or spec.key, tfds_name=None, num_classes=spec.num_classes,
            image_shape=native, default_size=spec.input_shape[0],
            mean=tuple(pre.get("mean") or (0.0,)), std=tuple(pre.get("std") or (1.0,)))
    changes = {}
    if pre.get("mean"):
        changes["mean"] = tuple(float(m) for m in pre["mean"])
    if pre.get("std"):
        changes["std"] = tuple(float(s) for s in pre["std"])
    if pre.get("native_shape"):
        changes["image_shape"] = tuple(None if d is None else int(d) for d in pre["native_shape"])
    return dataclasses.replace(dataset, **changes)


IMAGENET_CLASSES_FILE = Path(__file__).resolve().parent / "imagenet_classes.txt"


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> Tuple[str, ...]:
    """The 1000 ImageNet class names in the standard (sorted synset) order, shipped with
    the package (``zoo/imagenet_classes.txt``: each class's first WordNet name)."""
    labels = tuple(line.strip() for line in IMAGENET_CLASSES_FILE.read_text().splitlines()
                   if line.strip())
    if len(labels) != 1000:
        raise RuntimeError(f"{IMAGENET_CLASSES_FILE} holds {len(labels)} names, not 1000: "
                           f"reinstall the zoo.")
    return labels


def _labels_for(spec: WeightSpec, dataset) -> Tuple[str, ...]:
    if isinstance(spec.labels, tuple) and spec.labels:
        return spec.labels
    label_set = spec.labels if isinstance(spec.labels, str) and spec.labels else dataset.name
    if label_set in ("imagenet2012", "imagenet"):
        return imagenet_labels()
    try:
        labels = tuple(zdata.class_names(zdata.get_dataset(label_set)))
    except Exception:  # noqa: BLE001
        labels = ()
    if len(labels) != spec.num_classes:
        labels = tuple(str(i) for i in range(spec.num_classes))
    return labels


def feed_for(name_or_spec) -> Feed:
    """A weight set (spec, ``"model.tag"``, or a model with one weight set) or a dataset name."""
    if isinstance(name_or_spec, Feed):
        return name_or_spec
    if isinstance(name_or_spec, str) and split_tag(name_or_spec)[0] not in MODELS:
        try:
            dataset = zdata.get_dataset(name_or_spec)
        except Exception as error:  # noqa: BLE001
            raise InvalidInputError(
                f"{name_or_spec!r} is neither a weight set (model.tag) nor a dataset.") from error
        labels = tuple(zdata.class_names(dataset))
        if dataset.name == "imagenet2012":
            labels = imagenet_labels()
        return Feed(dataset, zdata.input_shape_for(dataset), labels, dataset.name)
    spec = get_spec(name_or_spec)
    dataset = _dataset_for(spec)
    return Feed(dataset, tuple(spec.input_shape), _labels_for(spec, dataset), spec.key)


def _prepare_one(image, feed: Feed):
    """One HxWxC image (any size, 1/3/4 channels) -> what zoo.data.preprocess gets at evaluation."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape.rank != 3:
        raise InvalidInputError(f"Expected HxWxC or NxHxWxC images, got shape {tuple(image.shape)}.")
    channels = image.shape[-1]
    if channels == 4:
        image = image[..., :3]
    elif channels not in (1, 3):
        raise InvalidInputError(f"Images need 1, 3 or 4 channels, got {channels}.")
    if image.dtype != tf.uint8:
        image = tf.cast(image, tf.float32)
    native = feed.dataset.image_shape
    native_channels = native[2] if native[2] else 3
    if image.shape[-1] == 3 and native_channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    elif image.shape[-1] == 1 and native_channels == 3:
        image = tf.tile(image, [1, 1, 3])
    if native[0] is not None and not feed.dataset.large and tuple(image.shape[:2]) != tuple(native[:2]):
        # small datasets are preprocessed at their native size: bring other images to it first
        image = tf.image.resize(image, native[:2], method="area")
    return zdata.preprocess(image, feed.dataset, feed.input_shape, training=False)


def preprocess_input(x, name_or_spec):
    """Images -> model input for a weight set, as ``zoo evaluate`` feeds its test split.

    ``x``: one ``HxWxC`` image or a batch ``NxHxWxC`` (or a list of images of any size),
    uint8, or float on the same 0-255 scale (Keras' convention); 1, 3 or 4 (alpha
    dropped) channels. ``name_or_spec``: ``"model.tag"``, a WeightSpec, a model with one
    weight set, or a dataset name. Images are converted to the dataset's channels,
    brought to its native size (small datasets), then resized/cropped, normalised with
    the weight set's mean/std and mapped to the model's channels by ``zoo.data.preprocess``.
    Returns float32 ``NxHxWxC`` (``HxWxC`` for one image); numpy in, numpy out.
    """
    feed = feed_for(name_or_spec)
    as_numpy = not tf.is_tensor(x)
    if isinstance(x, (list, tuple)):
        images, single = list(x), False
    else:
        x = x if tf.is_tensor(x) else np.asarray(x)
        if len(x.shape) == 4:
            images, single = [x[i] for i in range(x.shape[0])], False
        elif len(x.shape) in (2, 3):
            images, single = [x], True
        else:
            raise InvalidInputError(f"Expected HxWxC or NxHxWxC images, got shape {tuple(x.shape)}.")
    if not images:
        raise InvalidInputError("preprocess_input got no images.")
    batch = tf.stack([_prepare_one(image, feed) for image in images])
    if single:
        batch = batch[0]
    return batch.numpy() if as_numpy else batch


def decode_predictions(preds, top: int = 5, name_or_spec=None) -> List[List[Tuple[str, float]]]:
    """``[[(label, probability), ...], ...]``: the ``top`` classes of each row of ``preds``
    (``N x num_classes`` softmax outputs), named by the weight set's labels."""
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim == 1:
        preds = preds[None]
    if preds.ndim != 2:
        raise InvalidInputError(f"decode_predictions expects N x classes, got shape {preds.shape}.")
    if name_or_spec is not None:
        labels = feed_for(name_or_spec).labels
    elif preds.shape[1] == 1000:
        labels = imagenet_labels()
    else:
        labels = tuple(str(i) for i in range(preds.shape[1]))
    if len(labels) != preds.shape[1]:
        raise InvalidInputError(
            f"Predictions have {preds.shape[1]} classes but the labels have {len(labels)}.")
    top = max(1, min(int(top), preds.shape[1]))
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(labels[i], float(row[i])) for i in order])
    return results


def read_image(path: os.PathLike):
    """A PNG/JPEG/GIF/BMP file as a uint8 HxWxC tensor."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"Image {path} does not exist.")
    try:
        return tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise InvalidInputError(f"Cannot decode {path} as a PNG, JPEG, GIF or BMP image.") from error
