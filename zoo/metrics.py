"""Classification metrics that cannot flatter a model.

- :class:`StrictTopK`: top-k accuracy where a tie counts against the model. Keras'
  ``SparseTopKCategoricalAccuracy`` counts an image as correct when its label's score is
  among the k highest *with ties*, so a collapsed model (the same scores for every class)
  scores 100% top-5.
- :class:`PredictedClasses`: how many distinct classes the model predicts (argmax); one
  for a model whose predictions collapsed to a single class.
- :func:`health_warnings`: what a results record says is wrong (loss NaN/inf, one
  predicted class), as sentences for results.json and stderr.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import tensorflow as tf


class StrictTopK(tf.keras.metrics.Mean):
    """Share of images whose label scores strictly above all but at most ``k - 1`` other
    classes (integer labels). With ``k=1`` this is top-1 accuracy where ties lose."""

    def __init__(self, k: int = 5, name: str = "top5", **kwargs):
        super().__init__(name=name, **kwargs)
        self.k = int(k)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        y_pred = tf.convert_to_tensor(y_pred)
        label_score = tf.gather(y_pred, y_true, axis=1, batch_dims=1)[:, None]
        # classes other than the label that score as high or higher: a tie counts against
        rivals = tf.reduce_sum(tf.cast(y_pred >= label_score, tf.int32), axis=1) - 1
        return super().update_state(tf.cast(rivals < self.k, tf.float32), sample_weight)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class PredictedClasses(tf.keras.metrics.Metric):
    """The number of distinct classes among the argmax predictions seen."""

    def __init__(self, num_classes: int, name: str = "predicted_classes", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.counts = self.add_weight("counts", shape=(self.num_classes,), initializer="zeros",
                                      dtype=tf.float32)

    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = tf.argmax(tf.reshape(y_pred, [-1, self.num_classes]), axis=-1)
        self.counts.assign_add(tf.reduce_sum(tf.one_hot(predicted, self.num_classes), axis=0))

    def result(self):
        return tf.reduce_sum(tf.cast(self.counts > 0, tf.float32))

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def health_warnings(results: Dict[str, Any]) -> List[str]:
    """Sentences about a results record ({'loss', 'predicted_classes', 'examples'}) that a
    reader must not miss: a loss that is NaN/inf, predictions collapsed to one class."""
    warnings = []
    loss = results.get("loss")
    if loss is not None and not math.isfinite(float(loss)):
        warnings.append("the loss is NaN/inf: the model diverged; lower --lr (or check the "
                        "data) and train again")
    if results.get("predicted_classes") == 1 and int(results.get("examples", 0)) > 1:
        warnings.append("the model predicts one class for every test image (collapsed); "
                        "its accuracy is that class's share, not learning")
    return warnings
