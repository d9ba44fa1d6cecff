"""Un-Mix (Shen et al., AAAI 2022, arXiv 2003.05438): image mixtures in self-supervised learning.

Per mini-batch: ``lam ~ Beta(1, 1)``; the partner of sample ``i`` is sample
``N - 1 - i`` (the batch in reverse order). With probability ``prob_global``
the mixture is a global mixup ``lam * x + (1 - lam) * x_rev``; otherwise a
CutMix box from ``x_rev`` is pasted into ``x`` and ``lam`` is reset to the kept
area. Only the first view is mixed.

The loss adds, to the method's own loss ``L(q, t)`` of the first view's
embedding ``q`` against the second view's target ``t``:
``lam * L(q_mix, t) + (1 - lam) * L(reverse(q_mix), t)``. Because the partner
order is a reversal, the embedding of the reversed mixture
``lam * x_rev + (1 - lam) * x`` is the batch-reversed embedding of the
mixture: one extra forward pass (the mixture) and no second one.
"""
from __future__ import annotations

import tensorflow as tf

from zoo.augment.mixing import cutmix_box, cutmix_images, sample_beta, split_seed

# beta 1.0 and P 0.5: the Un-Mix code's defaults of the CIFAR MoCo demo (arXiv 2003.05438 §3)
BETA = 1.0
PROB_GLOBAL = 0.5


def reverse_batch(x):
    """The batch in reverse order: the Un-Mix partner of sample i is sample N-1-i."""
    return tf.reverse(x, axis=[0])


def reversed_partners(size):
    """Indices of each sample's partner, ``[N-1, ..., 0]``."""
    return tf.range(size - 1, -1, -1)


def mix_global(x, lam):
    """``lam * x + (1 - lam) * x_rev``."""
    lam = tf.cast(lam, x.dtype)
    return lam * x + (1.0 - lam) * reverse_batch(x)


def mix_region(x, box):
    """Paste ``box`` of ``x_rev`` into ``x``; returns (mixture, kept area = the new lam)."""
    return cutmix_images(x, reversed_partners(tf.shape(x)[0]), box)


def unmix_images(x, seed, prob_global: float = PROB_GLOBAL, beta: float = BETA):
    """Mix a batch with its reverse; returns (mixture, lam): the weight of each sample's own image."""
    seed_lam, seed_choice, seed_box = split_seed(seed, 3)
    lam = sample_beta(seed_lam, beta)
    shape = tf.shape(x)

    def region():
        return mix_region(x, cutmix_box(shape[1], shape[2], lam, seed_box))

    return tf.cond(tf.random.stateless_uniform([], seed_choice) < prob_global,
                   lambda: (mix_global(x, lam), lam), region)


def unmix_loss(loss_fn, q, q_mix, target, lam):
    """``L(q, t) + lam * L(q_mix, t) + (1 - lam) * L(reverse(q_mix), t)``; returns
    (total, original term, mixture terms)."""
    original = loss_fn(q, target)
    mixed = lam * loss_fn(q_mix, target) + (1.0 - lam) * loss_fn(reverse_batch(q_mix), target)
    return original + mixed, original, mixed
