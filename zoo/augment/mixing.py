"""Mixup and CutMix as batch transforms: (images, integer labels) -> (mixed images, soft labels).

Both follow the official codes: one mixing ratio per batch, the partner of
sample ``i`` is ``perm[i]`` for a random permutation of the batch.

- mixup (Zhang et al., arXiv 1710.09412): ``x = lam * x_i + (1 - lam) * x_perm``,
  ``lam ~ Beta(alpha, alpha)``; labels mix with the same ``lam``.
- CutMix (Yun et al., arXiv 1905.04899): a box of side ``sqrt(1 - lam)`` times
  the image side, centred uniformly and clipped at the border, is pasted from
  ``x_perm``; ``lam`` is then reset to the area the box did *not* cover (the kept
  area, in pixels), which is what the labels mix with.

Randomness is stateless: every batch gets a ``[2]`` int seed, so a run is
reproducible from its seed.
"""
from __future__ import annotations

from typing import Tuple

import tensorflow as tf


def split_seed(seed, count: int):
    """``count`` independent ``[2]`` seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), count))


def sample_beta(seed, alpha: float, beta: float = None) -> tf.Tensor:
    """A scalar ``Beta(alpha, beta)`` sample (``beta`` defaults to ``alpha``): X / (X + Y), X, Y Gamma."""
    beta = alpha if beta is None else beta
    seed_a, seed_b = split_seed(seed, 2)
    x = tf.random.stateless_gamma([], seed_a, alpha=float(alpha))
    y = tf.random.stateless_gamma([], seed_b, alpha=float(beta))
    return x / (x + y)


def random_permutation(size, seed) -> tf.Tensor:
    """A random permutation of ``range(size)``."""
    return tf.random.experimental.stateless_shuffle(tf.range(size), seed=seed)


def cutmix_box(height, width, lam, seed) -> tf.Tensor:
    """``[y0, y1, x0, x1]`` (int32, end exclusive): a box of ``(1 - lam)`` of the area
    (before clipping) with a uniform centre, as CutMix's ``rand_bbox``."""
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    cut = tf.sqrt(1.0 - tf.cast(lam, tf.float32))
    cut_h = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
    seed_y, seed_x = split_seed(seed, 2)
    cy = tf.random.stateless_uniform([], seed_y, 0, height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, 0, width, dtype=tf.int32)
    y0 = tf.clip_by_value(cy - cut_h // 2, 0, height)
    y1 = tf.clip_by_value(cy + cut_h // 2, 0, height)
    x0 = tf.clip_by_value(cx - cut_w // 2, 0, width)
    x1 = tf.clip_by_value(cx + cut_w // 2, 0, width)
    return tf.stack([y0, y1, x0, x1])


def box_mask(height, width, box) -> tf.Tensor:
    """``[H, W]`` float mask, 1 inside ``box`` = ``[y0, y1, x0, x1]``."""
    rows = tf.range(height)
    cols = tf.range(width)
    inside_rows = tf.logical_and(rows >= box[0], rows < box[1])
    inside_cols = tf.logical_and(cols >= box[2], cols < box[3])
    return tf.cast(tf.logical_and(inside_rows[:, None], inside_cols[None, :]), tf.float32)


def mix_labels(onehot, perm, lam) -> tf.Tensor:
    """``lam * y + (1 - lam) * y[perm]``; ``lam`` a scalar or one value per sample."""
    lam = tf.cast(lam, onehot.dtype)
    if lam.shape.rank == 1:
        lam = lam[:, None]
    return lam * onehot + (1.0 - lam) * tf.gather(onehot, perm)


def mixup_images(images, perm, lam) -> tf.Tensor:
    lam = tf.cast(lam, images.dtype)
    return lam * images + (1.0 - lam) * tf.gather(images, perm)


def cutmix_images(images, perm, box) -> Tuple[tf.Tensor, tf.Tensor]:
    """Paste ``box`` of ``images[perm]`` into ``images``; returns (mixed, kept-area fraction)."""
    shape = tf.shape(images)
    mask = box_mask(shape[1], shape[2], box)[None, :, :, None]
    mixed = images * (1.0 - mask) + tf.gather(images, perm) * mask
    kept = 1.0 - tf.reduce_mean(mask)
    return mixed, kept


class Mixup:
    """mixup: ``lam ~ Beta(alpha, alpha)`` per batch, applied with probability ``prob``."""

    name = "mixup"

    # alpha 1.0: the mixup paper's CIFAR-10 setting (arXiv 1710.09412 §3.2; ImageNet used 0.2)
    def __init__(self, alpha: float = 1.0, prob: float = 1.0):
        self.alpha, self.prob = float(alpha), float(prob)

    def config(self):
        return {"alpha": self.alpha, "prob": self.prob}

    def __call__(self, images, labels, num_classes: int, seed):
        seed_apply, seed_lam, seed_perm = split_seed(seed, 3)
        onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
        perm = random_permutation(tf.shape(images)[0], seed_perm)
        lam = sample_beta(seed_lam, self.alpha)
        lam = tf.where(tf.random.stateless_uniform([], seed_apply) < self.prob, lam, 1.0)
        return mixup_images(images, perm, lam), mix_labels(onehot, perm, lam)


class CutMix:
    """CutMix: ``lam ~ Beta(beta, beta)``, a box pasted from the partner; labels mix by
    the kept area. Applied to a batch with probability ``prob``."""

    name = "cutmix"

    # beta 1.0 and prob 0.5: the CutMix code's CIFAR commands (--beta 1.0 --cutmix_prob 0.5;
    # ImageNet uses --cutmix_prob 1.0), arXiv 1905.04899 §4
    def __init__(self, beta: float = 1.0, prob: float = 0.5):
        self.beta, self.prob = float(beta), float(prob)

    def config(self):
        return {"beta": self.beta, "prob": self.prob}

    def __call__(self, images, labels, num_classes: int, seed):
        seed_apply, seed_lam, seed_perm, seed_box = split_seed(seed, 4)
        onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
        shape = tf.shape(images)
        perm = random_permutation(shape[0], seed_perm)
        lam = sample_beta(seed_lam, self.beta)
        box = cutmix_box(shape[1], shape[2], lam, seed_box)
        box = tf.where(tf.random.stateless_uniform([], seed_apply) < self.prob, box, tf.zeros_like(box))
        mixed, kept = cutmix_images(images, perm, box)
        return mixed, mix_labels(onehot, perm, kept)
