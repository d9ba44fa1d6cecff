"""Shared BNN building blocks, on top of Larq's quantizers and constraints.

Everything here is a Keras layer or a small function that adds layers to a
functional graph, so models built from it save, load and convert with LCE.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

import larq as lq
import tensorflow as tf

from zoo.errors import InvalidInputError

# Bi-Real Net / ReActNet PyTorch code uses BN momentum 0.1 (= Keras 0.9) and eps 1e-5;
# larq-zoo's Bi-Real Net uses momentum 0.8 with Keras' default epsilon.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@tf.keras.utils.register_keras_serializable(package="zoo")
class Clip(lq.quantizers.Quantizer):
    """Real-valued activation ``clip(x, -1, 1)`` (optionally leaky outside [-1, 1]).

    Used as the ``input_quantizer`` of a binary conv during Bi-Real Net's
    real-valued pre-training (ECCV'18 README: ReLU -> leaky-clip -> clip), and
    as the leaky-clip before Bi-Real-50's first real 1x1 conv (IJCV code).
    """

    precision = 32

    def __init__(self, slope: float = 0.0, **kwargs):
        self.slope = float(slope)
        super().__init__(**kwargs)


    def call(self, inputs):
        clipped = tf.clip_by_value(inputs, -1.0, 1.0)
        if self.slope:
            clipped = clipped + self.slope * (inputs - clipped)
        return clipped

    def get_config(self):
        return {**super().get_config(), "slope": self.slope}


@tf.keras.utils.register_keras_serializable(package="zoo")
class Relu(lq.quantizers.Quantizer):
    """Real-valued ``max(x, 0)`` as a conv's input quantizer: phase 1 of Bi-Real Net's
    real-valued pre-training (ECCV'18 README: ReLU from scratch)."""

    precision = 32

    def call(self, inputs):
        return tf.nn.relu(inputs)


@tf.keras.utils.register_keras_serializable(package="zoo")
class ClipGradientMagnitudeSign(lq.quantizers.Quantizer):
    """Kernel quantizer of Bi-Real Net's released code (HardBinaryConv): forward
    ``alpha * sign(w)`` with ``alpha`` the per-output-channel mean |w|; backward
    ``1{|w| < 1} * g`` (alpha detached, the gradient of clamp(w, -1, 1)).

    Larq's ``magnitude_aware_sign`` (the ECCV §3.3 formula) back-propagates
    ``alpha * 1{|w| <= 1} * g`` instead, a step alpha times smaller under SGD."""

    precision = 1

    def call(self, inputs):
        axes = list(range(len(inputs.shape) - 1))  # all but the output channels

        @tf.custom_gradient
        def quantize(w):
            scale = tf.reduce_mean(tf.abs(w), axis=axes)
            def grad(dy):
                return dy * tf.cast(tf.abs(w) < 1.0, dy.dtype)
            return scale * lq.math.sign(w), grad

        return quantize(inputs)


def check_input_shape(shape: Sequence[Optional[int]], min_size: int = 1, multiple: int = 1) -> tuple:
    """``shape`` as ``(height, width, channels)``, or one clear error: not three sides, no
    channels, sides below ``min_size`` (what the network downsamples by) or not divisible
    by ``multiple`` (where the network needs it). ``zoo.load`` checks with the entry's
    ``min_input_size`` and ``input_multiple``, which live in its registry record only."""
    shape = tuple(shape)
    if len(shape) != 3:
        raise InvalidInputError(
            f"input_shape must be (height, width, channels), got {shape}."
        )
    height, width, channels = shape
    if channels is None or channels < 1:
        raise InvalidInputError(f"input_shape needs a known number of channels, got {shape}.")
    for side in (height, width):
        if side is not None and side < min_size:
            raise InvalidInputError(
                f"input_shape {shape} is too small: this model needs at least "
                f"{min_size}x{min_size} pixels. Resize the images (the data pipeline does "
                f"this with --image-size)."
            )
        if side is not None and side % multiple:
            fit = -(-max(side, min_size) // multiple) * multiple
            raise InvalidInputError(
                f"input_shape {shape}: this model needs sizes divisible by {multiple} "
                f"(e.g. {fit}x{fit}; the data pipeline pads with --image-size {fit})."
            )
    return shape


def image_input(
    input_shape: Optional[Sequence[Optional[int]]],
    input_tensor=None,
    default_shape: Sequence[int] = (224, 224, 3),
):
    """Return the ``tf.keras.Input`` of a model, with keras.applications' rules:
    ``input_tensor`` wins over ``input_shape``; a plain tensor is wrapped."""
    if input_tensor is not None:
        if not tf.keras.backend.is_keras_tensor(input_tensor):
            input_tensor = tf.keras.layers.Input(tensor=input_tensor)
        check_input_shape(input_tensor.shape[1:])
        return input_tensor
    shape = check_input_shape(default_shape if input_shape is None else input_shape)
    return tf.keras.layers.Input(shape=shape)


def batch_norm(x, momentum: float = BN_MOMENTUM, epsilon: float = BN_EPSILON, name=None, **kwargs):
    return tf.keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name, **kwargs)(x)


def quant_conv(
    x,
    filters: int,
    kernel_size: int,
    strides: int = 1,
    *,
    input_quantizer="approx_sign",
    kernel_quantizer="magnitude_aware_sign",
    kernel_constraint="weight_clip",
    kernel_initializer="glorot_normal",
    groups: int = 1,
    pad_values: float = 0.0,
    name=None,
):
    """A (possibly) binary conv: Larq's QuantConv2D, no bias, 'same' padding."""
    return lq.layers.QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        pad_values=pad_values,
        groups=groups,
        input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer,
        kernel_constraint=kernel_constraint,
        kernel_initializer=kernel_initializer,
        use_bias=False,
        name=name,
    )(x)


def real_conv(x, filters: int, kernel_size: int, strides: int = 1, name=None, **kwargs):
    kwargs.setdefault("kernel_initializer", "glorot_normal")
    return tf.keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name, **kwargs
    )(x)


