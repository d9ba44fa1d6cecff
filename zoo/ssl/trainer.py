"""The self-supervised training loop: two augmented views per image, a method's loss,
optionally Un-Mix, and a kNN monitor. ``pretrain`` writes an output directory:

``config.json`` (model, method and its settings, Un-Mix, data, optimizer, versions,
command), ``backbone.h5`` (the ``include_top=False`` backbone, after every epoch),
``summary.csv`` (loss terms, kNN monitor, seconds per epoch), ``results.json``
(final kNN top-1 on the test split) and ``curves.png``.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo import runs
from zoo.augment.mixing import split_seed
from zoo.errors import InvalidInputError, ZooError
from zoo.ssl import get_method
from zoo.ssl.base import SSLMethod
from zoo.ssl.moco import UNMIX_CIFAR_DATASETS, UNMIX_CIFAR_DEMO
from zoo.ssl.unmix import BETA, PROB_GLOBAL, unmix_images, unmix_loss

# SGD momentum 0.9, lr 0.06 at batch 512 (scaled linearly), wd 5e-4, cosine: the CIFAR MoCo
# demo the Un-Mix code uses (arXiv 2003.05438 code, README)
BASE_LR, BASE_BATCH, WEIGHT_DECAY, SGD_MOMENTUM = 0.06, 512, 5e-4, 0.9
# ColorJitter(0.4, 0.4, 0.4) with p 0.8 and grayscale with p 0.2: MoCo v2 / SimCLR views
JITTER, JITTER_PROB, GRAY_PROB = 0.4, 0.8, 0.2


# ----------------------------------------------------------------------------- views


def _gray(images):
    return tf.reduce_mean(images, axis=-1, keepdims=True) * tf.ones_like(images)


def random_views(images, seed, crop_scale: float = 0.2):
    """A batch of random views of ``[B, H, W, C]`` images in [0, 1]: random-resized crop
    (area crop_scale-1, aspect 3/4-4/3), horizontal flip, brightness / contrast /
    saturation jitter (p 0.8; no hue), grayscale (p 0.2). All per image, in one batch op."""
    shape = tf.shape(images)
    size = shape[0]
    height, width = images.shape[1], images.shape[2]
    seeds = split_seed(seed, 9)
    uniform = lambda s, lo=0.0, hi=1.0: tf.random.stateless_uniform([size], s, lo, hi)  # noqa: E731
    area = uniform(seeds[0], crop_scale, 1.0)
    ratio = tf.exp(uniform(seeds[1], math.log(3 / 4), math.log(4 / 3)))
    crop_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
    crop_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
    top = uniform(seeds[2]) * (1.0 - crop_h)
    left = uniform(seeds[3]) * (1.0 - crop_w)
    boxes = tf.stack([top, left, top + crop_h, left + crop_w], axis=1)
    views = tf.image.crop_and_resize(images, boxes, tf.range(size), (height, width))
    flip = uniform(seeds[4]) < 0.5
    views = tf.where(flip[:, None, None, None], tf.reverse(views, axis=[2]), views)
    factors = tf.random.stateless_uniform([3, size], seeds[5], 1.0 - JITTER, 1.0 + JITTER)
    jittered = views * factors[0][:, None, None, None]  # brightness
    mean = tf.reduce_mean(_gray(jittered), axis=[1, 2, 3], keepdims=True)
    jittered = tf.clip_by_value((jittered - mean) * factors[1][:, None, None, None] + mean, 0.0, 1.0)
    gray = _gray(jittered)
    jittered = tf.clip_by_value(gray + (jittered - gray) * factors[2][:, None, None, None], 0.0, 1.0)
    views = tf.where((uniform(seeds[6]) < JITTER_PROB)[:, None, None, None], jittered, views)
    views = tf.where((uniform(seeds[7]) < GRAY_PROB)[:, None, None, None], _gray(views), views)
    return views


def view_dataset(spec, input_shape, batch_size: int, seed: int = 0, limit: Optional[int] = None,
                 crop_scale: float = 0.2) -> tf.data.Dataset:
    """Batches of ``(view1, view2, seed)``, normalised as the model's evaluation input."""
    size, channels = int(input_shape[0]), int(input_shape[-1])
    ds = zdata.load_split(spec, "train")
    if limit:
        ds = ds.take(int(limit))
    if not spec.large:
        ds = ds.cache()
    ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)

    def to_unit(image, label):
        image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (size, size))
        image.set_shape((size, size, spec.image_shape[-1] or 3))
        return image

    mean, std = tf.constant(spec.mean), tf.constant(spec.std)

    def normalise(images):
        images = (images - mean) / std
        if images.shape[-1] == 1 and channels != 1:
            images = tf.tile(images, [1, 1, 1, channels])
        return images

    def two_views(images, batch_seed):
        seed1, seed2, seed3 = split_seed(batch_seed, 3)
        return (normalise(random_views(images, seed1, crop_scale)),
                normalise(random_views(images, seed2, crop_scale)), seed3)

    ds = ds.map(to_unit, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(two_views, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- model


class SSLModel(tf.keras.Model):
    """Wraps a method so that ``fit`` runs its training step (with Un-Mix if asked)."""

    def __init__(self, method: SSLMethod, unmix: bool = False, prob_global: float = PROB_GLOBAL,
                 beta: float = BETA, weight_decay: float = WEIGHT_DECAY, **kwargs):
        super().__init__(name=f"{method.name}{'_unmix' if unmix else ''}", **kwargs)
        self.method = method
        self.unmix, self.prob_global, self.beta = bool(unmix), float(prob_global), float(beta)
        self.weight_decay = float(weight_decay)
        self.trackers = {key: tf.keras.metrics.Mean(name=key) for key in ("loss", "loss_orig", "loss_mix")}

    def call(self, x, training=False):
        return self.method.online(x, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def train_step(self, data):
        x1, x2, seed = data
        seed_key, seed_mix = split_seed(seed, 2)
        self.method.before_step()
        variables = self.method.trainable_variables
        with tf.GradientTape() as tape:
            targets = self.method.targets(x2, seed_key)
            q = self.method.online(x1, training=True)
            if self.unmix:
                mixed, lam = unmix_images(x1, seed_mix, self.prob_global, self.beta)
                q_mix = self.method.online(mixed, training=True)
                loss, original, mix_terms = unmix_loss(self.method.loss, q, q_mix, targets, lam)
            else:
                loss = original = self.method.loss(q, targets)
                mix_terms = tf.constant(0.0)
            if self.method.symmetric:  # BYOL: the same loss from view 2 to view 1
                reverse = self.method.loss(self.method.online(x2, training=True),
                                           self.method.targets(x1, seed_key))
                loss, original = loss + reverse, original + reverse
            total = loss
            kernels = [v for v in variables if "kernel" in v.name]
            if self.weight_decay and kernels:
                total = total + self.weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in kernels])
        self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        self.method.after_step(targets)
        for key, value in (("loss", loss), ("loss_orig", original), ("loss_mix", mix_terms)):
            self.trackers[key].update_state(value)
        return {key: tracker.result() for key, tracker in self.trackers.items()}


class Monitor(tf.keras.callbacks.Callback):
    """After every ``every`` epochs: kNN top-1 on a test subset, backbone.h5, a summary.csv row."""

    FIELDS = ["epoch", "lr", "loss", "loss_orig", "loss_mix", "knn_top1", "seconds"]

    def __init__(self, method, spec, input_shape, output: Path, every: int, train_limit, test_limit):
        super().__init__()
        self.method, self.spec, self.input_shape = method, spec, input_shape
        self.output, self.every = output, int(every)
        self.train_limit, self.test_limit = train_limit, test_limit

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        from zoo.ssl.probe import evaluate_backbone

        logs = logs or {}
        seconds = time.time() - self._start
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        row = {"epoch": epoch + 1, "lr": float(tf.keras.backend.get_value(lr)),
               "seconds": round(seconds, 2)}
        row.update({key: float(logs[key]) for key in ("loss", "loss_orig", "loss_mix") if key in logs})
        self.method.backbone.save_weights(str(self.output / "backbone.h5"))
        if self.every and (epoch + 1) % self.every == 0:
            knn = evaluate_backbone(self.method.backbone, self.spec, self.input_shape,
                                    limit=self.test_limit, train_limit=self.train_limit)
            row["knn_top1"] = knn["knn_top1"]
            print(f"epoch {epoch + 1}: loss {row.get('loss', float('nan')):.4f}, kNN top-1 "
                  f"{knn['knn_top1']:.2f}% ({knn['train_examples']} train / {knn['examples']} test)",
                  file=sys.stderr)
        runs.append_csv_row(self.output / runs.SUMMARY, self.FIELDS, row)


def plot_ssl_curves(summary: Path, target: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(summary.open()))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "loss_orig", "loss_mix"):
        values = [float(r[key]) if r.get(key) else np.nan for r in rows]
        if not all(np.isnan(values)):
            left.plot(epochs, values, marker="o", label=key)
    left.set_xlabel("epoch"), left.set_ylabel("loss"), left.legend()
    knn = [float(r["knn_top1"]) if r.get("knn_top1") else np.nan for r in rows]
    right.plot(epochs, knn, marker="o", color="C3")
    right.set_xlabel("epoch"), right.set_ylabel("kNN top-1 (%, monitor subset)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point


def ssl_method(ssl: str, unmix: bool, dataset: str, method_args: Optional[Dict[str, Any]] = None):
    """The method ``ssl`` with ``method_args``; MoCo with Un-Mix on CIFAR starts from the
    Un-Mix CIFAR demo's settings (linear head, T 0.1, K 4096, m 0.99), not MoCo v2's."""
    method = get_method(ssl, **(method_args or {}))
    if unmix and method.name == "moco" and dataset in UNMIX_CIFAR_DATASETS:
        method = get_method(ssl, **{**UNMIX_CIFAR_DEMO, **(method_args or {})})
    return method


def pretrain(
    model: str,
    ssl: str = "moco",
    unmix: bool = False,
    dataset: str = "fashion_mnist",
    epochs: int = 10,
    batch_size: int = 256,
    learning_rate: Optional[float] = None,
    optimizer: str = "sgd",
    weight_decay: float = WEIGHT_DECAY,
    output: Optional[os.PathLike] = None,
    seed: int = 0,
    image_size: Optional[int] = None,
    limit: Optional[int] = None,
    eval_limit: Optional[int] = None,
    method_args: Optional[Dict[str, Any]] = None,
    model_overrides: Optional[Dict[str, Any]] = None,
    unmix_prob: float = PROB_GLOBAL,
    knn_every: int = 1,
    monitor_limit: int = 1000,
    verbose: Optional[int] = None,
    command: Optional[str] = None,
) -> Dict[str, Any]:
    """Self-supervised pre-training of ``model``'s backbone; returns the final kNN results.

    ``limit`` cuts the training split (also the kNN memory); ``eval_limit`` the test
    split of the final kNN evaluation; the per-epoch monitor uses the first
    ``monitor_limit`` test images."""
    from zoo.api import get_entry, load
    from zoo.ssl.probe import evaluate_backbone
    from zoo.training.callbacks import fit_verbosity, progress_callbacks

    entry = get_entry(model)
    spec = zdata.get_dataset(dataset)
    input_shape = zdata.input_shape_for(spec, entry, image_size)
    method = ssl_method(ssl, unmix, spec.name, method_args)
    if epochs < 1 or batch_size < 2:
        raise InvalidInputError("pretrain needs epochs >= 1 and batch size >= 2.")
    splits = getattr(method, "bn_splits", 1)
    if batch_size % max(splits, 1):
        raise InvalidInputError(f"batch size {batch_size} must divide by bn_splits={splits} "
                                f"(--set bn_splits=N).")
    if not 0.0 <= unmix_prob <= 1.0:
        raise InvalidInputError(f"--unmix-prob must be in [0, 1], got {unmix_prob}.")
    total = zdata.num_examples(spec, "train")
    examples = min(limit, total) if limit else total
    steps = examples // batch_size
    if steps < 1:
        raise InvalidInputError(f"{examples} training images make no batch of {batch_size}.")
    output = Path(output) if output else Path("runs") / (
        f"{entry.name}-{method.name}{'-unmix' if unmix else ''}-{spec.name}-"
        f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    runs.prepare_output_dir(output)
    verbose = fit_verbosity(verbose)
    tf.keras.utils.set_random_seed(seed)

    overrides = dict(model_overrides or {})
    method.build(lambda: load(entry.name, include_top=False, input_shape=input_shape,
                              num_classes=spec.num_classes, **overrides))
    if learning_rate is None:
        learning_rate = BASE_LR * batch_size / BASE_BATCH if optimizer == "sgd" else 1e-3
    schedule = tf.keras.optimizers.schedules.CosineDecay(learning_rate, steps * epochs)
    if optimizer == "sgd":
        opt = tf.keras.optimizers.legacy.SGD(schedule, momentum=SGD_MOMENTUM)
    elif optimizer == "adam":
        opt = tf.keras.optimizers.legacy.Adam(schedule)
    else:
        raise InvalidInputError(f"optimizer must be sgd or adam, got {optimizer!r}.")
    method.total_steps = steps * epochs
    trainer = SSLModel(method, unmix=unmix, prob_global=unmix_prob, weight_decay=weight_decay)
    trainer.compile(optimizer=opt)

    config = {
        "model": entry.name, "dataset": spec.name, "input_shape": list(input_shape),
        "num_classes": spec.num_classes, "model_overrides": overrides,
        "ssl": {"method": method.name, "args": method.config(), "unmix": bool(unmix),
                "unmix_prob_global": unmix_prob if unmix else None, "unmix_beta": BETA if unmix else None},
        "epochs": epochs, "batch_size": batch_size, "optimizer": optimizer,
        "learning_rate": learning_rate, "schedule": "cosine", "weight_decay": weight_decay,
        "seed": seed, "limit": limit, "train_examples": examples, "eval_limit": eval_limit,
        "backbone_params": int(method.backbone.count_params()), "versions": runs.versions(),
        "command": command or " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    runs.write_json_atomically(output / runs.CONFIG, config)
    print(f"[{entry.name}] {method.name}{' + Un-Mix' if unmix else ''} on {spec.name}: {examples} images, "
          f"{epochs} epochs of {steps} steps, batch {batch_size}, {optimizer} lr {learning_rate:g}, "
          f"input {input_shape}", file=sys.stderr)

    ds = view_dataset(spec, input_shape, batch_size, seed=seed, limit=limit, crop_scale=method.crop_scale)
    monitor = Monitor(method, spec, input_shape, output, knn_every, limit, monitor_limit)
    start = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        history = trainer.fit(ds, epochs=epochs, callbacks=[monitor, tf.keras.callbacks.TerminateOnNaN(),
                                                       *progress_callbacks(entry.name, steps, verbose)],
                              verbose=verbose)
    if any(not math.isfinite(v) for v in history.history.get("loss", [0.0])):
        raise ZooError(f"Pre-training diverged (loss is NaN/inf); lower --lr. Last backbone in {output}.")
    seconds = time.time() - start
    method.backbone.save_weights(str(output / "backbone.h5"))
    results = evaluate_backbone(method.backbone, spec, input_shape, knn=True, limit=eval_limit,
                                train_limit=limit)
    results.update({"model": entry.name, "ssl": config["ssl"], "epochs": epochs,
                    "train_seconds": round(seconds, 1), "weights": str(output / "backbone.h5"),
                    "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    runs.write_json_atomically(output / runs.RESULTS, results)
    try:
        plot_ssl_curves(output / runs.SUMMARY, output / "curves.png",
                        f"{entry.name} {method.name}{' + Un-Mix' if unmix else ''} on {spec.name}")
    except Exception as error:  # noqa: BLE001 - a plot must never lose a finished run
        print(f"(could not draw curves.png: {error})", file=sys.stderr)
    print(f"[{entry.name}] kNN top-1 {results['knn_top1']:.2f}% ({results['examples']} test images, "
          f"memory {results['train_examples']} train images) -> {output}", file=sys.stderr)
    return results
