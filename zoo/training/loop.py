"""Fit a registered model on a dataset with a recipe, and evaluate it.

A run directory gets: ``config.json`` (the resolved configuration),
``summary.csv`` (one row per epoch), ``logs/`` (TensorBoard),
``checkpoints/`` (weights after every epoch, and ``state/<stage>/``: model,
optimizer and epoch for ``--resume``), ``weights.h5`` (final weights),
``results.json`` (final test metrics, written last) and ``curves.png``.
"""
from __future__ import annotations

import atexit
import contextlib
import csv
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from zoo import data as zdata
from zoo.api import get_entry, load
from zoo.errors import InvalidInputError, ZooError
from zoo.training import distributed as zdist
from zoo.training.optimizers import StageSchedule, get_optimizer
from zoo.training.recipes import Recipe, Stage, get_recipe

EVAL_BATCH_SIZE = 250
PROGRESS_INTERVAL_S = 60.0  # seconds between ProgressLog lines in non-interactive logs


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
        # explicit super(): AutoGraph cannot convert the zero-argument form under tf.distribute
        super(SparseCrossentropy, self).__init__(name=name, **kwargs)
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
                   verbose: int = 0, strategy=None) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean loss on the test split, deterministically
    (over the replicas of ``strategy`` when given: the model must come from its scope)."""
    total = zdata.num_examples(spec, "test")
    count = min(limit, total) if limit else total
    if strategy is not None:
        batch_size = zdist.eval_batch_size(count, batch_size, strategy)
    ds = zdata.make_dataset(spec, "test", input_shape, batch_size, training=False, limit=limit)
    if strategy is not None:
        ds = zdist.distribute_dataset(ds, strategy)
    with model.distribute_strategy.scope():  # metrics live where the model's variables do
        model.compile(loss=SparseCrossentropy(), metrics=classification_metrics(spec.num_classes))
    with contextlib.redirect_stdout(sys.stderr):
        values = model.evaluate(ds, verbose=verbose, return_dict=True)
    return {"top1": 100.0 * values["accuracy"], "top5": 100.0 * values["top5"],
            "loss": float(values["loss"]), "examples": int(count)}


def save_weights_atomically(model, path) -> None:
    """``model.save_weights`` to a temporary file renamed into place: a killed run
    never leaves a half-written weights file under the final name."""
    path = str(path)
    model.save_weights(path + ".partial", save_format="h5")
    os.replace(path + ".partial", path)


def _write_text_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


class NonFiniteLossGuard(tf.keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or inf. The other
    callbacks then skip that epoch: no checkpoint, no summary row, so the last
    checkpoint on disk is the last good one."""

    def __init__(self):
        super().__init__()
        self.epoch, self.where = 0, None

    @property
    def ok(self) -> bool:
        return self.where is None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1)  # stage epoch, step within it
            self.model.stop_training = True


class SaveWeights(tf.keras.callbacks.Callback):
    """Saves ``target``'s weights after every epoch (the student, not a wrapper)."""

    def __init__(self, target, pattern: str, guard: Optional[NonFiniteLossGuard] = None):
        super().__init__()
        self.target, self.pattern, self.guard = target, pattern, guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is None or self.guard.ok:
            save_weights_atomically(self.target, self.pattern.format(epoch=epoch + 1))


class TrainingState(tf.keras.callbacks.Callback):
    """The state ``--resume`` needs, saved after every good epoch of a stage in
    ``checkpoints/state/<stage>/ckpt-<epoch>``: the model, the optimizer (its slots
    and step count, so the LR schedule continues at the right step) and the epoch."""

    def __init__(self, net, optimizer, directory: Path, guard: Optional[NonFiniteLossGuard] = None):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=net, optimizer=optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=1)
        self.guard = guard

    def restore(self, path: str) -> int:
        """Loads a checkpoint (the optimizer's slots load when it creates them); the epoch."""
        status = self.checkpoint.restore(path)
        status.assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is None or self.guard.ok:
            self.epoch.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)


