"""Fit a registered model on a dataset with a recipe, and evaluate it.

A run directory gets: ``config.json`` (the resolved configuration),
``summary.csv`` (one row per epoch), ``logs/`` (TensorBoard),
``checkpoints/`` (weights after every epoch), ``weights.h5`` (final weights),
``results.json`` (final test metrics) and ``curves.png``.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import tensorflow as tf

from zoo import data as zdata
from zoo.api import get_entry, load
from zoo.errors import InvalidInputError, ZooError
from zoo.training.optimizers import StageSchedule, get_optimizer
from zoo.training.recipes import Recipe, Stage, get_recipe

EVAL_BATCH_SIZE = 250


def versions() -> Dict[str, str]:
    import larq
    import tensorflow_datasets as tfds
    import tf_keras

    import zoo

    return {"zoo": zoo.__version__, "tensorflow": tf.__version__, "keras": tf_keras.__version__,
            "larq": larq.__version__, "tensorflow_datasets": tfds.__version__,
            "python": platform.python_version()}


class SparseCrossentropy(tf.keras.losses.Loss):
    """Cross-entropy on integer labels, with optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0, name="crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        if not self.label_smoothing:
            return tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        one_hot = tf.one_hot(y_true, tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        return tf.keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def classification_metrics(num_classes: int):
    return [
        tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        tf.keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
    ]


def add_weight_decay(model, weight_decay: float) -> None:
    """Coupled L2 decay on conv kernels (PyTorch's ``weight_decay`` as the papers'
    code applies it): the gradient of ``wd * ||w||^2 / 2`` is ``wd * w``."""
    if not weight_decay:
        return
    # not the latent-free +-1 kernels of Bop (precision 1, no quantizer): decay would flip them
    kernels = [w for w in model.trainable_weights if "kernel" in w.name and len(w.shape) == 4
               and not _is_latent_free(model, w)]
    model.add_loss(lambda: weight_decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels]))


def _is_latent_free(model, variable) -> bool:
    """Whether ``variable`` is a kernel stored as +-1 (NoOp(precision=1) quantizer)."""
    import larq as lq

    for layer in model.layers:
        if getattr(layer, "kernel", None) is variable:
            return isinstance(getattr(layer, "kernel_quantizer", None), lq.quantizers.NoOp)
    return False


def transfer_weights(source, target) -> int:
    """Copy every weight of ``source`` into ``target`` (same architecture, other
    quantizers); raises unless all of them match one to one. Returns the count."""
    src, dst = source.weights, target.weights
    if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
        raise ZooError(
            f"Cannot initialise {target.name} from {source.name}: their weights differ "
            f"({len(src)} vs {len(dst)} tensors).")
    target.set_weights(source.get_weights())
    return len(dst)


def evaluate_model(model, spec, input_shape, batch_size: int = EVAL_BATCH_SIZE, limit=None,
                   verbose: int = 0) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean loss on the test split, deterministically."""
    ds = zdata.make_dataset(spec, "test", input_shape, batch_size, training=False, limit=limit)
    model.compile(loss=SparseCrossentropy(), metrics=classification_metrics(spec.num_classes))
    with contextlib.redirect_stdout(sys.stderr):
        values = model.evaluate(ds, verbose=verbose, return_dict=True)
    total = zdata.num_examples(spec, "test")
    count = min(limit, total) if limit else total
    return {"top1": 100.0 * values["accuracy"], "top5": 100.0 * values["top5"],
            "loss": float(values["loss"]), "examples": int(count)}


class SaveWeights(tf.keras.callbacks.Callback):
    """Saves ``target``'s weights after every epoch (the student, not a wrapper)."""

    def __init__(self, target, pattern: str):
        super().__init__()
        self.target, self.pattern = target, pattern

    def on_epoch_end(self, epoch, logs=None):
        self.target.save_weights(self.pattern.format(epoch=epoch + 1))


