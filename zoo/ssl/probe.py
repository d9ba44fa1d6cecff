"""Evaluating a pre-trained backbone on frozen features: weighted kNN and a linear probe.

kNN (Wu et al. 2018, InstDisc, as the MoCo / Un-Mix CIFAR demos use it): cosine
similarity of L2-normalised features, the ``k`` most similar training images
vote for their class with weight ``exp(sim / t)``; k = 200, t = 0.1.

Linear probe: a softmax classifier on the frozen, globally pooled backbone
features (standardised with the training set's statistics), trained with Adam
on features computed once without augmentation. This is cheaper than MoCo's
protocol (SGD lr 30, 100 epochs on augmented images through the backbone)
and is meant for comparing backbones with each other.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.errors import InvalidInputError
from zoo.ssl.base import feature_model

KNN_K = 200  # the MoCo / Un-Mix CIFAR demos' kNN monitor: k 200, t 0.1
KNN_T = 0.1


def extract_features(features, spec, split: str, input_shape, limit: Optional[int] = None,
                     batch_size: int = 500) -> Tuple[np.ndarray, np.ndarray]:
    """(features [N, d], labels [N]) of a split, deterministically (no augmentation)."""
    ds = zdata.make_dataset(spec, split, input_shape, batch_size, training=False, limit=limit)
    feats, labels = [], []
    for images, y in ds:
        feats.append(features(images, training=False).numpy())
        labels.append(y.numpy())
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int64)


def knn_predict(train_features, train_labels, test_features, num_classes: int, k: int = KNN_K,
                temperature: float = KNN_T, chunk: int = 1000) -> np.ndarray:
    """Class predictions of the weighted kNN classifier (cosine similarity, weights exp(s/t))."""
    train = tf.math.l2_normalize(tf.constant(train_features, tf.float32), axis=1)
    labels = tf.constant(train_labels, tf.int32)
    k = min(int(k), int(train.shape[0]))
    predictions = []
    for start in range(0, len(test_features), chunk):
        test = tf.math.l2_normalize(tf.constant(test_features[start:start + chunk], tf.float32), axis=1)
        similarity = tf.matmul(test, train, transpose_b=True)
        top, indices = tf.math.top_k(similarity, k=k)
        weights = tf.exp(top / temperature)
        votes = tf.one_hot(tf.gather(labels, indices), num_classes) * weights[..., None]
        predictions.append(tf.argmax(tf.reduce_sum(votes, axis=1), axis=1).numpy())
    return np.concatenate(predictions) if predictions else np.zeros([0], np.int64)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes: int,
                 k: int = KNN_K, temperature: float = KNN_T) -> float:
    """Top-1 accuracy (%) of :func:`knn_predict`."""
    predicted = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return 100.0 * float(np.mean(predicted == np.asarray(test_labels)))


# Adam 1e-3, batch 256: a common frozen-feature probe; epochs 30 converge on cached features
def linear_probe(train_features, train_labels, test_features, test_labels, num_classes: int,
                 epochs: int = 30, learning_rate: float = 1e-3, batch_size: int = 256,
                 seed: int = 0) -> Dict[str, float]:
    """Train a softmax classifier on standardised frozen features; test top-1 (%)."""
    mean = train_features.mean(axis=0, keepdims=True)
    std = train_features.std(axis=0, keepdims=True) + 1e-6
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    tf.keras.utils.set_random_seed(seed)
    probe = tf.keras.Sequential([tf.keras.Input((x_train.shape[1],)),
                                 tf.keras.layers.Dense(num_classes, activation="softmax")])
    probe.compile(optimizer=tf.keras.optimizers.legacy.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train = tf.data.Dataset.from_tensor_slices((x_train, train_labels)).shuffle(
        len(x_train), seed=seed).batch(batch_size)
    probe.fit(train, epochs=epochs, verbose=0)
    loss, accuracy = probe.evaluate(x_test, test_labels, batch_size=1000, verbose=0)
    return {"top1": 100.0 * float(accuracy), "loss": float(loss)}


# ----------------------------------------------------------------------------- pre-trained runs


def load_pretrained(name: str, weights, dataset: Optional[str] = None):
    """The backbone of a `zoo pretrain` output directory (or its backbone.h5).

    Returns (backbone, dataset spec, input shape, the run's config)."""
    from zoo.api import get_entry, load
    from zoo.hub.spec import split_tag

    path = Path(str(weights)).expanduser()
    folder = path if path.is_dir() else path.parent
    config_path = folder / "config.json"
    weights_file = path if path.is_file() else folder / "backbone.h5"
    if not config_path.is_file() or not weights_file.is_file():
        raise InvalidInputError(
            f"{weights} is not a `zoo pretrain` output directory (config.json + backbone.h5): "
            f"--linear-probe and --knn evaluate a self-supervised backbone.")
    config = json.loads(config_path.read_text())
    if "ssl" not in config:
        raise InvalidInputError(f"{config_path} is not from `zoo pretrain` (it has no 'ssl' entry).")
    entry = get_entry(split_tag(name)[0])
    if get_entry(config["model"]).name != entry.name:
        raise InvalidInputError(f"{folder} holds a backbone of {config['model']}, not {entry.name}.")
    spec = zdata.get_dataset(dataset or config["dataset"])
    input_shape = tuple(config["input_shape"])
    backbone = load(entry.name, include_top=False, input_shape=input_shape,
                    num_classes=spec.num_classes, **config.get("model_overrides", {}))
    backbone.load_weights(str(weights_file))
    return backbone, spec, input_shape, config


def evaluate_backbone(backbone, spec, input_shape, knn: bool = True, linear: bool = False,
                      limit: Optional[int] = None, train_limit: Optional[int] = None,
                      k: int = KNN_K, temperature: float = KNN_T, probe_epochs: int = 30,
                      seed: int = 0) -> Dict[str, Any]:
    """kNN and/or linear-probe top-1 (%) of a backbone: training split as memory / probe
    training set, test split for the accuracy."""
    features = feature_model(backbone)
    print(f"Extracting features of {spec.name} (train{f' first {train_limit}' if train_limit else ''}, "
          f"test{f' first {limit}' if limit else ''})...", file=sys.stderr)
    train_f, train_y = extract_features(features, spec, "train", input_shape, train_limit)
    test_f, test_y = extract_features(features, spec, "test", input_shape, limit)
    results: Dict[str, Any] = {"dataset": spec.name, "train_examples": int(len(train_y)),
                               "examples": int(len(test_y)), "feature_dim": int(train_f.shape[1])}
    if knn:
        results["knn_top1"] = knn_accuracy(train_f, train_y, test_f, test_y, spec.num_classes, k, temperature)
        results.update({"knn_k": int(k), "knn_t": float(temperature)})
    if linear:
        probe = linear_probe(train_f, train_y, test_f, test_y, spec.num_classes, epochs=probe_epochs, seed=seed)
        results["linear_top1"] = probe["top1"]
        results["linear_loss"] = probe["loss"]
        results["probe_epochs"] = int(probe_epochs)
    return results


def evaluate_pretrained(name: str, weights, dataset: Optional[str] = None, knn: bool = True,
                        linear: bool = False, limit: Optional[int] = None,
                        train_limit: Optional[int] = None, **kwargs) -> Dict[str, Any]:
    """``zoo evaluate NAME --weights PRETRAIN_DIR --knn --linear-probe``."""
    backbone, spec, input_shape, config = load_pretrained(name, weights, dataset)
    results = evaluate_backbone(backbone, spec, input_shape, knn=knn, linear=linear, limit=limit,
                                train_limit=train_limit, **kwargs)
    results.update({"model": config["model"], "weights": str(weights), "ssl": config["ssl"]})
    return results
