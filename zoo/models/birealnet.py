"""Bi-Real Net 18/34 (BIREAL 2018, arXiv 1808.00278) and 50/101/152 (BIREAL_IJCV, arXiv 1811.01335).

Every binary conv gets its own real-valued shortcut, so the real activations
before the sign survive through the whole network. Activations are binarized
with ApproxSign (Bi-Real's piecewise-polynomial gradient), weights with the
magnitude-aware sign (per-output-channel mean |W| times sign(W)), both from
Larq. A downsampling shortcut is AvgPool 2x2 -> real 1x1 conv -> BN.

``activation`` and ``binary_weights`` switch the same graph between the
binary network and the real-valued networks (ReLU, leaky-clip, clip
activations) that the two-step recipe pre-trains first; the weights transfer
one to one. ``weight_gradient`` picks the binary kernels' gradient:
``"magnitude_aware"`` (Larq's ``magnitude_aware_sign``, the ECCV §3.3 formula
alpha * 1{|w| <= 1} * g, with ``weight_clip``; the Adam recipes) or ``"clip"``
(the released code: alpha detached, 1{|w| < 1} * g, no constraint; the SGD
recipe ``birealnet_two_step``, whose LR 0.01 was tuned on it).

The paper's ablations (BIREAL §4.2) are switches of the same builder:
``shortcut="per_two_convs"`` gives the plain binary ResNet (one shortcut around
each pair of binary convs, basic depths only), ``activation="ste_sign"`` the
straight-through sign instead of ApproxSign, ``binary_weights="sign"`` plain
sign weights instead of the magnitude-aware ones.
"""
from __future__ import annotations

import larq as lq
import tensorflow as tf

from zoo import layers as zl
from zoo.registry import register_model
from zoo.papers import BIREAL, BIREAL_IJCV


# Stage widths and repeats: BIREAL Fig./Tab. for 18/34 (one conv per block), BIREAL_IJCV for the bottlenecks.
BASIC_REPEATS = {18: (4, 4, 4, 4), 34: (6, 8, 12, 6)}
BOTTLENECK_REPEATS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _activation(name: str):
    """Input quantizer of the binary convs for a training phase."""
    if name == "approx_sign":  # binary activations with Bi-Real's gradient (BIREAL §3.2)
        return "approx_sign"
    if name == "relu":  # real-valued pre-training step 1: ReLU from scratch (BIREAL README)
        return zl.Relu()
    if name == "ste_sign":  # the straight-through sign that ApproxSign replaces (ablation)
        return "ste_sign"
    if name == "clip":  # real-valued pre-training with clip(-1, x, 1) (BIREAL README step 3)
        return zl.Clip()
    if name == "leaky_clip":  # pre-training step 2: slope 0.1 outside [-1, 1]
        return zl.Clip(slope=0.1)
    raise ValueError(f"activation must be 'approx_sign', 'ste_sign', 'relu', 'clip' or 'leaky_clip', got {name!r}")


