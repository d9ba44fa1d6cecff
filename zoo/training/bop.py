"""Bop, the latent-free binary optimizer ("Latent Weights Do Not Exist", NeurIPS 2019,
arXiv 1906.02107), as the optimizer entry ``bop`` and the paper's recipes.

Bop keeps no latent real weights: each binary weight (a variable of precision 1,
i.e. a kernel built with ``lq.quantizers.NoOp(precision=1)`` and no constraint)
is stored as +-1 and flipped when the exponential moving average of its
gradient (adaptivity rate ``gamma``) agrees with its sign by more than
``threshold``. Every other variable (BN, real first/last layers) is trained by
Adam. Both come from Larq: ``lq.optimizers.CaseOptimizer`` routes the binary
variables to ``lq.optimizers.Bop`` and the rest to a legacy Keras Adam.

``gamma`` and ``threshold`` may follow a schedule: ``constant``, ``step``
(x ``decay`` every N epochs, staircase, the paper's CIFAR-10 run) or ``linear``
(to ``*_end`` over the stage, the paper's ImageNet runs).
"""
from __future__ import annotations

from typing import Optional

import larq as lq
import tensorflow as tf

from zoo.errors import InvalidInputError
from zoo.training.optimizers import StageSchedule, register_optimizer


HYPER_SCHEDULES = ("constant", "step", "linear")


def hyper_schedule(name: str, value: float, kind: str = "constant", end: Optional[float] = None,
                   decay: float = 0.1, decay_every_epochs: Optional[float] = None,
                   total_steps: Optional[int] = None, steps_per_epoch: Optional[int] = None):
    """A Bop hyper-parameter (``gamma`` or ``threshold``) as a float or a per-step schedule.

    ``step``: ``value * decay ** floor(step / (decay_every_epochs * steps_per_epoch))``.
    ``linear``: from ``value`` to ``end`` over ``total_steps``, then ``end``.
    """
    kind = str(kind).lower()
    if kind == "constant":
        return float(value)
    if kind == "step":
        if not decay_every_epochs or not steps_per_epoch:
            raise InvalidInputError(
                f"{name}_schedule='step' needs {name}_decay_every_epochs > 0 (and the loop's "
                f"steps_per_epoch).")
        decay_steps = max(1, round(float(decay_every_epochs) * int(steps_per_epoch)))
        # §5.2: gamma x0.1 every 100 epochs, staircase (the paper's ExponentialDecay)
        return tf.keras.optimizers.schedules.ExponentialDecay(
            float(value), decay_steps, float(decay), staircase=True)
    if kind == "linear":
        if end is None or not total_steps:
            raise InvalidInputError(
                f"{name}_schedule='linear' needs {name}_end (and the loop's total_steps).")
        # §5.3: linear decay over all training steps (the paper's PolynomialDecay, power 1)
        return tf.keras.optimizers.schedules.PolynomialDecay(
            float(value), int(total_steps), end_learning_rate=float(end), power=1.0)
    raise InvalidInputError(
        f"Unknown {name}_schedule {kind!r}: use one of {', '.join(HYPER_SCHEDULES)}.")


def _adam_learning_rate(learning_rate, lr_end: Optional[float], total_steps: Optional[int]):
    """The stage's LR, or a linear decay ``learning_rate -> lr_end`` (§5.3: 2.5e-3 -> 5e-6)."""
    if lr_end is None:
        return learning_rate
    if isinstance(learning_rate, StageSchedule):
        if learning_rate.kind != "linear" or learning_rate.warmup_steps:
            raise InvalidInputError(
                "lr_end (Adam's final LR) needs the stage's schedule 'linear' without warm-up; "
                f"got {learning_rate.kind!r}" + (" with warm-up" if learning_rate.warmup_steps else "")
                + ". Drop lr_end from optimizer_args or use --set schedule=linear.")
        start, steps = learning_rate.learning_rate, learning_rate.total_steps
    elif isinstance(learning_rate, tf.keras.optimizers.schedules.LearningRateSchedule):
        raise InvalidInputError("lr_end needs a float learning rate or the loop's linear schedule.")
    else:
        start, steps = float(learning_rate), total_steps
    if not steps:
        raise InvalidInputError("lr_end needs total_steps (the fit loop passes it).")
    return tf.keras.optimizers.schedules.PolynomialDecay(
        float(start), int(steps), end_learning_rate=float(lr_end), power=1.0)


@tf.keras.utils.register_keras_serializable(package="zoo")
class BopCaseOptimizer(lq.optimizers.CaseOptimizer):
    """``CaseOptimizer`` that also answers ``learning_rate`` / ``lr``: the current LR of
    its default (real-valued) optimizer, so LR logging callbacks work with Bop."""

    def _current_lr(self):
        if self.default is None:
            raise AttributeError("This CaseOptimizer has no default optimizer (no learning rate).")
        return self.default._decayed_lr(tf.float32)

    @property
    def learning_rate(self):
        return self._current_lr()

    @learning_rate.setter
    def learning_rate(self, value):
        self.default.learning_rate = value

    lr = learning_rate


def bop_of(optimizer) -> lq.optimizers.Bop:
    """The Bop inside a CaseOptimizer built by the ``bop`` factory."""
    for _, inner in optimizer.pred_opt_pairs:
        if isinstance(inner, lq.optimizers.Bop):
            return inner
    raise ValueError(f"{optimizer!r} holds no Bop optimizer.")


@register_optimizer("bop")
def bop(
    learning_rate,
    threshold: float = 1e-8,  # Larq's default = §5.2/§5.3 value
    gamma: float = 1e-4,
    gamma_schedule: str = "constant",
    gamma_end: Optional[float] = None,
    gamma_decay: float = 0.1,
    gamma_decay_every_epochs: Optional[float] = None,
    threshold_schedule: str = "constant",
    threshold_end: Optional[float] = None,
    threshold_decay: float = 0.1,
    threshold_decay_every_epochs: Optional[float] = None,
    lr_end: Optional[float] = None,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,  # the paper's code: Keras Adam defaults
    total_steps: Optional[int] = None,
    steps_per_epoch: Optional[int] = None,
    **_,
):
    """Bop for the binary (precision-1) variables, Adam(``learning_rate``) for the rest."""
    steps = dict(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    binary = lq.optimizers.Bop(
        threshold=hyper_schedule("threshold", threshold, threshold_schedule, threshold_end,
                                 threshold_decay, threshold_decay_every_epochs, **steps),
        gamma=hyper_schedule("gamma", gamma, gamma_schedule, gamma_end, gamma_decay,
                             gamma_decay_every_epochs, **steps),
    )
    real = tf.keras.optimizers.legacy.Adam(
        _adam_learning_rate(learning_rate, lr_end, total_steps),
        beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    return BopCaseOptimizer((lq.optimizers.Bop.is_binary_variable, binary), default_optimizer=real)
