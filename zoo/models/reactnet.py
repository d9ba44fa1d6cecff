"""ReActNet-A/B/C and ReAct-ResNet-18 (ECCV 2020, arXiv 2003.03488).

ReActNet-A binarizes a MobileNet-V1-like layout with the depthwise 3x3 convs
replaced by full binary 3x3 convs and Bi-Real-style real-valued shortcuts
around every binary conv, including the downsampling ones: a strided block
avg-pools its shortcut, and a channel-doubling block runs two parallel binary
1x1 convs on the same input, adds the input to each and concatenates them.
Activations go through RSign (learnable per-channel threshold before the
sign, ApproxSign gradient) and RPReLU (shift -> PReLU -> shift), both from
:mod:`zoo.layers`. Weights are binarized with Larq's magnitude-aware sign
(per-output-channel mean |W| times sign(W)) under a ``weight_clip``
constraint. Layout and block: the official PyTorch code
(liuzechun/ReActNet, ``mobilenet/2_step2/reactnet.py``; issue #21 confirms it
is ReActNet-A) and, for ReAct-ResNet-18, ``resnet/2_step2/birealnet.py``.

ReActNet-B and -C make the 1x1 convs of the channel-doubling blocks
real-valued: B with 4-group convs, C with full convs (the paper;
the official repository has no code for them). Being real-valued convs, they
read the real activations (no RSign in front of them); this does not change
any cost, since a MAC with a real kernel is a FLOP either way.

``binary_weights=False`` builds the same graph with real-valued kernels and
still binary (RSign) activations: step 1 of ReActNet's two-step recipe
(``reactnet_two_step``). The weight tensors are the same, in the same order,
so step 1 initialises step 2 one to one, as the paper and AdamBNN do. The released
MobileNet code does not (its ``strict=False`` load drops the binary kernels); the
stage setting ``reset_binary_kernels=true`` reproduces that.

``padding="symmetric"`` computes what the released PyTorch networks compute (one pixel
of padding on every side of a strided 3x3 conv, three around the 7x7 stem), through
TF's "same" convs on the input turned by 180 degrees (:class:`zoo.layers.Rotate180`;
the imported kernels are turned too), so LCE still converts every binary conv natively.
``width_multiplier`` scales every width (1.0: the paper's; smaller for tests).

``activations="sign_prelu"`` is the paper's baseline of its RSign / RPReLU
ablation on the same backbone: the sign without the learnable shift (the same
ApproxSign gradient) and a per-channel PReLU (slope 0.25) without the shifts.
"""
from __future__ import annotations

import larq as lq
import tensorflow as tf

from zoo import layers as zl
from zoo.registry import register_model
from zoo.papers import REACTNET


# Output widths of the stem (entry 0) and the 13 blocks: official code's `stage_out_channel`.
WIDTHS = (32, 64, 128, 128, 256, 256) + (512,) * 6 + (1024,) * 2
# ReAct-ResNet-18 = Bi-Real-18 skeleton: 4 stages of 4 one-conv blocks (resnet/2_step2/birealnet.py).
RESNET18_REPEATS = (4, 4, 4, 4)
# How the 1x1 convs of the channel-doubling blocks are built, per variant.
DOUBLING_CONVS = {"a": "binary", "b": "real_group4", "c": "real"}


ACTIVATIONS = ("react", "sign_prelu")


