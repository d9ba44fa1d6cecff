"""MetaPruning for MobileNetV1 and V2 (ICCV 2019, arXiv 1903.10258).

A PruningNet generates the weights of any pruned MobileNet: for every conv a
small two-layer FC net maps the *network encoding vector* (the width ratios
the conv depends on) to the conv's full (maximum-width) kernel, which is then
cropped to the sampled widths. Trained with stochastic structure sampling (a
new random encoding every step), it scores pruned structures during an
evolutionary search without fine-tuning; the searched structure is then
trained from scratch as a plain MobileNet.

Genes and the channel counts they give
--------------------------------------
A gene is a width ratio in 0.10, 0.13, ..., 1.00 (31 choices, the paper's
step of 0.03), written in the architecture string as a percent: ``"10"`` to
``"100"``, genes joined by ``-``, prefixed with the base width when it is not
1.0 (``"0.25x:49-100-..."``). A slot (a feature-map width) of base width
``B`` with ratio ``p`` percent has ``channels_for(B, p) = int(B * (p / 100))``
channels (floor, as the official code's ``int(base * scale)``). :func:`network_spec` is the single description of a network (its
slots, which gene each slot reads, its convs) used by the PruningNet, the
pruned model, the FLOPs count and the weight copy; ``tests/test_metapruning.py``
checks that they agree (the official MobileNetV1 code maps the evaluation
model's layer ``i`` to gene ``i - 1`` but the PruningNet's to gene ``i``).

- MobileNetV1: 14 slots (stem and 13 blocks), genes = slots 0-12 (13 genes),
  the last block's 1024 channels are not pruned (official code).
  Generators: FC 2 -> 32 -> kernel, encoding (in ratio, out ratio) of the
  block, one for the depthwise and one for the pointwise conv; the stem's
  encoding is its output ratio.
- MobileNetV2: base widths x1.4 in the paper's reference (at ``width=1.4`` the
  official table 44, 22, 33, 44, 88, 132, 224, 448); here ``width`` (default
  1.0). Slots: stem, the 7 stage outputs (blocks of a stage joined by residual
  adds share one gene), the mid width of each of the 17 blocks, the first one
  (t=1) included: as in the official code it keeps a 1x1 conv of its own width
  in front of its depthwise conv. 25 genes; the final 1x1 conv's 1280 channels
  are not pruned. Generators: FC 3 -> 64 -> kernel with encoding (mid, in, out)
  ratios of the block, one per conv; FC 1 -> 32 -> kernel for the stem and the
  final 1x1 conv (official mobilenet_v2.py).

Deviations, all documented: one shared BatchNorm per layer (recalibrated
for each candidate before scoring, as SPOS does) instead of the official one
BN per ratio; inactive channels are not computed away (a cropped kernel is
zero-padded back to the maximum shape so the graph stays static; the outputs
on the active channels are exactly the cropped conv's, and every consumer
crops its input channels, so inactive channels never reach the output).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from zoo import layers as zl
from zoo.errors import InvalidInputError
from zoo.models import _arch
from zoo.papers import METAPRUNING
from zoo.registry import register_model

# §4.1 / official code: ratios 0.10 to 1.00 in steps of 0.03, i.e. 31 choices per gene
RATIO_PERCENTS: Tuple[int, ...] = tuple(range(10, 101, 3))
FULL = 100  # ratio of an unpruned slot

V1_BASE = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
V1_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)  # the 13 depthwise convs
V1_HIDDEN = 32  # official mobilenet_v1.py: FC 2 -> 32 -> weights
# MobileNetV2 (expansion t, output c, repeats n, first stride s), stem 32, final 1x1 1280
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))
V2_LAST = 1280
V2_HIDDEN = 64  # official mobilenet_v2.py: FC 3 -> 64 -> weights (bottlenecks)
V2_END_HIDDEN = 32  # official mobilenet_v2.py: FC 1 -> 32 -> weights (stem, final 1x1 conv)
# official mobilenet_v2.py's stage_out_channel at the paper's width 1.4: 64 x 1.4 and 96 x 1.4
# are 88 and 132 there, not int(89.6) and int(134.4)
V2_WIDTH_TABLES = {1.4: (44, 22, 33, 44, 88, 132, 224, 448)}


def channels_for(base: int, percent: int) -> int:
    """Channels of a slot of ``base`` channels at ``percent`` % width: ``int(base * (p / 100))``,
    the official code's floor of the float product (at least 1).

    The ONE place a ratio becomes a channel count (PruningNet, pruned model, FLOPs)."""
    if int(percent) not in RATIO_PERCENTS:
        raise InvalidInputError(f"Width ratio {percent}% is not one of {list(RATIO_PERCENTS)}.")
    return max(1, int(int(base) * (int(percent) / 100)))


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    name: str
    kind: str  # "conv" (full), "dw" (depthwise), "pw" (1x1)
    kernel_size: int
    strides: int
    in_slot: int  # -1: the input image
    out_slot: int
    encoding: Tuple[int, ...]  # slots whose ratios form the generator's input
    activation: Optional[str]  # "relu", "relu6" or None (linear bottleneck)
    hidden: int = 0  # the generator's hidden size; 0: the network's


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    version: str
    base: Tuple[int, ...]  # base channels of each slot
    slot_gene: Tuple[int, ...]  # gene index of each slot, -1 = not pruned
    blocks: Tuple[Tuple[Tuple[ConvSpec, ...], bool], ...]  # (convs, residual add)
    hidden: int

    @property
    def num_genes(self) -> int:
        return max(self.slot_gene) + 1

    def slot_percents(self, percents: Sequence[int]) -> Tuple[int, ...]:
        return tuple(FULL if g < 0 else int(percents[g]) for g in self.slot_gene)

    def channels(self, percents: Sequence[int]) -> Tuple[int, ...]:
        """Channels of every slot for an architecture (gene percents)."""
        return tuple(channels_for(b, p) for b, p in zip(self.base, self.slot_percents(percents)))

    def convs(self) -> List[ConvSpec]:
        return [conv for convs, _ in self.blocks for conv in convs]


def _scaled(base: int, width: float) -> int:
    return max(1, int(base * float(width)))


def network_spec(version: str, width: float = 1.0, block1_expand: bool = True) -> NetworkSpec:
    """Slots, genes and convs of MetaPruning's MobileNet ``version`` ("v1"/"v2") at ``width``.
    ``block1_expand=False``: V2's first block without its 1x1 conv (24 genes), the layout of
    the published ``metapruning_mobilenet_v2.fashion_mnist`` weights."""
    if not width or width <= 0:
        raise InvalidInputError(f"width must be positive, got {width!r}.")
    if version == "v1":
        base = tuple(_scaled(b, width) for b in V1_BASE)
        # official code: genes for the stem and blocks 1-12; block 13's output is not pruned
        slot_gene = tuple(range(len(base) - 1)) + (-1,)
        blocks = [((ConvSpec("stem", "conv", 3, 2, -1, 0, (0,), "relu"),), False)]
        for i, stride in enumerate(V1_STRIDES, start=1):
            enc = (i - 1, i)
            blocks.append(((ConvSpec(f"block{i}_dw", "dw", 3, stride, i - 1, i - 1, enc, "relu"),
                            ConvSpec(f"block{i}_pw", "pw", 1, 1, i - 1, i, enc, "relu")), False))
        return NetworkSpec("v1", base, slot_gene, tuple(blocks), V1_HIDDEN)
    if version == "v2":
        table = V2_WIDTH_TABLES.get(round(float(width), 6))
        base = list(table) if table else [_scaled(32, width)] + [
            _scaled(c, width) for _, c, _, _ in V2_SETTINGS]
        slot_gene = list(range(len(base)))  # stem + 7 stage outputs: genes 0-7
        blocks = [((ConvSpec("stem", "conv", 3, 2, -1, 0, (0,), "relu6", V2_END_HIDDEN),), False)]
        in_slot, index = 0, 0
        for stage, (t, _, n, s) in enumerate(V2_SETTINGS, start=1):
            for repeat in range(n):
                index += 1
                name, stride = f"block{index}", (s if repeat == 0 else 1)
                # every block, the first (t=1) too, has a 1x1 conv to its own mid width
                # (official mobilenet_v2.py: mid = int(t * in * ratio), its own gene)
                if t == 1 and not block1_expand:  # the depthwise conv on the input width
                    mid, convs = in_slot, ()
                else:
                    mid = len(base)
                    base.append(base[in_slot] * t)
                    slot_gene.append(len(slot_gene))
                    convs = (ConvSpec(f"{name}_expand", "pw", 1, 1, in_slot, mid,
                                      (mid, in_slot, stage), "relu6"),)
                enc = (mid, in_slot, stage)
                convs += (ConvSpec(f"{name}_dw", "dw", 3, stride, mid, mid, enc, "relu6"),
                          ConvSpec(f"{name}_project", "pw", 1, 1, mid, stage, enc, None))
                blocks.append((convs, stride == 1 and in_slot == stage))
                in_slot = stage
        base.append(V2_LAST)
        slot_gene.append(-1)  # the final 1x1 conv's 1280 channels are not pruned
        last = len(base) - 1
        blocks.append(((ConvSpec("last", "pw", 1, 1, in_slot, last, (in_slot,), "relu6",
                                 V2_END_HIDDEN),), False))
        return NetworkSpec("v2", tuple(base), tuple(slot_gene), tuple(blocks), V2_HIDDEN)
    raise InvalidInputError(f"Unknown MobileNet version {version!r}: use 'v1' or 'v2'.")


def encode_arch(percents: Sequence[int], width: float = 1.0) -> str:
    """``"49-100-..."``; at another width than 1.0 prefixed with it: ``"0.25x:49-100-..."``."""
    return _arch.format_arch([percents], width, width_style="prefix")


def parse_arch(arch, spec: NetworkSpec) -> Tuple[int, ...]:
    """Gene percents of an architecture string (``None``: every gene at 100%)."""
    if arch is None:
        return (FULL,) * spec.num_genes
    example = encode_arch([FULL] * spec.num_genes)
    if isinstance(arch, str):
        (percents,), _ = _arch.parse_arch(
            arch, what=f"MetaPruning MobileNet{spec.version.upper()} architecture",
            expected=f"{spec.num_genes} width percents joined by '-', e.g. {example!r}")
    else:
        percents = tuple(int(p) for p in arch)
    if len(percents) != spec.num_genes:
        raise InvalidInputError(
            f"Bad MetaPruning MobileNet{spec.version.upper()} architecture {arch!r}: "
            f"{len(percents)} genes, expected {spec.num_genes} (e.g. {example!r}).")
    bad = [p for p in percents if p not in RATIO_PERCENTS]
    if bad:
        raise InvalidInputError(
            f"Bad MetaPruning architecture {arch!r}: {bad[0]} is not a width percent; use one of "
            f"{list(RATIO_PERCENTS)}.")
    return percents


def conv_flops(spec: NetworkSpec, percents: Sequence[int], input_shape, num_classes: int) -> int:
    """Float MACs of the pruned network (conv and dense kernels x output pixels), the count
    :func:`zoo.costs.model_costs` makes on its Keras graph (the tests compare both)."""
    channels = spec.channels(percents)
    height, width = int(input_shape[0]), int(input_shape[1])
    image = int(input_shape[2])
    total = 0
    for conv in spec.convs():
        cin = image if conv.in_slot < 0 else channels[conv.in_slot]
        height, width = -(-height // conv.strides), -(-width // conv.strides)
        per_pixel = conv.kernel_size ** 2 * (cin if conv.kind == "dw" else cin * channels[conv.out_slot])
        total += per_pixel * height * width
    return total + channels[-1] * num_classes


def release_flops(spec: NetworkSpec, percents: Sequence[int], input_shape=(224, 224, 3),
                  num_classes: int = 1000) -> int:
    """FLOPs as the official searching/cal_FLOPs.py counts them: conv MACs, the classifier's
    weights and biases, every BN's output elements and the final 7x7 average pool (its ReLUs
    are functional calls, not counted). The paper's and README's FLOPs are these."""
    channels = spec.channels(percents)
    height, width = int(input_shape[0]), int(input_shape[1])
    bn = 0
    for conv in spec.convs():
        height, width = -(-height // conv.strides), -(-width // conv.strides)
        bn += height * width * channels[conv.out_slot]
    pool = channels[-1] * height * width
    return conv_flops(spec, percents, input_shape, num_classes) + num_classes + bn + pool


# The genomes of the official evaluating/ code, in this module's gene order (slot i <- gene i).
# MobileNetV1 0.75x (README: 70.9% at 316M): evaluating/mobilenet_v1.py's rngs, whose layer i
# reads rngs[i - 1] (the stem the last one); the network it trains is this one.
_V1_RNGS = (28, 18, 10, 23, 23, 22, 22, 13, 17, 28, 17, 25, 29)
V1_0_75_ARCH = "-".join(str(10 + 3 * i) for i in (_V1_RNGS[-1],) + _V1_RNGS[:-1])
# MobileNetV2 at width 1.4: evaluating/mobilenet_v2.py's overall_channel_ids (one per stage,
# equal within a residual stage) then its 17 mid_channel_ids. Its FLOPs (104.9M MACs, 108.3M
# counted as cal_FLOPs.py) are none of the README's 303M / 140M / 43M, so the README's
# ~300M genome is not in the release and no entry claims its numbers.
V2_RELEASE_CODE_ARCH = "1.4x:" + "-".join(str(10 + 3 * i) for i in (
    14, 12, 11, 8, 7, 8, 14, 8,
    6, 5, 2, 15, 7, 17, 14, 5, 11, 12, 12, 11, 6, 16, 14, 13, 14))


# ----------------------------------------------------------------------------- pruned network


def _activation(x, kind, name):
    if kind == "relu":
        return tf.keras.layers.ReLU(name=name)(x)
    if kind == "relu6":
        return tf.keras.layers.ReLU(6.0, name=name)(x)
    return x


def _pruned(spec: NetworkSpec, arch, name, *, include_top, weights, input_shape, input_tensor,
            num_classes, padding="same"):
    """``padding="symmetric"``: PyTorch's padding of the released networks (one pixel on
    every side of a strided 3x3 conv), through TF's "same" convs on the input turned by
    180 degrees (:class:`zoo.layers.Rotate180`)."""
    percents = parse_arch(arch, spec)
    channels = spec.channels(percents)
    inputs = zl.image_input(input_shape, input_tensor)
    turn = zl.check_padding(padding) == "symmetric"
    x = zl.Rotate180(name="turn_input")(inputs) if turn else inputs
    for convs, residual in spec.blocks:
        shortcut = x
        for conv in convs:
            if conv.kind == "dw":
                x = tf.keras.layers.DepthwiseConv2D(conv.kernel_size, conv.strides, padding="same",
                                                    use_bias=False, name=conv.name)(x)
            else:
                x = zl.real_conv(x, channels[conv.out_slot], conv.kernel_size, conv.strides,
                                 name=conv.name, kernel_initializer="he_normal")
            x = zl.batch_norm(x, name=f"{conv.name}_bn")
            x = _activation(x, conv.activation, f"{conv.name}_act")
        if residual:
            x = tf.keras.layers.Add(name=f"{convs[-1].name}_add")([x, shortcut])
    if include_top:
        x = zl.classifier_head(x, num_classes)
    elif turn:
        x = zl.Rotate180(name="turn_features")(x)
    return zl.finish_model(inputs, x, name, weights, input_tensor)


# ----------------------------------------------------------------------------- PruningNet


@tf.keras.utils.register_keras_serializable(package="zoo")
class GeneratedConv2D(tf.keras.layers.Layer):
    """A conv whose kernel a two-layer FC net generates from the network encoding vector.

    ``kernel = reshape(FC2(ReLU(FC1(encoding))))`` at the maximum shape
    ``(k, k, max_in, max_out)`` (depthwise: ``(k, k, max_in, 1)``), cropped to
    ``[:, :, :active_in, :active_out]``; the crop is zero-padded back to the
    maximum shape so that one static graph serves every structure. The
    encoding and the active widths are non-trainable variables that
    :func:`set_architecture` assigns. ``in_gene`` / ``out_gene`` /
    ``encoding_genes`` name the genes they come from (-1: not pruned).
    """

    def __init__(self, kind: str, kernel_size: int, strides: int, max_in: int, max_out: int,
                 in_gene: int, out_gene: int, encoding_genes: Sequence[int], hidden: int = 32,
                 **kwargs):
        super().__init__(**kwargs)
        if kind not in ("conv", "dw", "pw"):
            raise ValueError(f"kind must be conv, dw or pw, got {kind!r}.")
        self.kind, self.kernel_size, self.strides = kind, int(kernel_size), int(strides)
        self.max_in, self.max_out = int(max_in), int(max_out)
        self.in_gene, self.out_gene = int(in_gene), int(out_gene)
        self.encoding_genes = tuple(int(g) for g in encoding_genes)
        self.hidden = int(hidden)

    @property
    def full_shape(self) -> Tuple[int, int, int, int]:
        k = self.kernel_size
        return (k, k, self.max_in, 1 if self.kind == "dw" else self.max_out)

    def build(self, input_shape):
        if int(input_shape[-1]) != self.max_in:
            raise ValueError(f"{self.name}: input has {input_shape[-1]} channels, expected {self.max_in}.")
        size = int(np.prod(self.full_shape))
        k = self.kernel_size
        fan_in = k * k * (1 if self.kind == "dw" else self.max_in)
        enc = len(self.encoding_genes)
        self.fc1_kernel = self.add_weight(name="fc1_kernel", shape=(enc, self.hidden),
                                          initializer="glorot_uniform")
        self.fc1_bias = self.add_weight(name="fc1_bias", shape=(self.hidden,), initializer="zeros")
        # scaled so that at the full encoding (all ratios 1) the generated kernel starts with
        # He-normal's variance 2 / fan_in: E|ReLU(FC1(enc))|^2 = hidden * enc / (enc + hidden)
        # for glorot-uniform FC1 weights and zero biases
        std = np.sqrt(2.0 / fan_in) * np.sqrt((enc + self.hidden) / (self.hidden * enc))
        self.fc2_kernel = self.add_weight(
            name="fc2_kernel", shape=(self.hidden, size),
            initializer=tf.keras.initializers.RandomNormal(stddev=float(std)))
        self.fc2_bias = self.add_weight(name="fc2_bias", shape=(size,), initializer="zeros")
        self.encoding = self.add_weight(name="encoding", shape=(enc,), trainable=False,
                                        initializer="ones")
        self.active_in = self.add_weight(name="active_in", shape=(), dtype=tf.int32,
                                         trainable=False,
                                         initializer=tf.keras.initializers.Constant(self.max_in))
        self.active_out = self.add_weight(name="active_out", shape=(), dtype=tf.int32,
                                          trainable=False,
                                          initializer=tf.keras.initializers.Constant(self.max_out))
        super().build(input_shape)

    def full_kernel(self):
        """The generated maximum-size kernel for the current encoding."""
        hidden = tf.nn.relu(tf.matmul(self.encoding[None, :], self.fc1_kernel) + self.fc1_bias)
        flat = tf.matmul(hidden, self.fc2_kernel) + self.fc2_bias
        return tf.reshape(flat, self.full_shape)

    def cropped_kernel(self, full=None):
        """The generated kernel cropped to the active widths (the pruned conv's kernel)."""
        full = self.full_kernel() if full is None else full
        if self.kind == "dw":
            return full[:, :, :self.active_in, :]
        return full[:, :, :self.active_in, :self.active_out]

    def call(self, inputs):
        cropped = self.cropped_kernel()
        if self.kind == "dw":
            pad = [[0, 0], [0, 0], [0, self.max_in - self.active_in], [0, 0]]
            kernel = tf.pad(cropped, pad)
            kernel.set_shape(self.full_shape)
            return tf.nn.depthwise_conv2d(tf.cast(inputs, kernel.dtype), kernel,
                                          [1, self.strides, self.strides, 1], "SAME")
        pad = [[0, 0], [0, 0], [0, self.max_in - self.active_in], [0, self.max_out - self.active_out]]
        kernel = tf.pad(cropped, pad)
        kernel.set_shape(self.full_shape)
        return tf.nn.conv2d(tf.cast(inputs, kernel.dtype), kernel, self.strides, "SAME")

    def compute_output_shape(self, input_shape):
        return zl.same_conv_output_shape(input_shape, self.strides, self.max_out)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "kernel_size": self.kernel_size,
                "strides": self.strides, "max_in": self.max_in, "max_out": self.max_out,
                "in_gene": self.in_gene, "out_gene": self.out_gene,
                "encoding_genes": list(self.encoding_genes), "hidden": self.hidden}


