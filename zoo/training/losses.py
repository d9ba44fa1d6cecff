"""Losses, metrics and weight decay of classification training."""
from __future__ import annotations

import larq as lq
import tensorflow as tf

from zoo.metrics import PredictedClasses, StrictTopK


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


def classification_metrics(num_classes: int, predicted_classes: bool = False):
    """Top-1 and top-5 accuracy (top-5 without ties, zoo.metrics.StrictTopK); with
    ``predicted_classes``, also how many classes the model predicts (evaluation)."""
    metrics = [
        tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        StrictTopK(k=min(5, num_classes), name="top5"),
    ]
    return metrics + ([PredictedClasses(num_classes)] if predicted_classes else [])


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
    for layer in model.layers:
        if getattr(layer, "kernel", None) is variable:
            return isinstance(getattr(layer, "kernel_quantizer", None), lq.quantizers.NoOp)
    return False