class _Builder:
    """Layer factory for one network: binary or real kernels, RSign / RPReLU or their
    shift-free baselines, BN settings, init."""

    def __init__(self, binary_weights, bn_momentum, bn_epsilon, kernel_initializer,
                 activations="react"):
        if not isinstance(binary_weights, bool):
            raise ValueError(f"binary_weights must be True or False, got {binary_weights!r}.")
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}.")
        self.binary_weights = binary_weights
        self.react = activations == "react"
        self.bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
        self.initializer = kernel_initializer

    def binary_conv(self, x, filters, kernel_size, strides=1, input_quantizer=None, name=None):
        """RSign (or the given 1-bit input quantizer) -> binary conv -> BN."""
        if self.binary_weights:
            weights = dict(kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip")
        else:  # step 1: real weights, binary activations
            weights = dict(kernel_quantizer=None, kernel_constraint=None)
        x = zl.quant_conv(
            x, filters, kernel_size, strides,
            input_quantizer=input_quantizer if input_quantizer is not None else self.sign(),
            kernel_initializer=self.initializer, name=name, **weights,
        )
        return zl.batch_norm(x, name=None if name is None else f"{name}_bn", **self.bn)

    def sign(self, name=None):
        """RSign, or the plain sign with the same ApproxSign gradient (``sign_prelu``)."""
        return zl.RSign(name=name) if self.react else lq.quantizers.ApproxSign(name=name)

    def prelu(self, name=None):
        """RPReLU, or a per-channel PReLU with the same slope init (``sign_prelu``)."""
        if self.react:
            return zl.RPReLU(name=name)
        return tf.keras.layers.PReLU(alpha_initializer=tf.keras.initializers.Constant(0.25),
                                     shared_axes=[1, 2], name=name)

    def real_conv(self, x, filters, kernel_size, strides=1, groups=1, name=None):
        x = zl.real_conv(x, filters, kernel_size, strides, name=name, groups=groups,
                         kernel_initializer=self.initializer)
        return zl.batch_norm(x, name=None if name is None else f"{name}_bn", **self.bn)


def _mobilenet_block(x, filters, strides, doubling, b: _Builder, name):
    """One ReActNet-A block: binary 3x3 + shortcut, then binary 1x1(s) + shortcut."""
    channels = x.shape[-1]
    # 3x3 part: RSign -> binary 3x3 (block stride) -> BN, + x (avg-pooled when strided)
    y = b.binary_conv(x, channels, 3, strides, name=f"{name}_conv3x3")
    shortcut = x
    if strides > 1:
        shortcut = tf.keras.layers.AvgPool2D(2, strides=2, padding="same",
                                             name=f"{name}_pool")(x)
    y = tf.keras.layers.Add(name=f"{name}_add1")([y, shortcut])
    y = b.prelu(name=f"{name}_rprelu1")(y)

    # 1x1 part
    if filters == channels:
        z = b.binary_conv(y, channels, 1, name=f"{name}_conv1x1")
        z = tf.keras.layers.Add(name=f"{name}_add2")([z, y])
    elif filters == 2 * channels:
        if doubling == "binary":
            # one RSign shared by both branches (the official code's `move21`); the convs take
            # its +-1 output as is and are marked 1-bit for the cost count
            signs = b.sign(name=f"{name}_rsign2")(y)
            branches = [
                b.binary_conv(signs, channels, 1, input_quantizer=lq.quantizers.NoOp(precision=1),
                              name=f"{name}_conv1x1_{i}")
                for i in (1, 2)
            ]
        else:
            groups = 4 if doubling == "real_group4" else 1
            branches = [b.real_conv(y, channels, 1, groups=groups, name=f"{name}_conv1x1_{i}")
                        for i in (1, 2)]
        branches = [tf.keras.layers.Add(name=f"{name}_add2_{i}")([branch, y])
                    for i, branch in enumerate(branches, start=1)]
        z = tf.keras.layers.Concatenate(name=f"{name}_concat")(branches)
    else:
        raise ValueError(f"A ReActNet block maps {channels} channels to {channels} or "
                         f"{2 * channels}, not {filters}.")
    return b.prelu(name=f"{name}_rprelu2")(z)


def _scaled(width: int, width_multiplier: float) -> int:
    if not isinstance(width_multiplier, (int, float)) or not 0 < width_multiplier <= 1:
        raise ValueError(f"width_multiplier must be in (0, 1], got {width_multiplier!r}.")
    return max(1, int(round(width * width_multiplier)))


def _turn(x, padding: str, name: str):
    """Turn the maps by 180 degrees for ``padding="symmetric"`` (see the module doc)."""
    return zl.Rotate180(name=name)(x) if zl.check_padding(padding) == "symmetric" else x


def _reactnet_mobilenet(
    variant: str,
    *,
    include_top=True,
    weights=None,
    input_shape=None,
    input_tensor=None,
    num_classes=1000,
    binary_weights=True,
    bn_momentum=zl.BN_MOMENTUM,  # official PyTorch code: BN momentum 0.1 (= Keras 0.9), eps 1e-5
    bn_epsilon=zl.BN_EPSILON,
    kernel_initializer="glorot_normal",
    padding="same",
    width_multiplier=1.0,
    activations="react",  # "sign_prelu": the paper's ablation baseline
):
    b = _Builder(binary_weights, bn_momentum, bn_epsilon, kernel_initializer, activations)
    inputs = zl.image_input(input_shape, input_tensor)
    widths = [_scaled(w, width_multiplier) for w in WIDTHS]
    # stem: real-valued 3x3/2 conv -> BN, no activation (official `firstconv3x3`)
    x = b.real_conv(_turn(inputs, padding, "turn_input"), widths[0], 3, strides=2, name="stem_conv")
    for index in range(1, len(WIDTHS)):
        previous, filters = WIDTHS[index - 1], WIDTHS[index]
        # official rule: stride 2 where the width changes, except the first block (32 -> 64)
        strides = 2 if filters != previous and filters != 64 else 1
        x = _mobilenet_block(x, widths[index], strides, DOUBLING_CONVS[variant], b,
                             name=f"block{index}")
    if include_top:
        x = zl.classifier_head(x, num_classes)
    else:
        x = _turn(x, padding, "turn_features")
    return zl.finish_model(inputs, x, f"reactnet_{variant}", weights, input_tensor)


_REGISTER = dict(paper=REACTNET, family="reactnet", default_recipe="reactnet_two_step",
                 min_input_size=16)


@register_model("reactnet_a", aliases=("reactnet",),
                # 69.4% top-1: paper and official README (its released checkpoint: 69.5%)
                reported={"imagenet2012": {"top1": 69.4, "source": "ReActNet paper"}},
                **_REGISTER)
def reactnet_a(**kwargs):
    """ReActNet-A: binary MobileNet-like net with RSign/RPReLU, all 1x1 and 3x3 convs binary."""
    return _reactnet_mobilenet("a", **kwargs)


@register_model("reactnet_b",
                # 70.1% top-1: the paper's ImageNet comparison (seed notes §2.6, from a third-party summary)
                reported={"imagenet2012": {"top1": 70.1, "source": "ReActNet paper"}},
                **_REGISTER)
def reactnet_b(**kwargs):
    """ReActNet-B: ReActNet-A with real-valued 4-group 1x1 convs in the channel-doubling blocks."""
    return _reactnet_mobilenet("b", **kwargs)


@register_model("reactnet_c",
                # 71.4% top-1: the paper's ImageNet comparison (seed notes §2.6, from a third-party summary)
                reported={"imagenet2012": {"top1": 71.4, "source": "ReActNet paper"}},
                **_REGISTER)
def reactnet_c(**kwargs):
    """ReActNet-C: ReActNet-A with real-valued full 1x1 convs in the channel-doubling blocks."""
    return _reactnet_mobilenet("c", **kwargs)


@register_model("reactnet18",
                # 65.5% top-1: the paper (the official README's released model: 65.9%)
                reported={"imagenet2012": {"top1": 65.5, "source": "ReActNet paper"}},
                **_REGISTER)
def reactnet18(
    *,
    include_top=True,
    weights=None,
    input_shape=None,
    input_tensor=None,
    num_classes=1000,
    binary_weights=True,
    bn_momentum=zl.BN_MOMENTUM,
    bn_epsilon=zl.BN_EPSILON,
    kernel_initializer="glorot_normal",
    padding="same",
    width_multiplier=1.0,
    activations="react",  # "sign_prelu": the paper's ablation baseline
):
    """ReAct-ResNet-18: Bi-Real Net-18 with RSign before and RPReLU after every binary conv."""
    b = _Builder(binary_weights, bn_momentum, bn_epsilon, kernel_initializer, activations)
    inputs = zl.image_input(input_shape, input_tensor)
    # stem as Bi-Real-18: real 7x7/2 conv -> BN -> 3x3/2 max-pool, no activation
    x = b.real_conv(_turn(inputs, padding, "turn_input"), _scaled(64, width_multiplier), 7,
                    strides=2, name="stem_conv")
    x = tf.keras.layers.MaxPool2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, blocks in enumerate(RESNET18_REPEATS):
        filters = _scaled(64 * 2**stage, width_multiplier)
        for block in range(blocks):
            name = f"stage{stage + 1}_block{block + 1}"
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if strides > 1 or x.shape[-1] != filters:
                # AvgPool 2x2/2 -> real 1x1 conv -> BN (official `downsample`)
                if strides > 1:
                    shortcut = tf.keras.layers.AvgPool2D(strides, strides=strides, padding="same",
                                                         name=f"{name}_pool")(shortcut)
                shortcut = b.real_conv(shortcut, filters, 1, name=f"{name}_downsample")
            y = b.binary_conv(x, filters, 3, strides, name=f"{name}_conv3x3")
            y = tf.keras.layers.Add(name=f"{name}_add")([y, shortcut])
            x = b.prelu(name=f"{name}_rprelu")(y)
    if include_top:
        x = zl.classifier_head(x, num_classes)
    else:
        x = _turn(x, padding, "turn_features")
    return zl.finish_model(inputs, x, "reactnet18", weights, input_tensor)