def _pruningnet(spec: NetworkSpec, name, *, include_top, weights, input_shape, input_tensor,
                num_classes):
    inputs = zl.image_input(input_shape, input_tensor)
    image_channels = int(inputs.shape[-1])
    x = inputs
    for convs, residual in spec.blocks:
        shortcut = x
        for conv in convs:
            max_in = image_channels if conv.in_slot < 0 else spec.base[conv.in_slot]
            x = GeneratedConv2D(
                conv.kind, conv.kernel_size, conv.strides, max_in, spec.base[conv.out_slot],
                in_gene=-1 if conv.in_slot < 0 else spec.slot_gene[conv.in_slot],
                out_gene=spec.slot_gene[conv.out_slot],
                encoding_genes=[spec.slot_gene[s] for s in conv.encoding],
                hidden=conv.hidden or spec.hidden, name=conv.name)(x)
            x = zl.batch_norm(x, name=f"{conv.name}_bn")
            x = _activation(x, conv.activation, f"{conv.name}_act")
        if residual:
            x = tf.keras.layers.Add(name=f"{convs[-1].name}_add")([x, shortcut])
    if include_top:
        x = zl.classifier_head(x, num_classes)
    return zl.finish_model(inputs, x, name, weights, input_tensor)


def generated_layers(model) -> List[GeneratedConv2D]:
    found = [l for l in model.layers if isinstance(l, GeneratedConv2D)]
    if not found:
        raise InvalidInputError(f"{model.name} is not a PruningNet (no generated convs).")
    return found


