"""What the SSL methods share: encoders (a zoo backbone + projection head) and the method interface."""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf


def l2_normalize(x):
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def feature_model(backbone, name: Optional[str] = None):
    """``include_top=False`` backbone -> a model giving its globally averaged features."""
    x = backbone.output
    if len(x.shape) == 4:
        x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(backbone.input, x, name=name or f"{backbone.name}_features")


def projection_head(input_dim: int, hidden: int, output_dim: int, batch_norm: bool, name: str):
    """Linear -> (BN) -> ReLU -> Linear."""
    layers = [tf.keras.layers.Dense(hidden, use_bias=not batch_norm)]
    if batch_norm:
        layers.append(tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5))
    layers += [tf.keras.layers.ReLU(), tf.keras.layers.Dense(output_dim)]
    return tf.keras.Sequential([tf.keras.Input((input_dim,)), *layers], name=name)


class Encoder(tf.keras.Model):
    """Backbone features followed by a projection head; ``call`` returns the projection."""

    def __init__(self, features, head, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.head = head

    def call(self, x, training=False):
        return self.head(self.features(x, training=training), training=training)


def parameters(model):
    """The weights a momentum encoder follows: all but batch-norm running statistics
    (PyTorch's ``parameters()``), in the model's own order."""
    return [w for w in model.weights if "moving_mean" not in w.name and "moving_variance" not in w.name]


def split_call(model, x, splits: int, training: bool):
    """Run ``model`` on ``splits`` equal chunks of the batch: batch norm then sees each
    chunk's statistics (the single-device stand-in for per-GPU BN, MoCo's SplitBatchNorm)."""
    if splits <= 1:
        return model(x, training=training)
    return tf.concat([model(chunk, training=training) for chunk in tf.split(x, splits)], axis=0)


class SSLMethod(tf.Module):
    """A self-supervised method: ``online`` embeds a view with gradients, ``targets`` gives
    the second view's targets, ``loss(q, t)`` is the method's own loss, and
    ``before_step`` / ``after_step`` do momentum updates and queues."""

    name = "ssl"
    crop_scale = 0.2  # smallest random-resized-crop area of a view
    symmetric = False  # also L(view 2 -> view 1) in the original term
    total_steps = 1  # set by the trainer (schedules such as BYOL's momentum)

    def build(self, make_backbone: Callable[[], tf.keras.Model]) -> None:
        raise NotImplementedError

    def online(self, x, training: bool = True):
        raise NotImplementedError

    def targets(self, x, seed):
        raise NotImplementedError

    def loss(self, q, t):
        raise NotImplementedError

    def before_step(self):
        pass

    def after_step(self, t):
        pass

    @property
    def trainable_variables(self):
        raise NotImplementedError

    @property
    def backbone(self) -> tf.keras.Model:
        raise NotImplementedError

    def config(self):
        return {}