def _kernel(weight_gradient: str):
    """Quantizer and constraint of the binary kernels for a weight-gradient form."""
    if weight_gradient == "magnitude_aware":  # ECCV §3.3: alpha * 1{|w|<=1} * g (Larq)
        return dict(kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip")
    if weight_gradient == "clip":  # the release's HardBinaryConv: 1{|w|<1} * g, no constraint
        return dict(kernel_quantizer=zl.ClipGradientMagnitudeSign(), kernel_constraint=None)
    raise ValueError(f"weight_gradient must be 'magnitude_aware' or 'clip', got {weight_gradient!r}")


class _Convs:
    """Conv factory for one network: binary or real weights / activations."""

    def __init__(self, activation, binary_weights, bn_momentum, bn_epsilon, initializer,
                 weight_gradient="magnitude_aware"):
        self.activation = activation
        self.weight_gradient = weight_gradient
        _kernel(weight_gradient)  # fails early on a bad name
        self.binary_weights = binary_weights
        self.bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
        self.initializer = initializer

    def binary(self, x, filters, kernel_size, strides=1, input_quantizer=None):
        kw = _kernel(self.weight_gradient)
        if self.binary_weights == "latent_free":
            # weights stored as +-1 and flipped by Bop (arXiv 1906.02107), no latent weights
            kw = dict(kernel_quantizer=lq.quantizers.NoOp(precision=1), kernel_constraint=None)
        elif self.binary_weights == "sign":
            # plain sign of the latent weights, without the magnitude-aware scale (ablation)
            kw = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
        elif not self.binary_weights:
            kw = dict(kernel_quantizer=None, kernel_constraint=None)
        x = zl.quant_conv(
            x, filters, kernel_size, strides,
            input_quantizer=input_quantizer or _activation(self.activation),
            kernel_initializer=self.initializer, **kw,
        )
        return zl.batch_norm(x, **self.bn)

    def shortcut(self, x, filters, strides):
        if strides > 1:
            x = tf.keras.layers.AvgPool2D(strides, strides=strides, padding="same")(x)
        x = zl.real_conv(x, filters, 1, kernel_initializer=self.initializer)
        return zl.batch_norm(x, **self.bn)


def _stem(inputs, convs: _Convs):
    # Real-valued 7x7/2 conv -> BN -> 3x3/2 max-pool, no ReLU (author's PyTorch code).
    x = zl.real_conv(inputs, 64, 7, strides=2, kernel_initializer=convs.initializer)
    x = zl.batch_norm(x, **convs.bn)
    return tf.keras.layers.MaxPool2D(3, strides=2, padding="same")(x)


SHORTCUTS = ("per_conv", "per_two_convs")


def _basic_body(x, repeats, convs: _Convs, shortcut: str = "per_conv"):
    """Bi-Real's shortcut around every binary conv, or (``per_two_convs``) the plain
    ResNet's around each pair of them; the same convs and shortcut weights either way."""
    for stage, blocks in enumerate(repeats):
        filters = 64 * 2**stage
        if shortcut == "per_conv":
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                identity = x if x.shape[-1] == filters else convs.shortcut(x, filters, strides)
                x = tf.keras.layers.add([convs.binary(x, filters, 3, strides), identity])
            continue
        for pair in range(blocks // 2):
            strides = 2 if stage > 0 and pair == 0 else 1
            identity = x if x.shape[-1] == filters else convs.shortcut(x, filters, strides)
            y = convs.binary(convs.binary(x, filters, 3, strides), filters, 3)
            x = tf.keras.layers.add([y, identity])
    return x


def _bottleneck_body(x, repeats, convs: _Convs):
    """BIREAL_IJCV bottleneck with a shortcut per conv, carrying a mid-width and a full-width stream."""
    mid_stream, full_stream = x, x
    for stage, blocks in enumerate(repeats):
        filters = 256 * 2**stage
        mid = filters // 4
        for block in range(blocks):
            first_of_net = stage == 0 and block == 0
            downsample = block == 0
            strides = 2 if stage > 0 and block == 0 else 1
            # conv1: 1x1 -> mid. The network's first one is real-valued after a leaky clip.
            if first_of_net:
                out1 = zl.real_conv(zl.Clip(slope=0.1)(full_stream), mid, 1,
                                    kernel_initializer=convs.initializer)
                out1 = zl.batch_norm(out1, **convs.bn)
            else:
                out1 = convs.binary(full_stream, mid, 1)
                identity = mid_stream
                if downsample:  # width of the mid stream changes: real 1x1 projection (no BN, BIREAL_IJCV code)
                    identity = zl.real_conv(mid_stream, mid, 1, kernel_initializer=convs.initializer)
                out1 = tf.keras.layers.add([out1, identity])
            # conv2: 3x3 mid -> mid, carries the stride; its shortcut is avg-pooled.
            identity = out1
            if strides > 1:
                identity = tf.keras.layers.AvgPool2D(2, strides=2, padding="same")(out1)
            out2 = tf.keras.layers.add([convs.binary(out1, mid, 3, strides), identity])
            # conv3: 1x1 mid -> full width; downsampling shortcut AvgPool -> 1x1 -> BN.
            identity = full_stream
            if downsample:
                identity = convs.shortcut(full_stream, filters, strides)
            out3 = tf.keras.layers.add([convs.binary(out2, filters, 1), identity])
            mid_stream, full_stream = out2, out3
    return full_stream


def birealnet(
    depth: int = 18,
    *,
    include_top: bool = True,
    weights=None,
    input_shape=None,
    input_tensor=None,
    num_classes: int = 1000,
    activation: str = "approx_sign",
    binary_weights=True,  # True | False (real, for pre-training) | "latent_free" (for Bop) | "sign"
    shortcut: str = "per_conv",  # "per_two_convs": the plain binary ResNet (ablation, 18/34 only)
    bn_momentum: float = 0.8,  # larq-zoo's Bi-Real Net (Keras); PyTorch code uses 0.9 (= 0.1 there)
    bn_epsilon: float = 1e-3,
    kernel_initializer="glorot_normal",
    weight_gradient: str = "magnitude_aware",  # | "clip": the release's (birealnet_two_step)
):
    """Build a Bi-Real Net of the given depth (18, 34, 50, 101 or 152)."""
    if depth not in BASIC_REPEATS and depth not in BOTTLENECK_REPEATS:
        raise ValueError(f"Bi-Real Net depth must be one of 18, 34, 50, 101, 152; got {depth}.")
    if shortcut not in SHORTCUTS or (shortcut != "per_conv" and depth not in BASIC_REPEATS):
        raise ValueError(f"shortcut must be one of {SHORTCUTS} ('per_two_convs' for depth 18 or "
                         f"34 only), got {shortcut!r} for depth {depth}.")
    convs = _Convs(activation, binary_weights, bn_momentum, bn_epsilon, kernel_initializer,
                   weight_gradient)
    inputs = zl.image_input(input_shape, input_tensor)
    x = _stem(inputs, convs)
    if depth in BASIC_REPEATS:
        x = _basic_body(x, BASIC_REPEATS[depth], convs, shortcut)
    else:
        x = _bottleneck_body(x, BOTTLENECK_REPEATS[depth], convs)
    if include_top:
        x = zl.classifier_head(x, num_classes)
    return zl.finish_model(inputs, x, f"birealnet{depth}", weights, input_tensor)


def _register(depth, paper, reported, aliases=()):
    def builder(**kwargs):
        return birealnet(depth, **kwargs)

    builder.__name__ = f"birealnet{depth}"
    builder.__doc__ = f"Bi-Real Net-{depth} ({paper.venue}): {'basic' if depth < 50 else 'bottleneck'} blocks, a real shortcut per binary conv."
    register_model(
        f"birealnet{depth}", aliases=aliases, paper=paper, family="birealnet",
        reported=reported, default_recipe="birealnet_adam",
    )(builder)
    return builder


# Reported ImageNet top-1/top-5: BIREAL Tab. 5 / official README (18, 34), BIREAL_IJCV (50, 152).
birealnet18 = _register(18, BIREAL, {"imagenet2012": {"top1": 56.4, "top5": 79.5}}, aliases=("birealnet",))
birealnet34 = _register(34, BIREAL, {"imagenet2012": {"top1": 62.2, "top5": 83.9}})
birealnet50 = _register(50, BIREAL_IJCV, {"imagenet2012": {"top1": 62.6, "top5": 83.9}})
birealnet101 = _register(101, BIREAL_IJCV, {})
birealnet152 = _register(152, BIREAL_IJCV, {"imagenet2012": {"top1": 64.5}})