def layer_widths(layer: GeneratedConv2D, percents: Sequence[int]) -> Tuple[int, int, List[float]]:
    """(active in, active out, encoding) of one PruningNet conv for an architecture."""
    def percent(gene):
        return FULL if gene < 0 else int(percents[gene])
    active_in = channels_for(layer.max_in, percent(layer.in_gene))
    active_out = active_in if layer.kind == "dw" else channels_for(layer.max_out, percent(layer.out_gene))
    return active_in, active_out, [percent(g) / 100.0 for g in layer.encoding_genes]


def set_architecture(model, percents: Sequence[int]) -> None:
    """Point every generated conv of a PruningNet at the structure ``percents``."""
    for layer in generated_layers(model):
        active_in, active_out, encoding = layer_widths(layer, percents)
        layer.active_in.assign(active_in)
        layer.active_out.assign(active_out)
        layer.encoding.assign(encoding)


def pruningnet_to_pruned(pruningnet, pruned, percents: Sequence[int]) -> None:
    """Copy a PruningNet's generated weights for ``percents`` into the plain pruned
    model of the same structure: cropped kernels, BN rows of the active channels,
    the classifier. Raises if any width disagrees."""
    set_architecture(pruningnet, percents)
    source = {l.name: l for l in pruningnet.layers}
    for layer in pruned.layers:
        if not layer.weights:
            continue
        origin = source.get(layer.name)
        if origin is None:
            raise InvalidInputError(f"The PruningNet has no layer {layer.name}.")
        if isinstance(origin, GeneratedConv2D):
            layer.set_weights([origin.cropped_kernel().numpy()])
        elif isinstance(origin, tf.keras.layers.BatchNormalization):
            count = layer.weights[0].shape[0]
            layer.set_weights([w[:count] for w in origin.get_weights()])
        else:
            layer.set_weights(origin.get_weights())


