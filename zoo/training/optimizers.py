"""Optimizers by name. Larq's CaseOptimizer and Bop accept only the legacy
Keras optimizers, so every entry here builds a ``tf.keras.optimizers.legacy``
optimizer (or a CaseOptimizer of them)."""
from __future__ import annotations

import math
from typing import Callable, Dict

import tensorflow as tf

from zoo.registry import Registry

OPTIMIZERS: Registry[Callable] = Registry("optimizer")
SCHEDULES = ("linear", "cosine", "step", "constant")  # the kinds of StageSchedule


def register_optimizer(name: str, aliases=()):
    def decorator(factory):
        OPTIMIZERS.register(name, factory, aliases)
        return factory

    return decorator


@register_optimizer("adam")
def adam(learning_rate, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8, **_):
    # PyTorch's Adam defaults (the papers' code): eps 1e-8.
    return tf.keras.optimizers.legacy.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


@register_optimizer("sgd")
def sgd(learning_rate, momentum: float = 0.9, nesterov: bool = False, **_):
    return tf.keras.optimizers.legacy.SGD(learning_rate, momentum=momentum, nesterov=nesterov)


def get_optimizer(name: str, learning_rate, **kwargs):
    return OPTIMIZERS.get(name)(learning_rate, **kwargs)


@tf.keras.utils.register_keras_serializable(package="zoo")
class StageSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Per-step LR for a stage: optional linear warm-up, then linear-to-0, cosine,
    step (x gamma at milestones) or constant."""

    def __init__(self, learning_rate: float, total_steps: int, kind: str = "linear",
                 milestones=(), gamma: float = 0.1, warmup_steps: int = 0):
        self.learning_rate = float(learning_rate)
        self.total_steps = max(int(total_steps), 1)
        self.kind = kind
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        if kind not in SCHEDULES:
            raise ValueError(f"Unknown schedule {kind!r}: use linear, cosine, step or constant.")

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        total = float(self.total_steps)
        progress = tf.clip_by_value(step / total, 0.0, 1.0)
        lr = tf.constant(self.learning_rate, tf.float32)
        if self.kind == "linear":
            lr = lr * (1.0 - progress)
        elif self.kind == "cosine":
            lr = lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "step":
            passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.milestones or (1 << 30,), tf.float32), tf.float32))
            lr = lr * tf.pow(self.gamma, passed)
        if self.warmup_steps:
            warm = tf.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
            lr = lr * warm
        return lr

    def get_config(self) -> Dict:
        return dict(learning_rate=self.learning_rate, total_steps=self.total_steps, kind=self.kind,
                    milestones=self.milestones, gamma=self.gamma, warmup_steps=self.warmup_steps)
