"""ReActNet's distributional loss: train a student to match a frozen real-valued
teacher's output distribution (arXiv 2003.03488 §4.2)."""
from __future__ import annotations

import json
import os
from pathlib import Path
import tensorflow as tf

from zoo.api import get_entry, load
from zoo.errors import InvalidInputError, ZooError
from zoo.runs import CONFIG, load_for_evaluation

_TINY = 1e-30  # only for models without a softmax layer to read logits before


def distributional_loss(teacher_logits, student_logits):
    """Mean over the batch of KL(teacher || student) = sum_c p_t (log p_t - log p_s), with
    the log-probabilities taken as log-softmax of the logits (exact for any logits; the
    official utils/KD_loss.py does the same with F.log_softmax).

    The official code minimises the cross-entropy -sum p_t log p_s, which differs
    from this KL only by the teacher's entropy, a constant for the student."""
    teacher_log = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32), axis=-1)
    student_log = tf.nn.log_softmax(tf.cast(student_logits, tf.float32), axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher_log) * (teacher_log - student_log), axis=-1)
    return tf.reduce_mean(kl)


def logits_model(model):
    """``model`` up to its logits: the input of its final softmax layer (every zoo
    classifier ends in ``Activation("softmax")``); a model that ends otherwise gets
    ``log(probabilities)``, which log-softmax maps back to the same distribution."""
    last = model.layers[-1]
    if isinstance(last, tf.keras.layers.Activation) and getattr(last.activation, "__name__", "") == "softmax":
        return tf.keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    probs = model.outputs[0]
    log_probs = tf.keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(tf.cast(p, tf.float32), _TINY)))(probs)
    return tf.keras.Model(model.inputs, log_probs, name=f"{model.name}_logits")


class Distiller(tf.keras.Model):
    """Wraps a student so that ``fit`` minimises the distributional loss against
    a frozen teacher (plus ``label_weight`` x the compiled label loss, 0 in the
    paper). ``evaluate`` / ``predict`` run the student alone."""

    def __init__(self, student, teacher, label_weight: float = 0.0, **kwargs):
        super().__init__(name=f"{student.name}_distilled", **kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.student_logits = logits_model(student)  # shares the student's layers
        self.teacher_logits = logits_model(teacher)
        self.label_weight = float(label_weight)
        self.distill_tracker = tf.keras.metrics.Mean(name="distill_loss")
        self.total_tracker = tf.keras.metrics.Mean(name="total_loss")

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    @property
    def metrics(self):
        return [*super().metrics, self.distill_tracker, self.total_tracker]

    def train_step(self, data):
        x, y = data[0], data[1]
        teacher_logits = self.teacher_logits(x, training=False)
        with tf.GradientTape() as tape:
            student_logits = self.student_logits(x, training=True)
            student_probs = tf.nn.softmax(tf.cast(student_logits, tf.float32), axis=-1)
            distill = distributional_loss(teacher_logits, student_logits)
            loss = distill + tf.add_n([tf.constant(0.0)] + list(self.student.losses))
            # tf.distribute sums the replicas' gradients: each replica's loss counts 1/N
            # (compiled_loss divides by N itself), so N replicas make one step on the global batch
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            scaled = loss / replicas
            if self.label_weight:
                label = self.compiled_loss(y, student_probs)
                scaled += self.label_weight * label
                loss += self.label_weight * label * replicas
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        self.distill_tracker.update_state(distill)
        self.total_tracker.update_state(loss)
        self.compiled_metrics.update_state(y, student_probs)
        results = {m.name: m.result() for m in self.metrics if m.name != "total_loss"}
        results["loss"] = self.total_tracker.result()  # epoch mean, as Keras reports it
        return results

    def test_step(self, data):
        x, y = data[0], data[1]
        student_probs = self.student(x, training=False)
        self.compiled_loss(y, student_probs)
        self.compiled_metrics.update_state(y, student_probs)
        return {m.name: m.result() for m in self.metrics if m.name not in ("distill_loss", "total_loss")}


def load_teacher(teacher: str, input_shape, num_classes: int):
    """A frozen teacher from: a `zoo train` run directory, ``NAME:WEIGHTS`` (a zoo
    entry and its weights file) or a saved full Keras model (.h5/.keras)."""
    path = Path(str(teacher)).expanduser()
    if path.is_dir():
        config_file = path / CONFIG
        if not config_file.is_file():
            raise InvalidInputError(f"Teacher directory {path} has no config.json: pass a `zoo train` run "
                                    f"directory, NAME:WEIGHTS or a saved Keras model file.")
        config = json.loads(config_file.read_text())
        model, _, shape = load_for_evaluation(config["model"], path, config["dataset"])
    elif path.is_file():
        try:
            model = tf.keras.models.load_model(str(path), compile=False)
        except (OSError, ValueError) as error:
            raise ZooError(f"Cannot load teacher model {path}: {str(error).splitlines()[0]}. Pass a full "
                           f"saved Keras model, a run directory or NAME:WEIGHTS.") from error
        shape = tuple(model.input_shape[1:])
    elif ":" in str(teacher):
        name, weights = str(teacher).split(":", 1)
        get_entry(name)
        model = load(name, weights=weights, input_shape=input_shape, num_classes=num_classes)
        shape = tuple(input_shape)
    elif os.sep in str(teacher) or str(teacher).startswith(("~", ".")) or path.suffix in (".h5", ".keras"):
        raise InvalidInputError(
            f"--teacher {teacher}: no such file or directory. Pass an existing `zoo train` run "
            f"directory, a saved Keras model file or NAME:WEIGHTS.")
    else:
        get_entry(teacher)  # a clear error for unknown names
        raise InvalidInputError(
            f"Teacher {teacher!r} needs trained weights: pass a run directory of `zoo train {teacher}`, "
            f"or {teacher}:PATH_TO_WEIGHTS.h5.")
    if tuple(shape) != tuple(input_shape):
        raise InvalidInputError(f"Teacher input {tuple(shape)} differs from the student's {tuple(input_shape)}; "
                                f"train the teacher with the same --image-size.")
    if model.output_shape[-1] != num_classes:
        raise InvalidInputError(f"Teacher has {model.output_shape[-1]} classes, the dataset {num_classes}.")
    model.trainable = False
    return model

