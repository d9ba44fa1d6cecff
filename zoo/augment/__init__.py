"""Batch augmentations that mix images and labels: mixup, cutmix, attentive_cutmix.

Each is a registry entry (``zoo list --kind augmentations``), selected with
``zoo train NAME --augment cutmix [--augment-arg beta=1.0 ...]``. They run on
the batched tf.data pipeline: ``(images [B,H,W,C], integer labels [B])`` ->
``(mixed images, soft labels [B, classes])``; training then uses
:class:`SoftCrossentropy` and accuracy against the soft label's argmax.
"""
from __future__ import annotations

import inspect
from typing import Optional

import tensorflow as tf

from zoo.augment.attentive import AttentiveCutMix, build_feature_fn, resolve_extractor_name
from zoo.augment.mixing import CutMix, Mixup
from zoo.errors import InvalidInputError
from zoo.metrics import StrictTopK
from zoo.schema import check_call_arguments
from zoo.registry import FactoryEntry, Registry, check_arguments


AugmentationEntry = FactoryEntry
AUGMENTATIONS: Registry[AugmentationEntry] = Registry("augmentation")


def _mixup(spec=None, input_shape=None, **args):
    return Mixup(**args)


def _cutmix(spec=None, input_shape=None, **args):
    return CutMix(**args)


def _attentive_cutmix(spec=None, input_shape=None, extractor: str = "auto", grid: int = 7,
                      layer: str = "auto", **args):
    if spec is None or input_shape is None:
        raise InvalidInputError("attentive_cutmix needs the dataset and input shape.")
    extractor = resolve_extractor_name(str(extractor), spec.name)
    feature_fn = build_feature_fn(extractor, spec, input_shape, int(grid), str(layer))
    return AttentiveCutMix(feature_fn, grid=grid, extractor=extractor, layer=layer, **args)


AUGMENTATIONS.register("mixup", AugmentationEntry(
    "mixup", _mixup, "mixup: convex blend of image pairs and their labels", "1710.09412"))
AUGMENTATIONS.register("cutmix", AugmentationEntry(
    "cutmix", _cutmix, "CutMix: paste a random box, labels mix by the kept area", "1905.04899"))
AUGMENTATIONS.register("attentive_cutmix", AugmentationEntry(
    "attentive_cutmix", _attentive_cutmix,
    "Attentive CutMix: paste the top-k attended grid cells of a frozen extractor", "2003.13048"),
    aliases=("attentivecutmix",))

_ARGS = {"mixup": Mixup, "cutmix": CutMix, "attentive_cutmix": AttentiveCutMix}


def get_augmentation(name: str, spec=None, input_shape=None, **args):
    """A configured batch transform ``aug(images, labels, num_classes, seed)``."""
    entry = AUGMENTATIONS.get(name)
    allowed = set(inspect.signature(_ARGS[entry.name].__init__).parameters) - {"self", "feature_fn"}
    if entry.name == "attentive_cutmix":
        allowed |= {"extractor", "grid", "layer"}
    check_arguments(entry.name, args, allowed, " (--augment-arg KEY=VALUE)")
    args = {**args, **check_call_arguments(entry.name, _ARGS[entry.name].__init__,
                                           {k: v for k, v in args.items() if k not in ("extractor", "grid", "layer")},
                                           " (--augment-arg KEY=VALUE)", skip=("feature_fn",))}
    if "prob" in args and not 0.0 <= float(args["prob"]) <= 1.0:
        raise InvalidInputError(f"prob must be in [0, 1], got {args['prob']}.")
    for key in ("alpha", "beta"):
        if key in args and float(args[key]) <= 0:
            raise InvalidInputError(f"{key} must be positive, got {args[key]}.")
    return entry.factory(spec=spec, input_shape=input_shape, **args)


def apply_augmentation(dataset: tf.data.Dataset, augmentation, num_classes: int,
                       seed: Optional[int] = 0) -> tf.data.Dataset:
    """Map a batched ``(images, labels)`` dataset through ``augmentation`` (one stateless
    seed per batch, new every epoch)."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def mix(batch, batch_seed):
        images, labels = batch[0], batch[1]
        return augmentation(images, labels, num_classes, batch_seed)

    return tf.data.Dataset.zip((dataset, seeds)).map(mix, num_parallel_calls=tf.data.AUTOTUNE)


def _hard_labels(y_true, y_pred):
    """Integer labels from integer labels or from soft ones (their argmax)."""
    if y_true.shape.rank == 2 and y_true.shape[-1] is not None and y_true.shape[-1] > 1 \
            and y_true.shape[-1] == y_pred.shape[-1]:
        return tf.argmax(y_true, axis=-1)
    return tf.cast(tf.reshape(y_true, [-1]), tf.int64)


class SoftCrossentropy(tf.keras.losses.Loss):
    """Cross-entropy on soft labels ``[B, classes]`` (mixed), or on integer labels;
    optional label smoothing in both cases."""

    def __init__(self, label_smoothing: float = 0.0, name="crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = tf.shape(y_pred)[-1]
        if not (y_true.shape.rank == 2 and y_true.shape[-1] == y_pred.shape[-1]
                and y_true.shape[-1] is not None and y_true.shape[-1] > 1):
            y_true = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), classes)
        return tf.keras.losses.categorical_crossentropy(
            tf.cast(y_true, y_pred.dtype), y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class SoftAccuracy(tf.keras.metrics.SparseCategoricalAccuracy):
    """Top-1 accuracy against the argmax of a soft label (or an integer label)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_hard_labels(y_true, y_pred), y_pred, sample_weight)


class SoftTopK(StrictTopK):
    """Top-k accuracy (ties count against) against the argmax of a soft label (or an integer label)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_hard_labels(y_true, y_pred), y_pred, sample_weight)


def soft_label_training(label_smoothing: float, num_classes: int):
    """(loss, metrics) for training on mixed labels; metric names as the plain ones."""
    return SoftCrossentropy(label_smoothing), [
        SoftAccuracy(name="accuracy"), SoftTopK(k=min(5, num_classes), name="top5")]


__all__ = ["AUGMENTATIONS", "get_augmentation", "apply_augmentation",
           "SoftCrossentropy", "SoftAccuracy", "SoftTopK", "soft_label_training",
           "Mixup", "CutMix", "AttentiveCutMix"]