class EpochSummary(tf.keras.callbacks.Callback):
    """Appends one row per epoch to summary.csv (all stages in one file)."""

    FIELDS = ["epoch", "stage", "stage_epoch", "lr", "loss", "accuracy", "top5",
              "val_loss", "val_accuracy", "val_top5", "seconds"]

    def __init__(self, path: Path, stage: str, epoch_offset: int):
        super().__init__()
        self.path, self.stage, self.offset = path, stage, epoch_offset

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        row = {
            "epoch": self.offset + epoch + 1, "stage": self.stage, "stage_epoch": epoch + 1,
            "lr": float(tf.keras.backend.get_value(lr)),
            "seconds": round(time.time() - self._start, 2),
        }
        for key in self.FIELDS:
            if key in logs:
                value = float(logs[key])
                row[key] = 100.0 * value if "accuracy" in key or "top5" in key else value
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)


def _check_output_dir(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ZooError(f"Cannot write to output directory {output}: {error.strerror or error}. "
                       f"Choose another --output.") from error
    if (output / "config.json").exists():
        raise ZooError(f"{output} already holds a training run (config.json); choose another --output.")


def default_output(model: str, dataset: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model}-{dataset.replace(':', '_').replace('/', '_')}-{stamp}"


def _stage_model(name, stage: Stage, input_shape, num_classes, model_overrides):
    overrides = {**stage.model_overrides, **(model_overrides or {})}
    return load(name, input_shape=input_shape, num_classes=num_classes, **overrides)


def train(
    model: str,
    dataset: str = "fashion_mnist",
    recipe: Optional[str] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    output: Optional[os.PathLike] = None,
    seed: int = 0,
    image_size: Optional[int] = None,
    limit: Optional[int] = None,
    eval_limit: Optional[int] = None,
    stage_overrides: Optional[Dict[str, Any]] = None,
    model_overrides: Optional[Dict[str, Any]] = None,
    verbose: Optional[int] = None,
    command: Optional[str] = None,
    teacher: Optional[str] = None,
    augment: Optional[str] = None,
    augment_args: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Train ``model`` on ``dataset`` with ``recipe``; returns the final results.

    Every stage of the recipe runs in turn, each initialised from the previous
    one. ``limit`` / ``eval_limit`` cut the splits (for smoke tests).
    ``teacher`` (a run directory, NAME:WEIGHTS or a saved model) is required by
    stages with ``distill=True`` (ReActNet's distributional loss).
    """
    entry = get_entry(model)
    spec = zdata.get_dataset(dataset)
    recipe_obj: Recipe = get_recipe(recipe or entry.default_recipe).resolve(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        stage_overrides=stage_overrides)
    input_shape = zdata.input_shape_for(spec, entry, image_size)
    total_train = zdata.num_examples(spec, "train")  # fails cleanly before anything is written
    output = Path(output) if output else default_output(entry.name, spec.name)
    _check_output_dir(output)
    if verbose is None:
        verbose = 1 if sys.stderr.isatty() else 2

    needs_teacher = any(stage.distill for stage in recipe_obj.stages)
    if needs_teacher and not teacher:
        raise InvalidInputError(
            f"Recipe {recipe_obj.name!r} trains with a distributional loss: pass --teacher (a run "
            f"directory of a trained real-valued model), or --set distill=false for plain cross-entropy.")
    teacher_model = None
    if teacher and needs_teacher:
        from zoo.training.distill import load_teacher

        teacher_model = load_teacher(teacher, input_shape, spec.num_classes)
    augmentation = None
    if augment:  # a batch transform: mixed images and soft labels (zoo.augment)
        from zoo.augment import get_augmentation

        augmentation = get_augmentation(augment, spec, input_shape, **(augment_args or {}))

    tf.keras.utils.set_random_seed(seed)
    train_examples = min(limit, total_train) if limit else total_train
    config = {
        "model": entry.name, "dataset": spec.name, "input_shape": list(input_shape),
        "num_classes": spec.num_classes, "seed": seed, "limit": limit, "eval_limit": eval_limit,
        "model_overrides": model_overrides or {}, "recipe": recipe_obj.to_dict(),
        "teacher": str(teacher) if teacher_model is not None else None,
        "augment": None if augmentation is None else {"name": augmentation.name, "args": augmentation.config()},
        "train_examples": train_examples, "versions": versions(),
        "command": command or " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    (output / "config.json").write_text(json.dumps(config, indent=2, default=str))
    (output / "checkpoints").mkdir(exist_ok=True)

    previous = None
    epoch_offset = 0
    history_rows = []
    for index, stage in enumerate(recipe_obj.stages):
        print(f"[{entry.name}] stage {index + 1}/{len(recipe_obj.stages)} '{stage.name}': "
              f"{stage.epochs} epochs, {stage.optimizer} lr {stage.learning_rate}, "
              f"batch {stage.batch_size}, input {input_shape}", file=sys.stderr)
        net = _stage_model(entry.name, stage, input_shape, spec.num_classes, model_overrides)
        if previous is not None and stage.init_from_previous:
            transfer_weights(previous, net)
        steps = math.ceil(train_examples / stage.batch_size)
        schedule = StageSchedule(
            stage.learning_rate, steps * stage.epochs, stage.schedule,
            milestones=[round(m * steps * stage.epochs) for m in stage.milestones],
            gamma=stage.gamma, warmup_steps=round(stage.warmup_epochs * steps))
        optimizer = get_optimizer(stage.optimizer, schedule, total_steps=steps * stage.epochs,
                                  steps_per_epoch=steps, **stage.optimizer_args)
        add_weight_decay(net, stage.weight_decay)
        trainee = net
        if stage.distill:
            from zoo.training.distill import Distiller

            trainee = Distiller(net, teacher_model, label_weight=stage.label_weight)
        trainee.compile(optimizer=optimizer, loss=SparseCrossentropy(stage.label_smoothing),
                        metrics=classification_metrics(spec.num_classes))
        train_ds = zdata.make_dataset(spec, "train", input_shape, stage.batch_size, training=True,
                                      seed=seed + index, limit=limit)
        if augmentation is not None:  # soft labels: categorical CE, accuracy vs. their argmax
            from zoo.augment import apply_augmentation, soft_label_training

            train_ds = apply_augmentation(train_ds, augmentation, spec.num_classes, seed=seed + index)
            soft_loss, soft_metrics = soft_label_training(stage.label_smoothing, spec.num_classes)
            trainee.compile(optimizer=optimizer, loss=soft_loss, metrics=soft_metrics)
        val_ds = zdata.make_dataset(spec, "test", input_shape, EVAL_BATCH_SIZE, limit=eval_limit)
        prefix = f"{stage.name}_" if len(recipe_obj.stages) > 1 else ""
        callbacks = [
            SaveWeights(net, str(output / "checkpoints" / (prefix + "epoch{epoch:03d}.h5"))),
            tf.keras.callbacks.TensorBoard(str(output / "logs" / stage.name), histogram_freq=0,
                                           profile_batch=0),
            EpochSummary(output / "summary.csv", stage.name, epoch_offset),
            tf.keras.callbacks.TerminateOnNaN(),
        ]
        with contextlib.redirect_stdout(sys.stderr):
            history = trainee.fit(train_ds, epochs=stage.epochs, validation_data=val_ds,
                              callbacks=callbacks, verbose=verbose)
        if any(not math.isfinite(v) for v in history.history.get("loss", [0.0])):
            raise ZooError(f"Training diverged (loss is NaN/inf) in stage '{stage.name}'; the last "
                           f"good weights are in {output / 'checkpoints'}. Lower --lr.")
        if len(recipe_obj.stages) > 1:
            net.save_weights(str(output / f"{stage.name}_weights.h5"))
        history_rows.append((stage.name, history.history))
        epoch_offset += stage.epochs
        previous = net

    net.save_weights(str(output / "weights.h5"))
    results = evaluate_model(net, spec, input_shape, limit=eval_limit)
    results.update({"model": entry.name, "dataset": spec.name, "weights": str(output / "weights.h5"),
                    "input_shape": list(input_shape), "epochs": epoch_offset,
                    "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    (output / "results.json").write_text(json.dumps(results, indent=2))
    try:
        from zoo.plots import plot_training_curves

        plot_training_curves(output / "summary.csv", output / "curves.png",
                             title=f"{entry.name} on {spec.name}")
    except Exception as error:  # noqa: BLE001 - a plot must never lose a finished run
        print(f"(could not draw curves.png: {error})", file=sys.stderr)
    print(f"[{entry.name}] test top-1 {results['top1']:.2f}%  top-5 {results['top5']:.2f}%  "
          f"loss {results['loss']:.4f}  -> {output}", file=sys.stderr)
    return results


def run_config(weights_path: Path) -> Optional[Dict[str, Any]]:
    """The config.json of the `zoo train` run a weights file belongs to: next to it
    (weights.h5, <stage>_weights.h5) or one folder up (checkpoints/...); None if none."""
    for folder in (weights_path.parent, weights_path.parent.parent):
        if (folder / "config.json").is_file():
            return json.loads((folder / "config.json").read_text())
    return None


def run_model_overrides(config: Dict[str, Any], weights_path: Path) -> Dict[str, Any]:
    """Builder arguments of the stage that wrote ``weights_path`` (matched by its
    ``<stage>_`` file-name prefix, default the last stage), plus the run's own."""
    overrides = dict(config.get("model_overrides") or {})
    stages = (config.get("recipe") or {}).get("stages") or []
    if stages:
        stage = next((st for st in stages if weights_path.name.startswith(f"{st['name']}_")), stages[-1])
        overrides = {**stage.get("model_overrides", {}), **overrides}
    return overrides


def load_for_evaluation(model: str, weights, dataset: str, image_size: Optional[int] = None):
    """Build ``model`` for ``dataset`` the way ``train`` did and load ``weights``.

    A run directory's config.json (next to the weights) fixes the input shape
    and builder overrides; otherwise the same rule as training picks them."""
    from zoo.weights import get_spec, is_tag, resolve_weights_path, split_tag

    model, name_tag = split_tag(model)
    entry = get_entry(model)
    if weights is None and name_tag:
        weights = name_tag
    if is_tag(entry, weights):  # a published weight set: its own dataset and input shape
        weight_spec = get_spec(entry, str(weights).strip().lower())
        if dataset is None:
            dataset = weight_spec.dataset
        net = load(entry.name, weights=weight_spec.tag)
        return net, zdata.get_dataset(dataset), tuple(weight_spec.input_shape)
    if weights is None:
        raise InvalidInputError(f"Pass --weights: a weights file, a run directory or a tag of {entry.name}.")
    path = resolve_weights_path(weights)
    config = run_config(path)
    if dataset is None and config is not None:
        dataset = config.get("dataset")
    spec = zdata.get_dataset(dataset or "fashion_mnist")
    input_shape = zdata.input_shape_for(spec, entry, image_size)
    overrides: Dict[str, Any] = {}
    if config is not None:
        if get_entry(config.get("model", entry.name)).name != entry.name:
            raise InvalidInputError(
                f"{path} holds weights of {config['model']}, not {entry.name}.")
        if image_size is None:
            input_shape = tuple(config.get("input_shape", input_shape))
        overrides = run_model_overrides(config, path)
    net = load(entry.name, weights=path, input_shape=input_shape, num_classes=spec.num_classes,
               **overrides)
    return net, spec, input_shape