def classifier_head(x, num_classes: int, name: str = "predictions"):
    """Global average pool -> Dense -> softmax (float32, for mixed precision).

    AvgPool over the full map + Flatten is what larq-zoo uses: it converts to a
    faster op in LCE than GlobalAveragePooling2D.
    """
    pool = x.shape[1:3]
    if None in pool:
        x = tf.keras.layers.GlobalAveragePooling2D()(x)
    else:
        x = tf.keras.layers.AveragePooling2D(pool_size=tuple(pool))(x)
        x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(num_classes, name=name)(x)
    return tf.keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)


def check_builder_weights(weights, allowed=(None,)) -> None:
    """Builders never touch files: ``zoo.load`` resolves, verifies and loads weights."""
    if weights not in allowed:
        raise InvalidInputError(
            f"A builder takes no weights ({weights!r}): use zoo.load(NAME, weights=...), which "
            f"resolves a tag, file or run directory, verifies it and loads it.")


def finish_model(inputs, outputs, name: str, weights=None, input_tensor=None):
    """Wrap a functional graph into a Model (``weights`` must be None: see
    :func:`check_builder_weights`)."""
    check_builder_weights(weights)
    if input_tensor is not None:
        inputs = tf.keras.utils.get_source_inputs(input_tensor)
    return tf.keras.Model(inputs=inputs, outputs=outputs, name=name)


# --- ReActNet (arXiv 2003.03488): RSign and RPReLU -------------------------------------


@tf.custom_gradient
def _sign_with_approx_sign_grad(z):
    """sign(z) with 0 -> +1 (Larq's convention); gradient 2 - 2|z| on |z| < 1, else 0.

    The gradient is the derivative of Bi-Real Net's piecewise-quadratic ApproxSign
    (ECCV'18 §3.2), which ReActNet's ``BinaryActivation`` uses too.
    """

    def grad(dy):
        abs_z = tf.math.abs(z)
        return tf.where(abs_z < 1.0, dy * (2.0 - 2.0 * abs_z), tf.zeros_like(dy))

    return lq.math.sign(z), grad


