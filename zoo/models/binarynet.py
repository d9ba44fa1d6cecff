"""BinaryNet for CIFAR-10 (BNN paper, arXiv 1602.02830) as trained with Bop in
"Latent Weights Do Not Exist" (NeurIPS 2019, arXiv 1906.02107), plus the
latent-free switch of the ``xnornet`` entry that the Bop recipe for XNOR-Net needs.

BinaryNet (the Bop paper's CIFAR-10 network, §5; its code: models/binarynet.py): a VGG-like
stack conv 128-128-M-256-256-M-512-512-M, then FC 1024-1024-classes; every layer is
binary (``ste_sign`` activations) except the first conv's input, every layer is
followed by BatchNorm without scale, 3x3 convs, 2x2 max-pools, softmax at the end.
The first conv is unpadded as in that code (``first_conv_padding="valid"``: 32x32 -> 30x30,
so the first dense layer sees 3x3x512): 10.36M parameters, 511M binary MACs at 32x32 and
10 classes, the network of the reported 91.3%. ``first_conv_padding="same"`` (4x4x512,
14.03M parameters) is the net of the published ``binarynet.fashion_mnist`` weights.

``binary_weights`` selects how the binary kernels are stored:

* ``True``: latent real weights, ``ste_sign`` kernel quantizer + ``weight_clip``
  (Courbariaux et al.; train with Adam).
* ``"latent_free"``: the kernels *are* the binary weights, +-1, with a
  ``NoOp(precision=1)`` quantizer and no constraint, so that Bop
  (``--recipe binarynet_bop``) finds and flips them. Initialised to random +-1.
* ``False``: real-valued kernels (binary activations only).

The variables are the same in all three cases, so weights move between them.
"""
from __future__ import annotations

import functools

import larq as lq
import tensorflow as tf

from zoo import layers as zl
from zoo.errors import InvalidInputError, UnknownNameError
from zoo.models import larq_zoo_models  # noqa: F401  (registers `xnornet` before we extend it)
from zoo.registry import MODELS, register_model
from zoo.papers import BNN, BOP


LATENT_FREE = "latent_free"


@tf.keras.utils.register_keras_serializable(package="zoo")
class RandomSign(tf.keras.initializers.Initializer):
    """+1 or -1, each with probability 1/2: binary weights for Bop from the first step."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None, **kwargs):
        dtype = tf.as_dtype(dtype or tf.keras.backend.floatx())
        # a fresh (possibly unseeded) uniform per call: every kernel gets its own draw
        values = tf.keras.initializers.RandomUniform(-1.0, 1.0, seed=self.seed)(shape, dtype=dtype)
        return tf.where(values >= 0, tf.ones_like(values), -tf.ones_like(values))

    def get_config(self):
        return {"seed": self.seed}


def kernel_settings(binary_weights):
    """Quantizer, constraint and initializer of a binary layer's kernel."""
    if binary_weights is True:
        return dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                    kernel_initializer="glorot_uniform")
    if binary_weights == LATENT_FREE:
        # Bop (arXiv 1906.02107 §4): no latent weights, the +-1 values are the variables
        return dict(kernel_quantizer=lq.quantizers.NoOp(precision=1), kernel_constraint=None,
                    kernel_initializer=RandomSign())
    if binary_weights is False:
        return dict(kernel_quantizer=None, kernel_constraint=None, kernel_initializer="glorot_uniform")
    raise ValueError(f"binary_weights must be True, False or {LATENT_FREE!r}, got {binary_weights!r}")


