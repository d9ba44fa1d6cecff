"""Single Path One-Shot NAS (ECCV 2020, arXiv 1904.00420): supernet and searched networks.

The search space is SPOS's ShuffleNetV2 one: a 3x3/2 stem (16 channels), 20
choice layers in four stages of 4/4/8/4 layers (output widths 64/160/320/640,
the first layer of a stage has stride 2), a 1x1 conv to 1024 channels, global
average pooling, dropout 0.1 and a bias-free classifier. Each choice layer picks
one of four ShuffleNetV2 blocks and one of eight widths of its main branch:

* blocks: ``0`` Shuffle3x3, ``1`` Shuffle5x5, ``2`` Shuffle7x7, ``3`` Xception
  (stride 1: channel split into the even and odd channels, the odd half goes
  through the main branch, the even half is concatenated untouched; stride 2:
  a projection branch, k x k depthwise /2 -> BN -> 1x1 -> BN -> ReLU, replaces
  the untouched half; Shuffle-k main branch: 1x1 -> BN -> ReLU -> k x k
  depthwise -> BN -> 1x1 -> BN -> ReLU; Xception: three depthwise 3x3 -> BN ->
  1x1 -> BN -> ReLU units, the first depthwise conv carries the stride);
* channel scales (paper §4, channel search): the main branch's mid channels are
  ``int(s * out / 2)`` for ``s`` in 0.2, 0.4, ..., 1.6 (scale index 0..7).

Architecture strings: 20 block digits, ``-``, 20 scale digits (index ``i`` =
scale ``0.2 * (i + 1)``), optionally ``@WIDTH`` (the network's channel
multiplier, when not 1.0), e.g. ``"00311100202110202132-65352634257546744543"``,
the default: the block + channel architecture SPOS released
(megvii-model/ShuffleNet-Series, OneShot: 328M FLOPs, 74.9% ImageNet top-1).
A 20-digit string without scales means scale 1.0 everywhere (block-only search).

Depth: the paper's space has 20 choice layers. Shallower spaces keep its stage
ratio 1:1:2:1 and its four stride-2 layers: ``layers`` in 5, 10, 15 (stages
n/n/2n/n); an architecture string's number of digits says which. They are for
small inputs: at 28x28 the last stage already runs on 1x1 maps, and a 20-layer
supernet of independent choice blocks needs far more random-path steps than a
CPU budget gives before any path beats chance (measured on Fashion-MNIST: no
progress in 480 steps at width 1.0), while 5 layers learn in a few hundred.

The supernet (``spos_supernet``) holds every block at the largest scale (1.6)
in one :class:`ChoiceLayer` per layer; which block runs and how many mid channels
it uses are two integers in a non-trainable variable of that layer, so one traced
graph (``tf.switch_case`` over the blocks) serves every path. A smaller scale
*masks* the mid channels: they are multiplied by 0 after every op that produces
them (for a binary 1x1 conv reading them, after its input's sign, so the sign of
0 never leaks into the next conv), which makes a path equal to the stand-alone
network holding the first ``c`` channels of every sliced weight
(:func:`inherit_weights`, checked in ``tests/test_spos.py``). Supernet BNs have no
affine parameters (paper §3.2, official code: ``affine=False``).

The binary variant (``spos_binary``, ``spos_binary_supernet``) builds every
1x1 conv (main branches, projections and the last conv) as a Larq binary conv:
RSign input (ReActNet's learnable threshold), sign kernels (``ste_sign`` with
``weight_clip``; the BN after each conv makes a kernel scale redundant), and
RPReLU instead of ReLU. Depthwise convs, the stem and the classifier stay
real-valued: a depthwise MAC is rare, and binary depthwise convs diverge
(arXiv 2005.06305). Its constraint is OPs = FLOPs + BOPs / 64.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import larq as lq
import numpy as np
import tensorflow as tf

from zoo import layers as zl
from zoo.errors import InvalidInputError
from zoo.models import _arch
from zoo.papers import SPOS
from zoo.registry import register_model

BLOCKS = ("shuffle3x3", "shuffle5x5", "shuffle7x7", "xception")
KERNELS = (3, 5, 7, 3)
# paper §4 (channel search): mid-channel scales 0.2 ... 1.6, step 0.2
SCALES = tuple(round(0.2 * (i + 1), 1) for i in range(8))
MAX_SCALE_INDEX = len(SCALES) - 1
REPEATS = (4, 4, 8, 4)  # choice layers per stage (official Supernet/network.py)
DEPTHS = (5, 10, 15, 20)  # choice layers of the spaces built here (stage ratio 1:1:2:1)
STAGE_WIDTHS = (64, 160, 320, 640)
STEM_WIDTH = 16
LAST_WIDTH = 1024
NUM_LAYERS = sum(REPEATS)
DROPOUT = 0.1
# released block + channel search result (ShuffleNet-Series OneShot)
DEFAULT_BLOCKS = (0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2)
DEFAULT_SCALES = (6, 5, 3, 5, 2, 6, 3, 4, 2, 5, 7, 5, 4, 6, 7, 4, 4, 5, 4, 3)
DEFAULT_ARCH = "".join(map(str, DEFAULT_BLOCKS)) + "-" + "".join(map(str, DEFAULT_SCALES))
DEFAULT_SCALE_INDEX = SCALES.index(1.0)


def _even(value: float, minimum: int = 2) -> int:
    return max(minimum, 2 * int(round(value / 2.0)))


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Channels of one choice layer."""

    index: int
    inp: int  # block input channels
    oup: int  # block output channels
    stride: int
    main_in: int  # main branch input channels
    main_out: int  # main branch output channels
    mid_base: int  # mid channels at scale 1.0 (= oup / 2)

    def mid(self, scale_index: int) -> int:
        return max(1, int(SCALES[scale_index] * self.mid_base + 1e-6))

    @property
    def mid_max(self) -> int:
        return self.mid(MAX_SCALE_INDEX)


