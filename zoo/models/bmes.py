"""Binary MobileNet with searched group convolutions (CVPR 2020, arXiv 2005.06305).

"Binarizing MobileNet via Evolution-based Searching" (Phan et al.) replaces
each 3x3 depthwise conv of a binary MobileNet by a binary *group* conv and
searches the number of groups per layer: a binary depthwise filter sees one
channel and can only produce a handful of integer outputs, a full binary conv
is expensive; a group conv sits in between. There is no official code; this
module follows the paper's three steps with ReActNet-A's binary MobileNet
(:mod:`zoo.models.reactnet`: RSign, RPReLU, real shortcuts around every binary
conv, two binary 1x1 convs in the channel-doubling blocks) as the backbone.

Group-choice set of a 3x3 conv with ``C`` input (= output) channels: every
power of two that divides ``C`` (1, 2, 4, ..., 32, ...) plus ``C`` itself
(the depthwise conv); at width 1.0 that is {1, 2, 4, ..., C}, e.g. 7 choices
for 64 channels, 11 for 1024. Group ``g`` means ``C / g`` input channels per
output channel, i.e. ``H * W * 9 * C * C / g`` binary MACs.

Entries:

- ``bmes``: the stand-alone searched network, ``arch`` = the groups of the 13
  blocks' 3x3 convs joined by ``-`` (``"1-2-4-..."``), prefixed with the width
  when it is not 1.0 (``"0.25x:1-2-4-..."``); each 3x3 conv is a real Larq
  ``QuantConv2D(groups=g)``. Default: groups 1 everywhere (ReActNet-A).
- ``bmes_supernet``: the one-shot supernet of step 1. Each 3x3 conv is a
  :class:`GroupChoiceConv2D`: one full ``3x3xCxC`` kernel multiplied by the
  block-diagonal mask of the current group choice (held in a non-trainable
  variable, so one traced graph serves every architecture). A masked full conv
  equals the grouped conv whose kernel is the mask's diagonal blocks
  (``tests/test_bmes.py`` checks it against ``Conv2D(groups=g)``), and the
  weights of a searched architecture can be copied out of the supernet with
  :func:`supernet_to_standalone`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import larq as lq
import numpy as np
import tensorflow as tf

from zoo import layers as zl
from zoo.errors import InvalidInputError
from zoo.models import _arch
from zoo.models.reactnet import WIDTHS as REACTNET_WIDTHS
from zoo.papers import BMES
from zoo.registry import register_model

NUM_BLOCKS = len(REACTNET_WIDTHS) - 1  # 13 blocks, each with one searched 3x3 conv


def stage_widths(width: float = 1.0) -> Tuple[int, ...]:
    """Stem and block output widths: ReActNet-A's (32, 64, ..., 1024) times ``width``.

    The stem width is rounded and every later width is the same multiple of it
    as in ReActNet-A, so the channel-doubling blocks stay exact doublings."""
    if not width or width <= 0:
        raise InvalidInputError(f"width must be positive, got {width!r}.")
    base = max(1, int(round(REACTNET_WIDTHS[0] * float(width))))
    return tuple(base * w // REACTNET_WIDTHS[0] for w in REACTNET_WIDTHS)


def block_strides() -> Tuple[int, ...]:
    """Stride of each block (ReActNet-A: 2 where the width changes, except 32 -> 64)."""
    strides = []
    for index in range(1, len(REACTNET_WIDTHS)):
        previous, filters = REACTNET_WIDTHS[index - 1], REACTNET_WIDTHS[index]
        strides.append(2 if filters != previous and filters != 64 else 1)
    return tuple(strides)


def group_choices(channels: int) -> Tuple[int, ...]:
    """The searched group counts of a 3x3 conv on ``channels`` channels (see module doc)."""
    choices = {channels}
    power = 1
    while power <= channels:
        if channels % power == 0:
            choices.add(power)
        power *= 2
    return tuple(sorted(choices))


def layer_channels(width: float = 1.0) -> Tuple[int, ...]:
    """Channels of the 13 searched 3x3 convs (each block's input width)."""
    return stage_widths(width)[:-1]


def encode_arch(groups: Sequence[int], width: float = 1.0) -> str:
    """``"1-2-4-..."``; at another width than 1.0 prefixed with it: ``"0.25x:1-2-4-..."``
    (so that ``zoo train bmes --arch STRING`` rebuilds it alone; split off again by
    :func:`zoo.models._arch.split_width`)."""
    return _arch.format_arch([groups], width, width_style="prefix")


def parse_arch(arch, width: float = 1.0) -> Tuple[int, ...]:
    """Groups per searched layer from an architecture string (or a sequence) at ``width``
    (the width prefix, if any, already split off by :func:`zoo.models._arch.split_width`).

    Raises :class:`InvalidInputError` with the allowed choices on a bad string."""
    channels = layer_channels(width)
    if arch is None:
        return (1,) * NUM_BLOCKS
    if isinstance(arch, str):
        (groups,), _ = _arch.parse_arch(
            arch, what="bmes architecture",
            expected=f"{NUM_BLOCKS} group counts joined by '-', e.g. "
                     f"{encode_arch([1] * NUM_BLOCKS)!r} (from `zoo search bmes`)")
    else:
        groups = tuple(int(g) for g in arch)
    if len(groups) != NUM_BLOCKS:
        raise InvalidInputError(
            f"Bad bmes architecture {arch!r}: {len(groups)} group counts, expected {NUM_BLOCKS}.")
    for index, (g, c) in enumerate(zip(groups, channels)):
        if g not in group_choices(c):
            raise InvalidInputError(
                f"Bad bmes architecture {arch!r}: layer {index + 1} has {c} channels at width "
                f"{width}; its groups must be one of {list(group_choices(c))}, not {g}.")
    return groups


def block_diagonal_mask(in_channels: int, out_channels: int, groups):
    """``(in, out)`` 0/1 mask of a grouped conv: input ``i`` feeds output ``o`` iff both lie
    in the same group. ``groups`` may be a tensor (the supernet's current choice)."""
    groups = tf.cast(groups, tf.int32)
    in_group = tf.range(in_channels) // (in_channels // groups)
    out_group = tf.range(out_channels) // (out_channels // groups)
    return tf.cast(tf.equal(in_group[:, None], out_group[None, :]), tf.float32)


def grouped_kernel_from_full(full_kernel: np.ndarray, groups: int) -> np.ndarray:
    """The ``(k, k, in / g, out)`` kernel of ``Conv2D(groups=g)`` that a masked full
    ``(k, k, in, out)`` kernel computes: the diagonal blocks of the full kernel."""
    k1, k2, cin, cout = full_kernel.shape
    per_in, per_out = cin // groups, cout // groups
    out = np.empty((k1, k2, per_in, cout), full_kernel.dtype)
    for g in range(groups):
        out[:, :, :, g * per_out:(g + 1) * per_out] = \
            full_kernel[:, :, g * per_in:(g + 1) * per_in, g * per_out:(g + 1) * per_out]
    return out


@tf.keras.utils.register_keras_serializable(package="zoo")
class GroupChoiceConv2D(tf.keras.layers.Layer):
    """A binary 3x3 conv whose group count is chosen at run time (supernet layer).

    Holds one full ``(k, k, C, C)`` kernel; the forward pass multiplies it by
    :func:`block_diagonal_mask` of ``choices[choice]`` so that the conv computes
    exactly the grouped conv. The input goes through RSign; with
    ``binary_weights`` the kernel is binarized as Larq's magnitude-aware sign,
    the per-output-channel scale being the mean ``|W|`` over that output's
    group only (what a real grouped kernel would give). ``choice`` is a
    non-trainable int variable set by :func:`set_groups`.
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1,
                 choices: Sequence[int] = (1,), binary_weights: bool = True,
                 kernel_initializer="glorot_normal", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.choices = tuple(int(c) for c in choices)
        self.binary_weights = bool(binary_weights)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.input_quantizer = zl.RSign(name="rsign")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        for g in self.choices:
            if channels % g or self.filters % g:
                raise ValueError(f"{g} groups do not divide {channels} -> {self.filters} channels.")
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
            constraint=lq.constraints.WeightClip(1.0) if self.binary_weights else None,
            trainable=True)
        self.choice = self.add_weight(name="choice", shape=(), dtype=tf.int32,
                                      initializer="zeros", trainable=False)
        self.input_quantizer.build(input_shape)
        super().build(input_shape)

    def current_groups(self):
        return tf.gather(tf.constant(self.choices, tf.int32), self.choice)

    def effective_kernel(self):
        """The kernel the conv uses: masked (and binarized) full kernel."""
        mask = block_diagonal_mask(self.kernel.shape[2], self.filters, self.current_groups())
        kernel = tf.cast(self.kernel, tf.float32)
        if self.binary_weights:
            scale = tf.stop_gradient(
                tf.reduce_sum(tf.abs(kernel) * mask, axis=(0, 1, 2))
                / (self.kernel_size ** 2 * tf.reduce_sum(mask, axis=0)))
            kernel = scale * lq.quantizers.ste_sign(kernel)
        return kernel * mask

    def call(self, inputs):
        x = self.input_quantizer(inputs)
        kernel = tf.cast(self.effective_kernel(), x.dtype)
        return tf.nn.conv2d(x, kernel, strides=self.strides, padding="SAME")

    def compute_output_shape(self, input_shape):
        return zl.same_conv_output_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "choices": list(self.choices),
                "binary_weights": self.binary_weights,
                "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer)}


def choice_layers(model) -> List[GroupChoiceConv2D]:
    """The searched layers of a supernet, in block order."""
    found = [l for l in model.layers if isinstance(l, GroupChoiceConv2D)]
    if len(found) != NUM_BLOCKS:
        raise InvalidInputError(f"{model.name} is not a bmes supernet ({len(found)} choice layers).")
    return found


def set_groups(model, groups: Sequence[int]) -> None:
    """Select the group count of every searched layer of a supernet."""
    layers = choice_layers(model)
    if len(groups) != len(layers):
        raise InvalidInputError(f"Expected {len(layers)} group counts, got {len(groups)}.")
    for layer, g in zip(layers, groups):
        if int(g) not in layer.choices:
            raise InvalidInputError(f"{layer.name}: {g} groups is not one of {list(layer.choices)}.")
        layer.choice.assign(layer.choices.index(int(g)))


def _binary_conv(x, filters, kernel_size, strides, binary_weights, kernel_initializer, groups=1,
                 input_quantizer=None, name=None):
    """RSign (or the given 1-bit quantizer) -> binary conv (Larq) -> BN."""
    weights = (dict(kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip")
               if binary_weights else dict(kernel_quantizer=None, kernel_constraint=None))
    x = zl.quant_conv(x, filters, kernel_size, strides, groups=groups,
                      input_quantizer=input_quantizer if input_quantizer is not None else zl.RSign(),
                      kernel_initializer=kernel_initializer, name=name, **weights)
    return zl.batch_norm(x, name=None if name is None else f"{name}_bn")


def _block(x, filters, strides, conv3x3, binary_weights, kernel_initializer, name):
    """ReActNet-A block with a pluggable 3x3 conv: 3x3 + shortcut, then 1x1(s) + shortcut."""
    channels = x.shape[-1]
    y = conv3x3(x)
    shortcut = x
    if strides > 1:
        shortcut = tf.keras.layers.AvgPool2D(2, strides=2, padding="same", name=f"{name}_pool")(x)
    y = tf.keras.layers.Add(name=f"{name}_add1")([y, shortcut])
    y = zl.RPReLU(name=f"{name}_rprelu1")(y)
    if filters == channels:
        z = _binary_conv(y, channels, 1, 1, binary_weights, kernel_initializer, name=f"{name}_conv1x1")
        z = tf.keras.layers.Add(name=f"{name}_add2")([z, y])
    else:  # channel doubling: two binary 1x1 convs on one RSign, each + y, concatenated
        signs = zl.RSign(name=f"{name}_rsign2")(y)
        branches = [
            _binary_conv(signs, channels, 1, 1, binary_weights, kernel_initializer,
                         input_quantizer=lq.quantizers.NoOp(precision=1), name=f"{name}_conv1x1_{i}")
            for i in (1, 2)]
        branches = [tf.keras.layers.Add(name=f"{name}_add2_{i}")([b, y])
                    for i, b in enumerate(branches, start=1)]
        z = tf.keras.layers.Concatenate(name=f"{name}_concat")(branches)
    return zl.RPReLU(name=f"{name}_rprelu2")(z)


def _network(name, make_conv3x3, *, width, include_top, weights, input_shape, input_tensor,
             num_classes, binary_weights, kernel_initializer):
    widths = stage_widths(width)
    inputs = zl.image_input(input_shape, input_tensor)
    # stem: real 3x3/2 conv -> BN (ReActNet-A's `firstconv3x3`)
    x = zl.real_conv(inputs, widths[0], 3, strides=2, name="stem_conv",
                     kernel_initializer=kernel_initializer)
    x = zl.batch_norm(x, name="stem_conv_bn")
    for index, strides in enumerate(block_strides()):
        block = f"block{index + 1}"
        conv3x3 = make_conv3x3(index, strides, f"{block}_conv3x3")
        x = _block(x, widths[index + 1], strides, conv3x3, binary_weights, kernel_initializer, block)
    if include_top:
        x = zl.classifier_head(x, num_classes)
    return zl.finish_model(inputs, x, name, weights, input_tensor)


# default recipe: `bmes_two_step` in zoo/training/recipes.py (ReActNet's two steps)
_REGISTER = dict(paper=BMES, family="bmes", default_recipe="bmes_two_step", min_input_size=16)


@register_model("bmes", **_REGISTER)
def bmes(*, arch: Optional[str] = None, width: Optional[float] = None, include_top=True,
         weights=None, input_shape=None, input_tensor=None, num_classes=1000, binary_weights=True,
         kernel_initializer="glorot_normal"):
    """Binary MobileNet with searched group convs (``arch`` from `zoo search bmes`)."""
    arch, width = _arch.split_width(arch, width)
    groups = parse_arch(arch, width)

    def make_conv3x3(index, strides, name):
        def conv(x):
            return _binary_conv(x, x.shape[-1], 3, strides, binary_weights, kernel_initializer,
                                groups=groups[index], name=name)
        return conv

    # width 1.0: ReActNet-A's widths, the paper's MobileNet-V1 base
    return _network("bmes", make_conv3x3, width=width, include_top=include_top, weights=weights,
                    input_shape=input_shape, input_tensor=input_tensor, num_classes=num_classes,
                    binary_weights=binary_weights, kernel_initializer=kernel_initializer)


# a training vehicle: its masked convs are not Larq layers, so model_costs does not count them
@register_model("bmes_supernet", extra={"supernet": True}, **_REGISTER)
def bmes_supernet(*, width: float = 1.0, include_top=True, weights=None, input_shape=None,
                  input_tensor=None, num_classes=1000, binary_weights=True,
                  kernel_initializer="glorot_normal"):
    """One-shot supernet of bmes: every 3x3 conv a masked full binary conv, groups chosen at run time."""
    channels = layer_channels(width)

    def make_conv3x3(index, strides, name):
        def conv(x):
            y = GroupChoiceConv2D(channels[index], 3, strides, choices=group_choices(channels[index]),
                                  binary_weights=binary_weights,
                                  kernel_initializer=kernel_initializer, name=name)(x)
            return zl.batch_norm(y, name=f"{name}_bn")
        return conv

    return _network("bmes_supernet", make_conv3x3, width=width, include_top=include_top,
                    weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                    num_classes=num_classes, binary_weights=binary_weights,
                    kernel_initializer=kernel_initializer)


def supernet_to_standalone(supernet, standalone, groups: Sequence[int]) -> None:
    """Copy a supernet's weights into the stand-alone ``bmes`` model of ``groups``
    (same width): every layer one to one, each searched kernel reduced to its
    diagonal blocks. Used to score a candidate with inherited weights."""
    choice = {l.name: l for l in choice_layers(supernet)}
    plain = {l.name: l for l in supernet.layers}
    index = 0
    for layer in standalone.layers:
        if not layer.weights:
            continue
        if layer.name in choice:
            source = choice[layer.name]
            kernel = grouped_kernel_from_full(source.kernel.numpy(), int(groups[index]))
            layer.set_weights([kernel, source.input_quantizer.bias.numpy()])
            index += 1
            continue
        if layer.name not in plain:
            raise InvalidInputError(f"Supernet has no layer {layer.name}: widths differ?")
        layer.set_weights(plain[layer.name].get_weights())