def state_directory(run_dir: Path, stage: Stage) -> Path:
    return Path(run_dir) / "checkpoints" / "state" / stage.name


def checkpointed_epochs(run_dir: Path, stage: Stage) -> Tuple[int, Optional[str]]:
    """Epochs of ``stage`` saved in ``run_dir`` and the checkpoint's path ((0, None): none)."""
    path = tf.train.latest_checkpoint(str(state_directory(run_dir, stage)))
    if not path:
        return 0, None
    try:
        return int(path.rsplit("-", 1)[1]), path
    except (IndexError, ValueError):
        return 0, None


class EpochSummary(tf.keras.callbacks.Callback):
    """Appends one row per epoch to summary.csv (all stages in one file)."""

    FIELDS = ["epoch", "stage", "stage_epoch", "lr", "loss", "accuracy", "top5",
              "val_loss", "val_accuracy", "val_top5", "seconds"]

    def __init__(self, path: Path, stage: str, epoch_offset: int,
                 guard: Optional[NonFiniteLossGuard] = None):
        super().__init__()
        self.path, self.stage, self.offset, self.guard = path, stage, epoch_offset, guard

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and not self.guard.ok:
            return
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


class ProgressLog(tf.keras.callbacks.Callback):
    """Logs a line to stderr at most every ``interval`` seconds within an epoch: step,
    share done, running loss/accuracy, time spent and left. For logs written to a file
    (Keras' ``verbose=2`` prints only at the end of an epoch, which can be an hour)."""

    def __init__(self, label: str, steps: int, interval: Optional[float] = None,
                 clock=time.monotonic, stream=None):
        super().__init__()
        self.label, self.steps, self.clock = label, int(steps), clock
        self.interval = float(PROGRESS_INTERVAL_S if interval is None else interval)
        self.stream = stream

    @staticmethod
    def _clock_text(seconds: float) -> str:
        minutes, seconds = divmod(int(round(seconds)), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.start = self.last = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        done = batch + 1
        spent = now - self.start
        left = spent / done * max(self.steps - done, 0)
        metrics = "".join(f", {key} {float(value):.4f}" for key, value in (logs or {}).items()
                          if key in ("loss", "accuracy"))
        epochs = self.params.get("epochs") if self.params else None
        print(f"[{self.label}] epoch {self.epoch + 1}{f'/{epochs}' if epochs else ''}: step "
              f"{done}/{self.steps} ({100.0 * done / self.steps:.0f}%){metrics}, "
              f"{self._clock_text(spent)} spent, ~{self._clock_text(left)} left",
              file=self.stream or sys.stderr, flush=True)


def fit_verbosity(verbose: Optional[int] = None) -> int:
    """Keras' ``verbose`` for fit: ``verbose`` if given, else a progress bar on a terminal
    (1) and per-epoch lines when stderr is a file (2, with :class:`ProgressLog` within)."""
    if verbose is not None:
        return verbose
    return 1 if sys.stderr.isatty() else 2


def progress_callbacks(label: str, steps: int, verbose: int) -> list:
    """A ProgressLog where Keras prints only per-epoch lines (``verbose=2``), else none."""
    return [ProgressLog(label, steps)] if verbose == 2 else []


_NEW_RUNS: list = []  # run directories the current train() call created (see _no_partial_run)


def _check_output_dir(output: Path) -> None:
    missing = [folder for folder in (output, *output.parents) if not folder.exists()]
    if missing:
        _NEW_RUNS.append((output, missing[-1]))  # the top-most folder this call creates
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


# ----------------------------------------------------------------------------- resuming


def _resumable_run(resume, output) -> Tuple[Path, Dict[str, Any]]:
    """The run directory ``--resume`` names and its config.json."""
    folder = Path(resume).expanduser()
    if output is not None and Path(output).expanduser().resolve() != folder.resolve():
        raise InvalidInputError(f"--resume {folder} writes into that run's directory; drop --output {output}.")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InvalidInputError(f"--resume {folder}: no config.json there; pass the directory of a "
                                f"`zoo train` run (its --output).")
    try:
        config = json.loads(config_file.read_text())
        config["model"], config["recipe"]["stages"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ZooError(f"--resume: cannot read the run configuration {config_file} ({error}).") from error
    if (folder / "results.json").is_file():
        raise InvalidInputError(f"The run in {folder} has finished (results.json exists): nothing to resume.")
    return folder, config


def _recipe_from_config(config: Dict[str, Any]) -> Recipe:
    """The resolved recipe a run's config.json recorded, as it was trained."""
    saved = config["recipe"]
    fields = {f.name for f in dataclasses.fields(Stage)}
    stages = []
    for values in saved["stages"]:
        values = {key: value for key, value in values.items() if key in fields}
        values["milestones"] = tuple(values.get("milestones") or ())
        stages.append(Stage(**values))
    return Recipe(name=saved["name"], description=saved.get("description", ""), stages=stages)


def _resume_settings(entry, config: Dict[str, Any], folder: Path, given: Dict[str, Any]) -> Dict[str, Any]:
    """The settings of the run in ``folder``. Options given again must agree with
    them: a resumed run continues the same training, it cannot change it."""
    if get_entry(config["model"]).name != entry.name:
        raise InvalidInputError(f"{folder} holds a run of {config['model']}, not {entry.name}.")
    recipe = _recipe_from_config(config)
    changes = []

    def differs(option, value, saved):
        if value is not None and value != saved:
            changes.append(f"{option} {value} (the run has {saved})")

    if given["dataset"] is not None:
        differs("--dataset", zdata.get_dataset(given["dataset"]).name, config["dataset"])
    differs("--seed", given["seed"], config.get("seed"))
    differs("--limit", given["limit"], config.get("limit"))
    differs("--eval-limit", given["eval_limit"], config.get("eval_limit"))
    differs("--image-size", given["image_size"], config["input_shape"][0])
    differs("--teacher", given["teacher"], config.get("teacher"))
    if given["model_overrides"]:
        differs("model settings", given["model_overrides"], config.get("model_overrides") or {})
    if given["recipe"] is not None:
        differs("--recipe", get_recipe(given["recipe"]).name, recipe.name)
    again = recipe.resolve(epochs=given["epochs"], batch_size=given["batch_size"],
                           learning_rate=given["learning_rate"], stage_overrides=given["stage_overrides"])
    for before, after in zip(recipe.stages, again.stages):
        for field in dataclasses.fields(Stage):
            old, new = getattr(before, field.name), getattr(after, field.name)
            if json.dumps(old, default=str) != json.dumps(new, default=str):
                changes.append(f"{field.name}={new} in stage '{before.name}' (the run has {old})")
    saved_augment = config.get("augment")
    if given.get("augment") is not None:
        differs("--augment", given["augment"], (saved_augment or {}).get("name"))
    if changes:
        raise InvalidInputError(
            f"--resume {folder} continues that run with its own settings (config.json), but this "
            f"command changes {'; '.join(changes)}. Drop those options, or start a new run.")
    return {
        "dataset": config["dataset"], "recipe": recipe, "seed": config.get("seed", 0),
        "limit": config.get("limit"), "eval_limit": config.get("eval_limit"),
        "input_shape": tuple(config["input_shape"]), "teacher": config.get("teacher"),
        "model_overrides": config.get("model_overrides") or {},
        "augment": (saved_augment or {}).get("name"), "augment_args": (saved_augment or {}).get("args"),
    }


def _resume_point(folder: Path, recipe: Recipe) -> Tuple[int, int]:
    """``(stage index, epochs of it done)`` where a run continues, from its checkpoints."""
    start = (0, 0)
    for index, stage in enumerate(recipe.stages):
        done, _ = checkpointed_epochs(folder, stage)
        if done == 0:
            break
        start = (index, min(done, stage.epochs))
        if done < stage.epochs:
            break
        if index + 1 < len(recipe.stages):
            start = (index + 1, 0)
    return start


def _trim_summary(path: Path, epochs_done: int) -> None:
    """Keeps summary.csv's complete rows of the epochs that have a checkpoint, each once."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or EpochSummary.FIELDS
        rows, seen = [], set()
        for row in reader:
            if None in row.values() or None in row:  # a line cut short by the kill
                continue
            try:
                epoch = int(row["epoch"])
            except (TypeError, ValueError):
                continue
            if epoch <= epochs_done and epoch not in seen:
                seen.add(epoch)
                rows.append(row)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)


def _stage_model(name, stage: Stage, input_shape, num_classes, model_overrides):
    overrides = {**stage.model_overrides, **(model_overrides or {})}
    return load(name, input_shape=input_shape, num_classes=num_classes, **overrides)


def _no_partial_run(function):
    """A run that fails with a ZooError (bad input, diverged loss) before its first
    epoch was saved leaves nothing behind: the folders it created are removed."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        mark = len(_NEW_RUNS)
        try:
            return function(*args, **kwargs)
        except ZooError:
            for run_dir, top in _NEW_RUNS[mark:]:
                state = run_dir / "checkpoints" / "state"
                if not (state.is_dir() and any(state.rglob("checkpoint"))):
                    shutil.rmtree(top, ignore_errors=True)
            raise
        finally:
            del _NEW_RUNS[mark:]

    return wrapper


@_no_partial_run
def train(
    model: str,
    dataset: Optional[str] = None,
    recipe: Optional[str] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    output: Optional[os.PathLike] = None,
    seed: Optional[int] = None,
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
    strategy: Optional[str] = None,
    resume: Optional[os.PathLike] = None,
) -> Dict[str, Any]:
    """Train ``model`` on ``dataset`` (default fashion_mnist) with ``recipe``; returns
    the final results.

    Every stage of the recipe runs in turn, each initialised from the previous
    one. ``limit`` / ``eval_limit`` cut the splits (for smoke tests).
    ``teacher`` (a run directory, NAME:WEIGHTS or a saved model) is required by
    stages with ``distill=True`` (ReActNet's distributional loss).
    ``strategy``: default, mirrored, multiworker or tpu (zoo.training.distributed);
    ``batch_size`` stays the global batch. ``resume``: a run directory whose run was
    interrupted; training continues from its last checkpoint with its own settings.
    """
    entry = get_entry(model)
    zdist.check_strategy_name(strategy)
    saved_config = None
    if resume is not None:
        output, saved_config = _resumable_run(resume, output)
        settings = _resume_settings(entry, saved_config, output, dict(
            dataset=dataset, seed=seed, limit=limit, eval_limit=eval_limit, image_size=image_size,
            teacher=teacher, model_overrides=model_overrides, recipe=recipe, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, stage_overrides=stage_overrides,
            augment=augment))
        dataset, recipe_obj, seed = settings["dataset"], settings["recipe"], settings["seed"]
        limit, eval_limit, teacher = settings["limit"], settings["eval_limit"], settings["teacher"]
        model_overrides, augment = settings["model_overrides"], settings["augment"]
        augment_args = settings["augment_args"] if augment else augment_args
    spec = zdata.get_dataset(dataset or "fashion_mnist")
    seed = 0 if seed is None else int(seed)
    if saved_config is None:
        recipe_obj: Recipe = get_recipe(recipe or entry.default_recipe).resolve(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            stage_overrides=stage_overrides)
        input_shape = zdata.input_shape_for(spec, entry, image_size)
        if min(input_shape[:2]) < entry.min_input_size:
            raise InvalidInputError(
                f"--image-size {input_shape[0]} is too small for {entry.name}: it needs at least "
                f"{entry.min_input_size}x{entry.min_input_size} pixels.")
        output = Path(output) if output else default_output(entry.name, spec.name)
        if (output / "config.json").exists():
            raise ZooError(f"{output} already holds a training run (config.json); choose another "
                           f"--output, or continue it with --resume {output}.")
    else:
        input_shape = settings["input_shape"]
    dist = zdist.get_strategy(strategy)  # multiworker: before TensorFlow runs anything else
    chief = zdist.is_chief(dist)
    for stage in recipe_obj.stages:
        zdist.per_replica_batch(dist, stage.batch_size)
    total_train = zdata.num_examples(spec, "train")  # fails cleanly before anything is written
    verbose = fit_verbosity(verbose)

    needs_teacher = any(stage.distill for stage in recipe_obj.stages)
    if needs_teacher and not teacher:
        raise InvalidInputError(
            f"Recipe {recipe_obj.name!r} trains with a distributional loss: pass --teacher (a run "
            f"directory of a trained real-valued model), or --set distill=false for plain cross-entropy.")
    teacher_model = None
    if teacher and needs_teacher:
        from zoo.training.distill import load_teacher

        with dist.scope():  # the teacher runs on every replica too
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
    # non-chief workers train the same steps but write to a folder removed at the end
    run_dir = output if chief else Path(tempfile.mkdtemp(prefix="zoo-worker-"))
    if not chief:
        atexit.register(shutil.rmtree, run_dir, True)
    start_stage, start_epoch = 0, 0
    if saved_config is None:
        _check_output_dir(run_dir)
        _write_text_atomically(run_dir / "config.json", json.dumps(config, indent=2, default=str))
    else:
        start_stage, start_epoch = _resume_point(output, recipe_obj)
        done = sum(s.epochs for s in recipe_obj.stages[:start_stage]) + start_epoch
        if chief:
            saved_config.setdefault("resumed", []).append(
                {"command": config["command"], "at": config["started"], "epochs_done": done})
            _write_text_atomically(output / "config.json", json.dumps(saved_config, indent=2, default=str))
            _trim_summary(output / "summary.csv", done)
        print(f"[{entry.name}] resuming {output}: {done} epoch(s) done, continuing stage "
              f"{start_stage + 1} '{recipe_obj.stages[start_stage].name}' at epoch {start_epoch + 1}",
              file=sys.stderr)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    replicas = dist.num_replicas_in_sync
    test_examples = zdata.num_examples(spec, "test")
    eval_batch = zdist.eval_batch_size(min(eval_limit, test_examples) if eval_limit else test_examples,
                                       EVAL_BATCH_SIZE, dist)

    previous = None
    epoch_offset = 0
    history_rows = []
    for index, stage in enumerate(recipe_obj.stages):
        if index < start_stage:  # finished before the interruption
            if index == start_stage - 1 and start_epoch == 0 and recipe_obj.stages[start_stage].init_from_previous:
                with dist.scope():
                    previous = _stage_model(entry.name, stage, input_shape, spec.num_classes, model_overrides)
                tf.train.Checkpoint(model=previous).restore(checkpointed_epochs(output, stage)[1]).expect_partial()
            epoch_offset += stage.epochs
            continue
        with dist.scope():  # model, optimizer and metrics are created on every replica
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
        print(f"[{entry.name}] stage {index + 1}/{len(recipe_obj.stages)} '{stage.name}': "
              f"{stage.epochs} epochs, {stage.optimizer} lr {stage.learning_rate}, "
              f"batch {stage.batch_size}"
              + (f" ({stage.batch_size // replicas} per replica, {zdist.describe(dist)})" if replicas > 1 else "")
              + f", input {input_shape}", file=sys.stderr)
        guard = NonFiniteLossGuard()
        state = TrainingState(net, optimizer, state_directory(run_dir, stage), guard)
        initial_epoch = 0
        if index == start_stage and start_epoch:  # the optimizer's slots load on its first step
            with dist.scope():
                initial_epoch = state.restore(checkpointed_epochs(output, stage)[1])
        train_ds = zdata.make_dataset(spec, "train", input_shape, stage.batch_size, training=True,
                                      seed=seed + index, limit=limit)
        if augmentation is not None:  # soft labels: categorical CE, accuracy vs. their argmax
            from zoo.augment import apply_augmentation, soft_label_training

            train_ds = apply_augmentation(train_ds, augmentation, spec.num_classes, seed=seed + index)
            with dist.scope():  # metrics belong to the strategy that trains
                soft_loss, soft_metrics = soft_label_training(stage.label_smoothing, spec.num_classes)
                trainee.compile(optimizer=optimizer, loss=soft_loss, metrics=soft_metrics)
        val_ds = zdata.make_dataset(spec, "test", input_shape, eval_batch, limit=eval_limit)
        prefix = f"{stage.name}_" if len(recipe_obj.stages) > 1 else ""
        callbacks = [
            guard,  # first: a NaN/inf loss stops the run before anything of that epoch is saved
            SaveWeights(net, str(run_dir / "checkpoints" / (prefix + "epoch{epoch:03d}.h5")), guard),
            tf.keras.callbacks.TensorBoard(str(run_dir / "logs" / stage.name), histogram_freq=0,
                                           profile_batch=0),
            EpochSummary(run_dir / "summary.csv", stage.name, epoch_offset, guard),
            state,  # last: its checkpoint marks the epoch done (--resume trims what came after)
        ]
        callbacks[1:1] = progress_callbacks(entry.name, math.ceil(train_examples / stage.batch_size), verbose)
        with contextlib.redirect_stdout(sys.stderr):
            history = trainee.fit(zdist.distribute_dataset(train_ds, dist, stage.batch_size, train_examples),
                                  epochs=stage.epochs,
                                  validation_data=zdist.distribute_dataset(val_ds, dist),
                                  callbacks=callbacks, verbose=verbose, initial_epoch=initial_epoch)
        if not guard.ok or any(not math.isfinite(v) for v in history.history.get("loss", [0.0])):
            raise ZooError(_diverged_message(output, recipe_obj, index, guard.where))
        if len(recipe_obj.stages) > 1:
            save_weights_atomically(net, run_dir / f"{stage.name}_weights.h5")
        history_rows.append((stage.name, history.history))
        epoch_offset += stage.epochs
        previous = net

    save_weights_atomically(net, run_dir / "weights.h5")
    results = evaluate_model(net, spec, input_shape, limit=eval_limit, strategy=dist)
    results.update({"model": entry.name, "dataset": spec.name, "weights": str(output / "weights.h5"),
                    "input_shape": list(input_shape), "epochs": epoch_offset,
                    "finished": datetime.datetime.now().isoformat(timespec="seconds")})
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        return results
    try:
        from zoo.plots import plot_training_curves

        plot_training_curves(output / "summary.csv", output / "curves.png",
                             title=f"{entry.name} on {spec.name}")
    except Exception as error:  # noqa: BLE001 - a plot must never lose a finished run
        print(f"(could not draw curves.png: {error})", file=sys.stderr)
    _write_text_atomically(output / "results.json", json.dumps(results, indent=2))  # last: the run is done
    print(f"[{entry.name}] test top-1 {results['top1']:.2f}%  top-5 {results['top5']:.2f}%  "
          f"loss {results['loss']:.4f}  -> {output}", file=sys.stderr)
    return results


def _diverged_message(output: Path, recipe: Recipe, index: int, where) -> str:
    stage = recipe.stages[index]
    epoch, step = where or (None, None)
    at = f" at epoch {epoch}, step {step}" if epoch else ""
    prefix = f"{stage.name}_" if len(recipe.stages) > 1 else ""
    if epoch and epoch > 1:
        kept = output / "checkpoints" / f"{prefix}epoch{epoch - 1:03d}.h5"
    elif index > 0:
        kept = output / f"{recipe.stages[index - 1].name}_weights.h5"
    else:
        kept = None
    last = f"the last good weights are {kept}" if kept else "no epoch finished, so no weights were kept"
    return (f"Training diverged: the loss became NaN/inf in stage '{stage.name}'{at} and the run "
            f"stopped; {last}. Lower --lr (or check the data) and start a new run.")


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
    path = resolve_weights_path(weights, entry)
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
