"""BYOL (Grill et al., arXiv 2006.07733): an online network (backbone, projector,
predictor) regresses the projection of a slowly moving target network; no negatives.
Loss ``2 - 2 cos(p, z)``, symmetrised over the two views."""
from __future__ import annotations

import math

import tensorflow as tf

from zoo.errors import InvalidInputError
from zoo.ssl.base import Encoder, SSLMethod, feature_model, l2_normalize, parameters, projection_head


def byol_loss(p, z):
    """Mean of ``2 - 2 cos(p, z)`` (``p``, ``z`` L2-normalised)."""
    return tf.reduce_mean(2.0 - 2.0 * tf.reduce_sum(p * z, axis=-1))


class BYOL(SSLMethod):
    name = "byol"
    crop_scale = 0.08  # BYOL keeps SimCLR's random crop (area 0.08-1)
    symmetric = True   # the loss is summed over (view 1 -> view 2) and (view 2 -> view 1), §3.1

    # hidden 4096, output 256, tau_base 0.996 increased to 1 with a cosine: arXiv 2006.07733 §3.3
    def __init__(self, dim: int = 256, hidden: int = 4096, tau: float = 0.996):
        super().__init__(name="byol")
        self.dim, self.hidden, self.tau = int(dim), int(hidden), float(tau)
        if not 0.0 <= self.tau < 1.0:
            raise InvalidInputError("BYOL needs 0 <= tau < 1.")
        self.total_steps = 1

    def config(self):
        return {"dim": self.dim, "hidden": self.hidden, "tau": self.tau}

    def _encoder(self, backbone, name):
        features = feature_model(backbone, name=f"{name}_features")
        width = int(features.output.shape[-1])
        return Encoder(features, projection_head(width, self.hidden, self.dim, True, f"{name}_projector"),
                       name=name)

    def build(self, make_backbone):
        self._backbone = make_backbone()
        self.online_net = self._encoder(self._backbone, "online")
        self.predictor = projection_head(self.dim, self.hidden, self.dim, True, "predictor")
        self.target_net = self._encoder(make_backbone(), "target")
        self.target_net.set_weights(self.online_net.get_weights())
        self.target_net.trainable = False
        self.step = tf.Variable(0, trainable=False, dtype=tf.int64, name="byol_step")

    @property
    def backbone(self):
        return self._backbone

    @property
    def trainable_variables(self):
        return self.online_net.trainable_variables + self.predictor.trainable_variables

    def online(self, x, training=True):
        return l2_normalize(self.predictor(self.online_net(x, training=training), training=training))

    def targets(self, x, seed):
        return tf.stop_gradient(l2_normalize(self.target_net(x, training=True)))

    def loss(self, p, z):
        return byol_loss(p, z)

    def momentum(self):
        """tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 at step k of K."""
        progress = tf.minimum(tf.cast(self.step, tf.float32) / float(max(self.total_steps, 1)), 1.0)
        return 1.0 - (1.0 - self.tau) * (tf.cos(math.pi * progress) + 1.0) / 2.0

    def before_step(self):
        tau = self.momentum()
        for target, online in zip(parameters(self.target_net), parameters(self.online_net)):
            target.assign(tau * target + (1.0 - tau) * online)
        self.step.assign_add(1)