@tf.keras.utils.register_keras_serializable(package="zoo")
class RSign(lq.quantizers.Quantizer):
    """ReActNet's RSign: ``sign(x + b)`` with a learnable per-channel shift ``b`` (init 0).

    Forward: +1 where ``x + b >= 0``, else -1. Backward: ApproxSign's gradient
    ``2 - 2|x + b|`` (0 outside ``|x + b| < 1``) with respect to both ``x`` and ``b``
    (summed over all but the channel axis for ``b``). The paper writes the threshold
    as ``alpha_c``, i.e. ``b = -alpha_c``; the official code's ``LearnableBias``.

    A Larq quantizer with ``precision = 1``: pass it as ``input_quantizer=RSign()`` of a
    ``QuantConv2D`` and Larq's profile (and :func:`zoo.costs.model_costs`) counts that
    conv's MACs as binary. The shift is stored as the weight named ``bias`` (so the
    profile does not mistake it for a kernel); it is built on the first call from the
    last axis of the input. It also works as a standalone layer.
    """

    precision = 1

    def __init__(self, bias_initializer="zeros", bias_regularizer=None, bias_constraint=None,
                 **kwargs):
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.bias_regularizer = tf.keras.regularizers.get(bias_regularizer)
        self.bias_constraint = tf.keras.constraints.get(bias_constraint)
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if channels is None:
            raise ValueError(f"RSign needs a known last (channel) dimension, got {input_shape}.")
        self.bias = self.add_weight(
            name="bias", shape=(int(channels),), initializer=self.bias_initializer,
            regularizer=self.bias_regularizer, constraint=self.bias_constraint, trainable=True,
        )
        super().build(input_shape)

    def call(self, inputs):
        return _sign_with_approx_sign_grad(inputs + tf.cast(self.bias, inputs.dtype))

    def get_config(self):
        return {
            **super().get_config(),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "bias_regularizer": tf.keras.regularizers.serialize(self.bias_regularizer),
            "bias_constraint": tf.keras.constraints.serialize(self.bias_constraint),
        }