def widths(width: float = 1.0) -> Tuple[int, Tuple[int, ...], int]:
    """Stem, stage and last-conv widths at a channel multiplier (all even)."""
    if not isinstance(width, (int, float)) or width <= 0:
        raise InvalidInputError(f"width must be a positive number, got {width!r}.")
    stem = _even(STEM_WIDTH * width, 4)
    stages = tuple(max(_even(w * width, 4), stem + 2) for w in STAGE_WIDTHS)
    return stem, stages, max(8, int(round(LAST_WIDTH * width)))


def stage_repeats(layers: int = NUM_LAYERS) -> Tuple[int, ...]:
    """Choice layers per stage of a ``layers``-deep space (20: the paper's 4/4/8/4)."""
    if layers not in DEPTHS:
        raise InvalidInputError(f"An SPOS space has {', '.join(map(str, DEPTHS))} choice "
                                f"layers, not {layers!r}.")
    n = layers // 5
    return (n, n, 2 * n, n)


def layer_specs(width: float = 1.0, layers: int = NUM_LAYERS) -> List[LayerSpec]:
    stem, stages, _ = widths(width)
    specs, inp = [], stem
    for stage, (repeats, oup) in enumerate(zip(stage_repeats(layers), stages)):
        for j in range(repeats):
            if j == 0:
                spec = LayerSpec(len(specs), inp, oup, 2, inp, oup - inp, oup // 2)
            else:
                spec = LayerSpec(len(specs), oup, oup, 1, oup // 2, oup - oup // 2, oup // 2)
            specs.append(spec)
            inp = oup
    return specs


# ----------------------------------------------------------------------------- arch strings

_ARCH_SYNTAX = dict(what="SPOS architecture", sep="", parts=2, width_style="suffix")
_ARCH_EXPECTED = (
    "one block digit 0-3 per choice layer (0 Shuffle3x3, 1 Shuffle5x5, 2 Shuffle7x7, 3 Xception; "
    "20 layers, or 5, 10, 15 for the shallower spaces), optionally '-' and as many channel-scale "
    f"digits 0-7 (scale 0.2 * (i + 1)) and '@WIDTH', e.g. {DEFAULT_ARCH!r}")


def parse_arch(arch: str) -> Tuple[Tuple[int, ...], Tuple[int, ...], Optional[float]]:
    """``"BLOCKS-SCALES[@WIDTH]"`` -> (blocks, scale indices, width or None)."""
    (blocks, *scales), width = _arch.parse_arch(arch, expected=_ARCH_EXPECTED, **_ARCH_SYNTAX)
    scales = scales[0] if scales else (DEFAULT_SCALE_INDEX,) * len(blocks)
    if (len(blocks) not in DEPTHS or len(scales) != len(blocks)
            or max(blocks) >= len(BLOCKS) or max(scales) >= len(SCALES)):
        raise _arch.arch_error(arch, _ARCH_SYNTAX["what"], _ARCH_EXPECTED)
    return blocks, scales, width


def format_arch(blocks: Sequence[int], scales: Sequence[int], width: Optional[float] = None) -> str:
    return _arch.format_arch([blocks, scales], width, sep="", width_style="suffix")


# ----------------------------------------------------------------------------- block recipes


@dataclasses.dataclass(frozen=True)
class Op:
    """One layer of a block: ``kind`` in pw / dw / bn / act; channels by role."""

    name: str
    kind: str
    cin: str  # "in" | "mid" | "out" | "inp" (the projection branch's full input)
    cout: str
    kernel: int = 1
    stride: int = 1


def block_ops(block: int, stride: int) -> List[Op]:
    """The ops of block ``block`` (main branch, then the projection branch at stride 2)."""
    k = KERNELS[block]
    if BLOCKS[block] == "xception":
        ops = [Op("dw1", "dw", "in", "in", 3, stride), Op("bn1", "bn", "in", "in"),
               Op("pw1", "pw", "in", "mid"), Op("bn2", "bn", "mid", "mid"),
               Op("act2", "act", "mid", "mid"),
               Op("dw2", "dw", "mid", "mid", 3), Op("bn3", "bn", "mid", "mid"),
               Op("pw2", "pw", "mid", "mid"), Op("bn4", "bn", "mid", "mid"),
               Op("act4", "act", "mid", "mid"),
               Op("dw3", "dw", "mid", "mid", 3), Op("bn5", "bn", "mid", "mid"),
               Op("pw3", "pw", "mid", "out"), Op("bn6", "bn", "out", "out"),
               Op("act6", "act", "out", "out")]
    else:
        ops = [Op("pw1", "pw", "in", "mid"), Op("bn1", "bn", "mid", "mid"),
               Op("act1", "act", "mid", "mid"),
               Op("dw", "dw", "mid", "mid", k, stride), Op("bn2", "bn", "mid", "mid"),
               Op("pw2", "pw", "mid", "out"), Op("bn3", "bn", "out", "out"),
               Op("act3", "act", "out", "out")]
    if stride == 2:
        ops += [Op("proj_dw", "dw", "inp", "inp", k, 2), Op("proj_bn1", "bn", "inp", "inp"),
                Op("proj_pw", "pw", "inp", "inp"), Op("proj_bn2", "bn", "inp", "inp"),
                Op("proj_act", "act", "inp", "inp")]
    return ops


def _channels(spec: LayerSpec, role: str, mid: int) -> int:
    return {"in": spec.main_in, "mid": mid, "out": spec.main_out, "inp": spec.inp}[role]


def _pw_initializer(cin: int):
    # official code: conv weights ~ N(0, std = 1 / weight.shape[1]) (= input channels)
    return tf.keras.initializers.RandomNormal(stddev=1.0 / max(1, cin))


def _dw_initializer():
    return tf.keras.initializers.RandomNormal(stddev=1.0)  # depthwise: weight.shape[1] = 1


def _binary_pw(filters: int, cin: int, input_quantizer, name: str):
    return lq.layers.QuantConv2D(
        filters, 1, padding="same", use_bias=False, input_quantizer=input_quantizer,
        kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
        kernel_initializer=_pw_initializer(cin), name=name)


def _make_layer(op: Op, cin: int, cout: int, binary: bool, bn_affine: bool, name: str,
                with_sign: bool = True):
    """The Keras layer of one op (a binary pw op's input quantizer: RSign if ``with_sign``)."""
    if op.kind == "pw":
        if binary:
            return _binary_pw(cout, cin, zl.RSign() if with_sign else None, name)
        return tf.keras.layers.Conv2D(cout, 1, padding="same", use_bias=False,
                                      kernel_initializer=_pw_initializer(cin), name=name)
    if op.kind == "dw":
        return tf.keras.layers.DepthwiseConv2D(op.kernel, op.stride, padding="same",
                                               use_bias=False,
                                               depthwise_initializer=_dw_initializer(), name=name)
    if op.kind == "bn":
        return tf.keras.layers.BatchNormalization(momentum=zl.BN_MOMENTUM, epsilon=zl.BN_EPSILON,
                                                  center=bn_affine, scale=bn_affine, name=name)
    if op.kind == "act":
        return zl.RPReLU(name=name) if binary else tf.keras.layers.ReLU(name=name)
    raise ValueError(op.kind)


@tf.keras.utils.register_keras_serializable(package="zoo")
class ChannelSplit(tf.keras.layers.Layer):
    """Every second channel from ``offset`` (ShuffleNetV2's split after the shuffle)."""

    def __init__(self, offset: int, **kwargs):
        super().__init__(**kwargs)
        self.offset = int(offset)

    def call(self, inputs):
        return inputs[..., self.offset::2]

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


def standalone_block(x, spec: LayerSpec, block: int, scale: int, binary: bool, bn_affine: bool):
    prefix = f"layer{spec.index}_"
    mid = spec.mid(scale)
    ops = block_ops(block, spec.stride)
    if spec.stride == 1:
        proj = ChannelSplit(0, name=prefix + "split_even")(x)
        main = ChannelSplit(1, name=prefix + "split_odd")(x)
    else:
        proj = main = x
    for op in ops:
        channels = lambda role: _channels(spec, role, mid)  # noqa: E731
        layer = _make_layer(op, channels(op.cin), channels(op.cout), binary, bn_affine,
                            prefix + op.name)
        if op.name.startswith("proj_"):
            proj = layer(proj)
        else:
            main = layer(main)
    return tf.keras.layers.Concatenate(name=prefix + "concat")([proj, main])


def stem_size(hw) -> Tuple[int, int]:
    """Spatial size after the stride-2 stem ('same' padding)."""
    return tuple((int(s) + 1) // 2 for s in hw)


def _stem(x, width_stem):
    x = tf.keras.layers.Conv2D(width_stem, 3, strides=2, padding="same", use_bias=False,
                               kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
                               name="stem_conv")(x)  # official: first conv ~ N(0, 0.01)
    return x


def _tail(x, last, binary, bn_affine, include_top, num_classes, dropout):
    cin = int(x.shape[-1])
    if binary:
        x = _binary_pw(last, cin, zl.RSign(), "last_conv")(x)
    else:
        x = tf.keras.layers.Conv2D(last, 1, use_bias=False, kernel_initializer=_pw_initializer(cin),
                                   name="last_conv")(x)
    x = tf.keras.layers.BatchNormalization(momentum=zl.BN_MOMENTUM, epsilon=zl.BN_EPSILON,
                                           center=bn_affine, scale=bn_affine, name="last_bn")(x)
    x = (zl.RPReLU(name="last_act") if binary else tf.keras.layers.ReLU(name="last_act"))(x)
    if not include_top:
        return x
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = tf.keras.layers.Dropout(dropout, name="dropout")(x)
    x = tf.keras.layers.Dense(num_classes, use_bias=False, name="predictions",
                              kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.01))(x)
    return tf.keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)


def _stem_bn_act(x, bn_affine, binary):
    x = tf.keras.layers.BatchNormalization(momentum=zl.BN_MOMENTUM, epsilon=zl.BN_EPSILON,
                                           center=bn_affine, scale=bn_affine, name="stem_bn")(x)
    return (zl.RPReLU(name="stem_act") if binary else tf.keras.layers.ReLU(name="stem_act"))(x)


def build_spos(arch: str = DEFAULT_ARCH, *, width: Optional[float] = None, binary: bool = False,
               bn_affine: bool = True, dropout: float = DROPOUT, include_top: bool = True,
               weights=None, input_shape=None, input_tensor=None, num_classes: int = 1000,
               name: Optional[str] = None, padding: str = "same"):
    """The stand-alone network of one architecture string (see the module doc).
    ``padding="symmetric"``: PyTorch's padding of the released network, through TF's
    "same" convs on the input turned by 180 degrees (:class:`zoo.layers.Rotate180`)."""
    blocks, scales, arch_width = parse_arch(arch)
    width = _arch.resolve_width(arch, arch_width, width)
    stem, _, last = widths(width)
    inputs = zl.image_input(input_shape, input_tensor)
    turn = zl.check_padding(padding) == "symmetric"
    x = zl.Rotate180(name="turn_input")(inputs) if turn else inputs
    x = _stem_bn_act(_stem(x, stem), bn_affine, binary)
    for spec, block, scale in zip(layer_specs(width, len(blocks)), blocks, scales):
        x = standalone_block(x, spec, block, scale, binary, bn_affine)
    outputs = _tail(x, last, binary, bn_affine, include_top, num_classes, dropout)
    if turn and not include_top:
        outputs = zl.Rotate180(name="turn_features")(outputs)
    return zl.finish_model(inputs, outputs, name or ("spos_binary" if binary else "spos"),
                           weights, input_tensor)


# ----------------------------------------------------------------------------- supernet


@tf.keras.utils.register_keras_serializable(package="zoo")
class ChoiceLayer(tf.keras.layers.Layer):
    """One SPOS choice layer: all four blocks at the largest mid width, one runs.

    ``self.choice`` (non-trainable int32 ``[block, scale index]``) selects the
    block (``tf.switch_case``) and the mid channels (a 0/1 mask over the first
    ``mid(scale)`` of ``mid_max`` channels). Set it with :func:`set_path`.
    """

    def __init__(self, index: int, inp: int, oup: int, stride: int, binary: bool = False,
                 bn_affine: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.spec = _spec_from(index, inp, oup, stride)
        self.binary, self.bn_affine = bool(binary), bool(bn_affine)
        self.mids = tf.constant([self.spec.mid(i) for i in range(len(SCALES))], tf.int32)
        # per block: [(op, sign layer or None, layer)] at mid_max channels
        self.branches = []
        for block in range(len(BLOCKS)):
            ops = []
            for op in block_ops(block, stride):
                cin = _channels(self.spec, op.cin, self.spec.mid_max)
                cout = _channels(self.spec, op.cout, self.spec.mid_max)
                base = f"{BLOCKS[block]}_{op.name}"
                sign = zl.RSign(name=base + "_sign") if (binary and op.kind == "pw") else None
                layer = _make_layer(op, cin, cout, binary, bn_affine, base, with_sign=False)
                ops.append((op, sign, layer))
            self.branches.append(ops)

    def build(self, input_shape):
        self.choice = self.add_weight(
            name="choice", shape=(2,), dtype=tf.int32, trainable=False,
            initializer=tf.keras.initializers.Constant([0, MAX_SCALE_INDEX]))
        with tf.init_scope():  # create every branch's weights now, outside any cond branch
            probe = tf.zeros((1, 8, 8, int(input_shape[-1])))
            for block in range(len(BLOCKS)):
                self._build_branch(block, probe)
        super().build(input_shape)

    def _build_branch(self, block, x):
        """Build the sublayers of one block by calling them once (Keras' __call__ builds)."""
        proj, main = (x[..., 0::2], x[..., 1::2]) if self.spec.stride == 1 else (x, x)
        for op, sign, layer in self.branches[block]:
            value = proj if op.name.startswith("proj_") else main
            if sign is not None:
                value = sign(value)
            value = layer(value, training=False) if op.kind == "bn" else layer(value)
            if op.name.startswith("proj_"):
                proj = value
            else:
                main = value

    def _run(self, block, x, mask, training):
        if self.spec.stride == 1:
            proj, main = x[..., 0::2], x[..., 1::2]
        else:
            proj = main = x
        for op, sign, layer in self.branches[block]:
            is_proj = op.name.startswith("proj_")
            value = proj if is_proj else main
            # the sublayers are built in build(): call() skips Keras' per-call bookkeeping,
            # which would dominate tracing 4 branches x ~15 layers per choice layer
            if sign is not None:
                value = sign.call(value)
                if op.cin == "mid":
                    value = value * mask  # sign(0) is +-1: the masked channels must stay 0
            value = layer.call(value, training=training) if op.kind == "bn" else layer.call(value)
            if op.cout == "mid":
                value = value * mask
            if is_proj:
                proj = value
            else:
                main = value
        return tf.concat([proj, main], axis=-1)

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        # a Python bool keeps BN from building both its training and inference graphs
        training = bool(training) if not tf.is_tensor(training) else training
        if _in_keras_shape_inference():
            return self._shape_stand_in(inputs)
        choice = tf.convert_to_tensor(self.choice)
        mid = tf.gather(self.mids, choice[1])
        mask = tf.cast(tf.range(self.spec.mid_max) < mid, inputs.dtype)
        branches = [lambda b=b: self._run(b, inputs, mask, training) for b in range(len(BLOCKS))]
        return tf.switch_case(choice[0], branches)

    def _shape_stand_in(self, inputs):
        """A cheap tensor of the output's shape (for Keras' output-shape inference only)."""
        x = inputs[..., :1] if self.spec.stride == 1 else inputs[:, ::2, ::2, :1]
        return tf.tile(x, [1, 1, 1, self.spec.oup])

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        if self.spec.stride == 2:
            shape[1:3] = [None if s is None else (s + 1) // 2 for s in shape[1:3]]
        return tf.TensorShape(shape[:-1] + [self.spec.oup])

    def op_layers(self, block: int) -> Dict[str, list]:
        """op name -> the layers holding its weights (sign layer first)."""
        return {op.name: [l for l in (sign, layer) if l is not None]
                for op, sign, layer in self.branches[block]}

    def get_config(self):
        return {**super().get_config(), "index": self.spec.index, "inp": self.spec.inp,
                "oup": self.spec.oup, "stride": self.spec.stride, "binary": self.binary,
                "bn_affine": self.bn_affine}


def _in_keras_shape_inference() -> bool:
    """Whether Keras is only inferring a layer's output shape (functional construction).

    tf-keras 2 runs ``call`` in a throw-away graph named ``<layer>_scratch_graph`` to
    learn the output shape of a layer called on symbolic inputs; tracing the four
    branches there would only cost time (seconds per choice layer).
    """
    graph = tf.compat.v1.get_default_graph()
    return getattr(graph, "name", "").endswith("_scratch_graph")


def _spec_from(index, inp, oup, stride) -> LayerSpec:
    if stride == 2:
        return LayerSpec(index, inp, oup, 2, inp, oup - inp, oup // 2)
    return LayerSpec(index, oup, oup, 1, oup // 2, oup - oup // 2, oup // 2)


def build_supernet(*, width: float = 1.0, binary: bool = False, dropout: float = DROPOUT,
                   include_top: bool = True, weights=None, input_shape=None, input_tensor=None,
                   num_classes: int = 1000, name: Optional[str] = None,
                   layers: int = NUM_LAYERS):
    """The SPOS supernet (BN without affine parameters, every block at scale 1.6)."""
    stem, _, last = widths(width)
    inputs = zl.image_input(input_shape, input_tensor)
    x = _stem_bn_act(_stem(inputs, stem), False, binary)
    for spec in layer_specs(width, layers):
        x = ChoiceLayer(spec.index, spec.inp, spec.oup, spec.stride, binary=binary,
                        name=f"choice{spec.index}")(x)
    outputs = _tail(x, last, binary, False, include_top, num_classes, dropout)
    return zl.finish_model(inputs, outputs,
                           name or ("spos_binary_supernet" if binary else "spos_supernet"),
                           weights, input_tensor)


def choice_layers(supernet) -> List[ChoiceLayer]:
    layers = [layer for layer in supernet.layers if isinstance(layer, ChoiceLayer)]
    if len(layers) not in DEPTHS:
        raise InvalidInputError(f"{supernet.name} is not an SPOS supernet ({len(layers)} "
                                f"choice layers instead of one of {DEPTHS}).")
    return sorted(layers, key=lambda layer: layer.spec.index)


def path_array(blocks: Sequence[int], scales: Sequence[int]) -> np.ndarray:
    """A path as the ``[layers, 2]`` int32 array (block, scale index) the supernet reads."""
    return np.stack([np.asarray(blocks, np.int32), np.asarray(scales, np.int32)], axis=1)


def set_path(supernet, blocks: Sequence[int], scales: Sequence[int]) -> None:
    """Select one path of the supernet (eagerly; in a tf.function use :func:`assign_path`)."""
    path, layers = path_array(blocks, scales), len(choice_layers(supernet))
    if len(path) != layers:
        raise InvalidInputError(f"A path of {len(path)} layers for a supernet of {layers} "
                                f"choice layers.")
    assign_path(supernet, tf.constant(path))


def assign_path(supernet, path) -> None:
    """Assign a ``[layers, 2]`` int32 tensor of (block, scale) to the choice layers."""
    for i, layer in enumerate(choice_layers(supernet)):
        layer.choice.assign(path[i])


def inherit_weights(supernet, model, arch: str) -> int:
    """Copy the weights of path ``arch`` out of the supernet into the stand-alone ``model``.

    Mid-channel weights are sliced to the first ``c`` channels; the stand-alone
    model's BN gamma / beta (the supernet has none) are set to 1 / 0. Returns the
    number of tensors copied.
    """
    blocks, scales, _ = parse_arch(arch)
    by_name = {layer.name: layer for layer in model.layers}
    pairs = [(supernet.get_layer("stem_conv"), by_name["stem_conv"]),
             (supernet.get_layer("stem_bn"), by_name["stem_bn"]),
             (supernet.get_layer("last_conv"), by_name["last_conv"]),
             (supernet.get_layer("last_bn"), by_name["last_bn"])]
    for extra in ("stem_act", "last_act", "predictions"):
        if extra in by_name:
            pairs.append((supernet.get_layer(extra), by_name[extra]))
    copied = 0
    for src, dst in pairs:
        copied += _copy_by_name([src], dst)
    for choice, block in zip(choice_layers(supernet), blocks):
        for op_name, sources in choice.op_layers(block).items():
            copied += _copy_by_name(sources, by_name[f"layer{choice.spec.index}_{op_name}"])
    return copied


def _short(weight_name: str) -> str:
    return weight_name.split("/")[-1].split(":")[0]


def _copy_by_name(sources, target) -> int:
    pool = {}
    for layer in sources:
        for weight in layer.weights:
            pool[_short(weight.name)] = weight
    count = 0
    for weight in target.weights:
        short = _short(weight.name)
        if short in pool:
            value = pool[short].numpy()
            value = value[tuple(slice(0, d) for d in weight.shape)]
            weight.assign(value)
            count += 1
        elif short == "gamma":
            weight.assign(np.ones(weight.shape, weight.dtype.as_numpy_dtype))
        elif short == "beta":
            weight.assign(np.zeros(weight.shape, weight.dtype.as_numpy_dtype))
        else:
            raise InvalidInputError(f"No supernet weight for {weight.name}.")
    return count


# ----------------------------------------------------------------------------- entries

_COMMON = dict(paper=SPOS, family="spos", input_size=(224, 224, 3), min_input_size=16)


@register_model("spos", binary=False, default_recipe="spos_sgd",  # the release's retraining
                description="SPOS searched ShuffleNetV2 network (arch string; default: the "
                            "released block + channel search)",
                reported={"imagenet2012": {"top1": 74.9, "source": "ShuffleNet-Series OneShot "
                                                                   "README, 328M FLOPs"}},
                **_COMMON)
def spos(*, include_top=True, weights=None, input_shape=None, input_tensor=None,
         num_classes=1000, arch: str = DEFAULT_ARCH, width: Optional[float] = None,
         dropout: float = DROPOUT, bn_affine: bool = True, padding: str = "same"):
    """SPOS searched network (ShuffleNetV2 choice blocks), built from an architecture string."""
    return build_spos(arch, width=width, binary=False, bn_affine=bn_affine, dropout=dropout,
                      include_top=include_top, weights=weights, input_shape=input_shape,
                      input_tensor=input_tensor, num_classes=num_classes, padding=padding)


@register_model("spos_supernet", binary=False, default_recipe="resnet_adam", extra={"supernet": True},
                description="SPOS one-shot supernet: 20 choice layers, 4 blocks x 8 channel "
                            "scales each, BN without affine", **_COMMON)
def spos_supernet(*, include_top=True, weights=None, input_shape=None, input_tensor=None,
                  num_classes=1000, width: float = 1.0, dropout: float = DROPOUT,
                  layers: int = NUM_LAYERS):
    """SPOS one-shot supernet (path in the choice layers' variables; ``layers`` 5-20)."""
    return build_supernet(width=width, binary=False, dropout=dropout, include_top=include_top,
                          weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                          num_classes=num_classes, layers=layers)


@register_model("spos_binary", binary=True, default_recipe="larq_zoo_adam",
                description="SPOS network with binary 1x1 convs (RSign / RPReLU), from an arch "
                            "string", **_COMMON)
def spos_binary(*, include_top=True, weights=None, input_shape=None, input_tensor=None,
                num_classes=1000, arch: str = DEFAULT_ARCH, width: Optional[float] = None,
                dropout: float = DROPOUT, bn_affine: bool = True):
    """Binary SPOS network: binary 1x1 convs, real depthwise convs, stem and classifier."""
    return build_spos(arch, width=width, binary=True, bn_affine=bn_affine, dropout=dropout,
                      include_top=include_top, weights=weights, input_shape=input_shape,
                      input_tensor=input_tensor, num_classes=num_classes)


@register_model("spos_binary_supernet", binary=True, default_recipe="larq_zoo_adam",
                extra={"supernet": True},
                description="Binary SPOS supernet (binary 1x1 convs, RSign / RPReLU)", **_COMMON)
def spos_binary_supernet(*, include_top=True, weights=None, input_shape=None, input_tensor=None,
                         num_classes=1000, width: float = 1.0, dropout: float = DROPOUT,
                         layers: int = NUM_LAYERS):
    """Binary SPOS one-shot supernet (``layers`` 5-20)."""
    return build_supernet(width=width, binary=True, dropout=dropout, include_top=include_top,
                          weights=weights, input_shape=input_shape, input_tensor=input_tensor,
                          num_classes=num_classes, layers=layers)
