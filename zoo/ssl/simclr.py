"""SimCLR (Chen et al., arXiv 2002.05709): two views, a BN projection MLP, NT-Xent over
the 2N views of a batch (each view's positive is its pair, the other 2N-2 are negatives)."""
from __future__ import annotations

import tensorflow as tf

from zoo.errors import InvalidInputError
from zoo.ssl.base import Encoder, SSLMethod, feature_model, l2_normalize, projection_head

_MASK = 1e9


def nt_xent(z1, z2, temperature: float):
    """Symmetric NT-Xent of two L2-normalised batches ``[N, d]``."""
    size = tf.shape(z1)[0]
    labels = tf.range(size)
    self_mask = tf.eye(size) * _MASK
    logits_12 = tf.matmul(z1, z2, transpose_b=True) / temperature
    logits_11 = tf.matmul(z1, z1, transpose_b=True) / temperature - self_mask
    logits_21 = tf.matmul(z2, z1, transpose_b=True) / temperature
    logits_22 = tf.matmul(z2, z2, transpose_b=True) / temperature - self_mask
    loss_1 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.concat([logits_12, logits_11], 1))
    loss_2 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.concat([logits_21, logits_22], 1))
    return tf.reduce_mean(loss_1 + loss_2) / 2.0


class SimCLR(SSLMethod):
    name = "simclr"
    crop_scale = 0.08  # SimCLR's random crop (Appendix A): area 0.08-1

    # dim 128 and a 2-layer BN MLP head: SimCLR §B.9 / Appendix; T 0.5: its CIFAR-10 setting (§B.9)
    def __init__(self, dim: int = 128, temperature: float = 0.5):
        super().__init__(name="simclr")
        self.dim, self.temperature = int(dim), float(temperature)
        if self.temperature <= 0:
            raise InvalidInputError("SimCLR needs temperature > 0.")

    def config(self):
        return {"dim": self.dim, "temperature": self.temperature}

    def build(self, make_backbone):
        self._backbone = make_backbone()
        features = feature_model(self._backbone, name="encoder_features")
        width = int(features.output.shape[-1])
        self.encoder = Encoder(features, projection_head(width, width, self.dim, True, "encoder_head"),
                               name="encoder")

    @property
    def backbone(self):
        return self._backbone

    @property
    def trainable_variables(self):
        return self.encoder.trainable_variables

    def online(self, x, training=True):
        return l2_normalize(self.encoder(x, training=training))

    def targets(self, x, seed):
        return self.online(x, training=True)  # SimCLR's second view carries gradients too

    def loss(self, q, t):
        return nt_xent(q, t, self.temperature)
