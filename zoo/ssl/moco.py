"""MoCo v2 (He et al. arXiv 1911.05722; Chen et al. arXiv 2003.04297): a momentum key
encoder, a queue of negative keys, an MLP projection head, InfoNCE with temperature."""
from __future__ import annotations

import tensorflow as tf

from zoo.augment.mixing import random_permutation
from zoo.errors import InvalidInputError
from zoo.ssl.base import (Encoder, SSLMethod, feature_model, l2_normalize, parameters, projection_head,
                          split_call)


def infonce_queue(q, k, queue, temperature: float):
    """Mean cross-entropy of ``[q.k, q.queue] / T`` with the positive at index 0
    (``q``, ``k``, ``queue`` rows L2-normalised)."""
    positive = tf.reduce_sum(q * k, axis=-1, keepdims=True)
    negative = tf.matmul(q, queue, transpose_b=True)
    logits = tf.concat([positive, negative], axis=1) / temperature
    labels = tf.zeros(tf.shape(q)[0], tf.int32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


# Un-Mix's CIFAR MoCo demo (unmix_c10.py / unmix_c100.py): a linear head (the ResNet's fc),
# T 0.1, K 4096, m 0.99; `zoo pretrain --ssl moco --unmix` on CIFAR starts from these
UNMIX_CIFAR_DEMO = {"mlp": False, "temperature": 0.1, "queue_size": 4096, "momentum": 0.99}
UNMIX_CIFAR_DATASETS = ("cifar10", "cifar100")


class MoCo(SSLMethod):
    name = "moco"
    crop_scale = 0.2  # MoCo v2 "aug+": RandomResizedCrop scale (0.2, 1)

    # dim 128, MLP head: MoCo v2 (arXiv 2003.04297 §2); T 0.2: MoCo v2; K 4096, m 0.99 and
    # 8 BN splits: the CIFAR MoCo demo the Un-Mix code builds on (arXiv 2003.05438 code)
    def __init__(self, dim: int = 128, queue_size: int = 4096, momentum: float = 0.99,
                 temperature: float = 0.2, bn_splits: int = 8, mlp: bool = True):
        super().__init__(name="moco")
        self.dim, self.queue_size, self.momentum = int(dim), int(queue_size), float(momentum)
        self.temperature, self.bn_splits, self.mlp = float(temperature), int(bn_splits), bool(mlp)
        if not 0.0 <= self.momentum < 1.0 or self.temperature <= 0 or self.queue_size < 1:
            raise InvalidInputError("MoCo needs 0 <= momentum < 1, temperature > 0, queue_size >= 1.")

    def config(self):
        return {"dim": self.dim, "queue_size": self.queue_size, "momentum": self.momentum,
                "temperature": self.temperature, "bn_splits": self.bn_splits, "mlp": self.mlp}

    def _encoder(self, backbone, name):
        features = feature_model(backbone, name=f"{name}_features")
        width = int(features.output.shape[-1])
        if self.mlp:
            head = projection_head(width, width, self.dim, batch_norm=False, name=f"{name}_head")
        else:
            head = tf.keras.Sequential([tf.keras.Input((width,)), tf.keras.layers.Dense(self.dim)],
                                       name=f"{name}_head")
        return Encoder(features, head, name=name)

    def build(self, make_backbone):
        self._backbone = make_backbone()
        self.encoder_q = self._encoder(self._backbone, "encoder_q")
        self.encoder_k = self._encoder(make_backbone(), "encoder_k")
        self.encoder_k.set_weights(self.encoder_q.get_weights())
        self.encoder_k.trainable = False
        initial = tf.math.l2_normalize(tf.random.normal([self.queue_size, self.dim], seed=0), axis=1)
        self.queue = tf.Variable(initial, trainable=False, name="queue")
        self.pointer = tf.Variable(0, trainable=False, dtype=tf.int32, name="queue_pointer")

    @property
    def backbone(self):
        return self._backbone

    @property
    def trainable_variables(self):
        return self.encoder_q.trainable_variables

    def online(self, x, training=True):
        return l2_normalize(split_call(self.encoder_q, x, self.bn_splits, training))

    def targets(self, x, seed):
        """Keys of the momentum encoder; the batch is shuffled across the BN splits and back."""
        perm = random_permutation(tf.shape(x)[0], seed)
        keys = split_call(self.encoder_k, tf.gather(x, perm), self.bn_splits, True)
        keys = tf.gather(keys, tf.math.invert_permutation(perm))
        return tf.stop_gradient(l2_normalize(keys))

    def loss(self, q, k):
        return infonce_queue(q, k, self.queue, self.temperature)

    def before_step(self):
        m = self.momentum
        for key, query in zip(parameters(self.encoder_k), parameters(self.encoder_q)):
            key.assign(m * key + (1.0 - m) * query)

    def after_step(self, k):
        size = tf.shape(k)[0]
        indices = (self.pointer + tf.range(size)) % self.queue_size
        self.queue.scatter_nd_update(indices[:, None], tf.cast(k, self.queue.dtype))
        self.pointer.assign((self.pointer + size) % self.queue_size)