@register_model(
    "binarynet",
    paper=BNN,
    family="binarynet",
    description="BinaryNet (VGG-like, CIFAR-10) of the BNN paper, as trained with Bop "
                "(Latent Weights Do Not Exist, arXiv 1906.02107).",
    reported={"cifar10": {"top1": 91.3, "source": "Bop paper §5.2 (Bop, 500 epochs, batch 50)"}},
    input_size=(32, 32, 3),
    min_input_size=10,  # a valid 3x3 conv (-2), then three 2x2 max-pools
    default_recipe="binarynet_bop",
    extra={"trained_with": "Bop", "bop_paper": BOP.url,
           "model_overrides": "binary_weights=True|'latent_free'|False, filters, dense_units, "
                              "first_conv_padding='valid' (Bop code)|'same'"},
)
def binarynet(
    *,
    include_top: bool = True,
    weights=None,
    input_shape=None,
    input_tensor=None,
    num_classes: int = 10,
    binary_weights=True,  # True (latent, ste_sign + weight_clip) | "latent_free" (Bop) | False
    filters: int = 128,  # the paper code's hparams: filters 128, dense_units 1024
    dense_units: int = 1024,
    first_conv_padding: str = "valid",  # Bop code models/binarynet.py: no padding (32 -> 30)
    bn_momentum: float = 0.99,  # Keras BatchNormalization defaults, as the Bop code
    bn_epsilon: float = 1e-3,
):
    """BinaryNet: conv 128-128-M-256-256-M-512-512-M, FC 1024-1024-classes, BN after each layer."""
    if filters < 1 or dense_units < 1:
        raise InvalidInputError(f"filters and dense_units must be positive, got {filters}, {dense_units}.")
    inputs = zl.image_input(input_shape, input_tensor, default_shape=(32, 32, 3))

    def bn(x):
        return tf.keras.layers.BatchNormalization(scale=False, momentum=bn_momentum, epsilon=bn_epsilon)(x)

    x = inputs
    for block, width in enumerate((filters, 2 * filters, 4 * filters)):
        for conv in range(2):
            first = block == 0 and conv == 0
            x = lq.layers.QuantConv2D(
                width, 3, padding=first_conv_padding if first else "same", use_bias=False,
                input_quantizer=None if first else "ste_sign",  # the image itself is not binarized
                **kernel_settings(binary_weights),
            )(x)
            if conv == 1:
                x = tf.keras.layers.MaxPool2D(2, strides=2)(x)
            x = bn(x)
    if include_top:
        x = tf.keras.layers.Flatten()(x)
        for units in (dense_units, dense_units, num_classes):
            x = lq.layers.QuantDense(units, use_bias=False, input_quantizer="ste_sign",
                                     **kernel_settings(binary_weights))(x)
            x = bn(x)
        x = tf.keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return zl.finish_model(inputs, x, "binarynet", weights, input_tensor)


# ---------------------------------------------------------------------------------------
# XNOR-Net with Bop (§5.3): larq-zoo's XNORNet with latent-free binary kernels.
#
# larq-zoo's XNORNetFactory quantizes kernels with the XNOR scale and clips them, and puts
# L2 5e-7 on *every* kernel. With Bop the binary kernels must be +-1 variables of precision 1
# without a constraint, and carry no L2: its gradient (1e-6 * w) alone exceeds Bop's 1e-8
# threshold and would flip weights back and forth. The Bop code keeps L2 5e-7 on the real
# first conv and the last dense only; so do we. The `xnornet` entry gets a
# `binary_weights` override (True: larq-zoo's model unchanged, "latent_free": this one), so
# that `zoo train xnornet --recipe xnornet_bop` works.

XNOR_L2 = 5e-7  # Bop code hparams.regularization_quantity, on the first conv and last dense


def _latent_free_xnor_factory():
    from larq_zoo.literature.xnornet import XNORNetFactory
    from zookeeper import factory

    @factory
    class LatentFreeXNORNetFactory(XNORNetFactory):
        kernel_constraint = None
        kernel_regularizer = None  # added back below on the real layers only

        @property
        def kernel_quantizer(self):
            return lq.quantizers.NoOp(precision=1)

    return LatentFreeXNORNetFactory


def xnornet_latent_free(*, include_top=True, weights=None, input_shape=None, input_tensor=None,
                        num_classes=1000):
    """larq-zoo's XNOR-Net with +-1 binary kernels for Bop (no scale, clip or L2 on them)."""
    if weights == "imagenet":
        raise InvalidInputError(
            "larq-zoo's ImageNet XNOR-Net weights are latent (real-valued) weights; they do not load "
            "into the latent-free variant. Use binary_weights=True for them.")
    zl.check_builder_weights(weights)
    model = _latent_free_xnor_factory()(
        include_top=include_top, weights=None, input_shape=input_shape, input_tensor=input_tensor,
        num_classes=num_classes).build()
    l2 = tf.keras.regularizers.l2(XNOR_L2)
    for layer in model.layers:
        if isinstance(layer, lq.layers.QuantConv2D):
            kernel = layer.kernel
            kernel.assign(tf.where(kernel >= 0, tf.ones_like(kernel), -tf.ones_like(kernel)))
        elif type(layer) in (tf.keras.layers.Conv2D, tf.keras.layers.Dense):
            layer.kernel_regularizer = l2  # kept in the layer's config
            layer.add_loss(functools.partial(l2, layer.kernel))
    return model


def _add_latent_free_switch(name: str = "xnornet"):
    try:
        entry = MODELS.get(name)
    except UnknownNameError:  # larq-zoo entries not registered: nothing to extend
        return
    original = entry.builder
    if getattr(original, "latent_free_switch", False):
        return

    @functools.wraps(original)
    def builder(*, binary_weights=True, **kwargs):
        if binary_weights is True:
            return original(**kwargs)
        if binary_weights == LATENT_FREE:
            return xnornet_latent_free(**kwargs)
        raise ValueError(f"{name}: binary_weights must be True or {LATENT_FREE!r}, got {binary_weights!r}")

    builder.latent_free_switch = True
    entry.builder = builder
    entry.extra["model_overrides"] = "binary_weights=True (larq-zoo) | 'latent_free' (Bop, --recipe xnornet_bop)"


_add_latent_free_switch()