# ----------------------------------------------------------------------------- entries

# default recipe: `metapruning_mobilenet` in zoo/training/recipes.py (the official retraining)
_REGISTER = dict(paper=METAPRUNING, family="metapruning", binary=False, min_input_size=16,
                 default_recipe="metapruning_mobilenet")

@register_model("metapruning_mobilenet_v1", **_REGISTER)
def metapruning_mobilenet_v1(*, arch: Optional[str] = None, width: Optional[float] = None,
                             include_top=True, weights=None, input_shape=None, input_tensor=None,
                             num_classes=1000, padding: str = "same"):
    """Pruned MobileNetV1 of a MetaPruning search (``arch``: 13 width percents; default unpruned;
    ``padding="symmetric"``: the official PyTorch code's padding, for imported releases)."""
    arch, width = _arch.split_width(arch, width)
    return _pruned(network_spec("v1", width), arch, "metapruning_mobilenet_v1",
                   include_top=include_top, weights=weights, input_shape=input_shape,
                   input_tensor=input_tensor, num_classes=num_classes, padding=padding)


@register_model("metapruning_mobilenet_v2", **_REGISTER)
def metapruning_mobilenet_v2(*, arch: Optional[str] = None, width: Optional[float] = None,
                             include_top=True, weights=None, input_shape=None, input_tensor=None,
                             num_classes=1000, block1_expand: bool = True, padding: str = "same"):
    """Pruned MobileNetV2 of a MetaPruning search (``arch``: 25 width percents; default unpruned;
    ``padding="symmetric"``: the official PyTorch code's padding)."""
    arch, width = _arch.split_width(arch, width)
    return _pruned(network_spec("v2", width, block1_expand), arch, "metapruning_mobilenet_v2",
                   include_top=include_top, weights=weights, input_shape=input_shape,
                   input_tensor=input_tensor, num_classes=num_classes, padding=padding)