@tf.keras.utils.register_keras_serializable(package="zoo")
class RPReLU(tf.keras.layers.Layer):
    """ReActNet's RPReLU: shift -> per-channel PReLU -> shift.

    ``y = PReLU(x + b_in) + b_out`` with ``PReLU(z) = z`` for ``z > 0`` and
    ``alpha * z`` otherwise; ``b_in``, ``alpha`` and ``b_out`` have one value per
    channel (last axis), shared over all other axes. Paper form:
    ``f(x) = x - gamma + zeta`` if ``x > gamma`` else ``beta (x - gamma) + zeta``,
    i.e. ``gamma = -b_in``, ``beta = alpha``, ``zeta = b_out``. Inits follow the
    official PyTorch code: shifts 0, slope 0.25 (``nn.PReLU``'s default).
    """

    def __init__(self, alpha_initializer=0.25, bias_initializer="zeros", alpha_regularizer=None,
                 alpha_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha_initializer, (int, float)):
            alpha_initializer = tf.keras.initializers.Constant(float(alpha_initializer))
        self.alpha_initializer = tf.keras.initializers.get(alpha_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.alpha_regularizer = tf.keras.regularizers.get(alpha_regularizer)
        self.alpha_constraint = tf.keras.constraints.get(alpha_constraint)

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if channels is None:
            raise ValueError(f"RPReLU needs a known last (channel) dimension, got {input_shape}.")
        shape = (int(channels),)
        self.bias_in = self.add_weight(name="bias_in", shape=shape,
                                       initializer=self.bias_initializer, trainable=True)
        self.alpha = self.add_weight(name="alpha", shape=shape, initializer=self.alpha_initializer,
                                     regularizer=self.alpha_regularizer,
                                     constraint=self.alpha_constraint, trainable=True)
        self.bias_out = self.add_weight(name="bias_out", shape=shape,
                                        initializer=self.bias_initializer, trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        z = inputs + tf.cast(self.bias_in, inputs.dtype)
        alpha = tf.cast(self.alpha, inputs.dtype)
        y = tf.nn.relu(z) - alpha * tf.nn.relu(-z)
        return y + tf.cast(self.bias_out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "alpha_initializer": tf.keras.initializers.serialize(self.alpha_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "alpha_regularizer": tf.keras.regularizers.serialize(self.alpha_regularizer),
            "alpha_constraint": tf.keras.constraints.serialize(self.alpha_constraint),
        }


# Larq's quantizer lookup falls back to the bare class name when a model is loaded from a
# full-model h5 file (legacy deserialization ignores the "zoo>" registered name), so the
# zoo quantizers used as QuantConv2D input quantizers are also known under that name.
for _quantizer_cls in (Clip, RSign, Relu, ClipGradientMagnitudeSign):
    tf.keras.utils.get_custom_objects().setdefault(_quantizer_cls.__name__, _quantizer_cls)
del _quantizer_cls


def same_conv_output_shape(input_shape, strides: int, filters: int) -> tf.TensorShape:
    """Output shape of a 'same'-padded conv with ``strides`` (NHWC): ceil(size / strides)."""
    shape = tf.TensorShape(input_shape).as_list()
    spatial = [None if s is None else -(-s // strides) for s in shape[1:3]]
    return tf.TensorShape([shape[0], *spatial, filters])


# --- PyTorch's symmetric padding on top of TF's "same" graph ------------------------------


@tf.keras.utils.register_keras_serializable(package="zoo")
class Rotate180(tf.keras.layers.Layer):
    """Turn NHWC feature maps by 180 degrees (reverse height and width).

    PyTorch pads a 3x3/2 conv by one pixel on every side, so on an even input it reads the
    padding at the top/left; TF's "same" pads only the bottom/right. A network whose input
    is turned by 180 degrees and whose kernels are turned too computes, with TF's padding,
    the turned feature maps of the PyTorch network (stride-1 convs, 2x2 average pools and
    the global pool are unaffected). The binary convs stay native "same" convs, which LCE
    converts to its binary kernels; the model turns its input here (and its no-top
    features back)."""

    def call(self, inputs):
        return tf.reverse(inputs, axis=[1, 2])

    def compute_output_shape(self, input_shape):
        return input_shape


PADDINGS = ("same", "symmetric")


def check_padding(padding: str) -> str:
    """``"same"`` (TF's, bottom/right at stride 2) or ``"symmetric"`` (PyTorch's releases)."""
    if padding not in PADDINGS:
        raise InvalidInputError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}.")
    return padding


def reset_binary_kernels(model) -> int:
    """Draw every binary (quantized) conv/dense kernel of ``model`` afresh from its
    initializer; other weights stay. Returns how many kernels were reset."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDense)) and layer.kernel_quantizer is not None:
            layer.kernel.assign(layer.kernel_initializer(layer.kernel.shape, dtype=layer.kernel.dtype))
            count += 1
    return count


def batchnorm_layers(model) -> List[Any]:
    """Every Keras BatchNormalization layer in ``model``, nested ones included."""
    found, ids = [], set()
    for module in [model, *model.submodules]:
        if isinstance(module, tf.keras.layers.BatchNormalization) and id(module) not in ids:
            ids.add(id(module))
            found.append(module)
    return found


def _images(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def recalibrate_batchnorm(model, dataset, batches: int) -> None:
    """Reset every BN layer's moving statistics and re-estimate them on training batches.

    SPOS §3.4: the supernet's BN statistics do not fit a single path, so before a
    candidate is scored they are recomputed; SPOS's retraining ends with such a pass
    over one epoch (``Stage.bn_statistics_pass``). Each of the first ``batches`` batches
    of ``dataset`` (``(images, labels)`` or images) runs through the model in
    training mode; afterwards every BN layer's moving mean / variance is the plain
    average over those batches of the per-batch mean / variance its training mode
    computes (a cumulative average, PyTorch's ``momentum=None``), independent of the
    previous moving statistics. The forward function is traced once per model; a
    model whose path lives in variables (a supernet) serves every path with it.
    """
    if batches < 1:
        raise InvalidInputError(f"BN recalibration needs at least one batch, got {batches}.")
    layers = batchnorm_layers(model)
    if not layers:
        return
    step = getattr(model, "_zoo_recalibration_step", None)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # each training-mode call writes that batch's statistics
    try:
        if step is None:
            step = tf.function(lambda x: model(x, training=True))
            model._zoo_recalibration_step = step
        sums = [[np.zeros(layer.moving_mean.shape, np.float64),
                 np.zeros(layer.moving_variance.shape, np.float64)] for layer in layers]
        count = 0
        for batch in dataset.take(int(batches)):
            step(_images(batch))
            for total, layer in zip(sums, layers):
                total[0] += layer.moving_mean.numpy()
                total[1] += layer.moving_variance.numpy()
            count += 1
        if count == 0:
            raise InvalidInputError("BN recalibration got an empty dataset.")
        for total, layer in zip(sums, layers):
            layer.moving_mean.assign((total[0] / count).astype(layer.moving_mean.dtype.as_numpy_dtype))
            layer.moving_variance.assign(
                (total[1] / count).astype(layer.moving_variance.dtype.as_numpy_dtype))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
