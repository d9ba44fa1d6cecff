"""Keras callbacks of the fit loops: NaN guard, per-epoch weights, resumable state,
summary.csv rows and progress lines."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Optional

import tensorflow as tf

from zoo.runs import append_csv_row, save_weights_atomically

PROGRESS_INTERVAL_S = 60.0  # seconds between ProgressLog lines in non-interactive logs


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


class EpochSummary(tf.keras.callbacks.Callback):
    """Appends one row per epoch to summary.csv (all stages in one file).

    ``val_train_loss`` is the training objective (label smoothing, distillation included)
    on the test images, Keras' ``val_loss``: not the plain cross-entropy that results.json
    calls ``loss``, hence another name."""

    FIELDS = ["epoch", "stage", "stage_epoch", "lr", "loss", "accuracy", "top5",
              "val_train_loss", "val_accuracy", "val_top5", "seconds"]
    RENAMED = {"val_loss": "val_train_loss"}  # Keras' log key -> summary.csv column

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
        for log_key, value in logs.items():
            key = self.RENAMED.get(log_key, log_key)
            if key in self.FIELDS and key not in row:
                value = float(value)
                row[key] = 100.0 * value if "accuracy" in key or "top5" in key else value
        append_csv_row(self.path, self.FIELDS, row)


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