@register_model(
    "metapruning_mobilenet_v1_0_75",
    reported={"imagenet2012": {"top1": 70.9, "source": "MetaPruning README, 316M FLOPs"}},
    extra={"release_flops": release_flops(network_spec("v1"), parse_arch(V1_0_75_ARCH, network_spec("v1")))},
    **_REGISTER)
def metapruning_mobilenet_v1_0_75(*, include_top=True, weights=None, input_shape=None,
                                  input_tensor=None, num_classes=1000, padding: str = "same"):
    """MetaPruning's released MobileNetV1 0.75x genome (official evaluating/mobilenet_v1.py;
    ``padding="symmetric"``: that code's padding, for its imported ImageNet checkpoint)."""
    return _pruned(network_spec("v1"), V1_0_75_ARCH, "metapruning_mobilenet_v1_0_75",
                   include_top=include_top, weights=weights, input_shape=input_shape,
                   input_tensor=input_tensor, num_classes=num_classes, padding=padding)


# Supernet entries (extra["supernet"]): their generated convs are not Keras/Larq conv layers,
# so model_costs does not count their MACs (the pruned network's entry has the real costs).
# A 1.0x PruningNet's generators hold ~100M (V1) / ~300M (V2) weights; the entries default
# to the 0.25x base width so that they build on a laptop; width=1.0 is the paper's PruningNet.
PRUNINGNET_DEFAULT_WIDTH = 0.25


@register_model("pruningnet_mobilenet_v1", extra={"supernet": True}, **_REGISTER)
def pruningnet_mobilenet_v1(*, width: float = PRUNINGNET_DEFAULT_WIDTH, include_top=True,
                            weights=None, input_shape=None, input_tensor=None, num_classes=1000):
    """MetaPruning's PruningNet of MobileNetV1: FC-generated, cropped kernels."""
    return _pruningnet(network_spec("v1", width), "pruningnet_mobilenet_v1", include_top=include_top,
                       weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                       num_classes=num_classes)


@register_model("pruningnet_mobilenet_v2", extra={"supernet": True}, **_REGISTER)
def pruningnet_mobilenet_v2(*, width: float = PRUNINGNET_DEFAULT_WIDTH, include_top=True,
                            weights=None, input_shape=None, input_tensor=None, num_classes=1000):
    """MetaPruning's PruningNet of MobileNetV2: FC-generated, cropped kernels."""
    return _pruningnet(network_spec("v2", width), "pruningnet_mobilenet_v2", include_top=include_top,
                       weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                       num_classes=num_classes)
