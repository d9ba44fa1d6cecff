"""Release layout of MetaPruning's pruned MobileNetV1 (liuzechun/MetaPruning,
``mobilenetv1/evaluating/mobilenet_v1.py``: ``MobileNetV1``), as data.

``feature.0`` is the stem (``conv_3x3``: ``conv1``, ``bn1``), ``feature.1`` ... ``feature.13``
the depthwise-separable blocks (``dw3x3_pw1x1``: ``dwconv_3x3``, ``bn1``, ``pwconv_1x1``,
``bn2``), ``fc`` the classifier; the targets are the layers of
:func:`zoo.models.metapruning.network_spec` (``stem``, ``block{i}_dw``, ``block{i}_pw``).
That code gives layer ``i`` (``i`` = 1..12) the width of gene ``rngs[i - 1]`` and the stem
that of the last gene; the zoo's genome is in slot order, so its gene ``i`` is the width of
slot ``i`` (the 0.75x entry's genome is the release's ``rngs`` so reordered). Block 13's
1024 channels are not pruned.

The released 0.5x and 0.25x files have no genome in the repository: :func:`v1_overrides`
reads it from the file, each slot's width being its output channels (a width several
percents floor to is read as the smallest of them: the same network). The code pads
every side of its strided 3x3 convs: the imported models use ``padding="symmetric"``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

from zoo.errors import WeightsError
from zoo.imports.mapping import Rule
from zoo.models.metapruning import RATIO_PERCENTS, V1_BASE, channels_for, encode_arch

STEM = (("feature.0.conv1.weight", "stem.kernel", "conv"), ("feature.0.bn1", "stem_bn", "bn"))
# one `dw3x3_pw1x1` (feature.i -> block{i})
BLOCK = (("dwconv_3x3.weight", "block{i}_dw.depthwise_kernel", "depthwise"),
         ("bn1", "block{i}_dw_bn", "bn"),
         ("pwconv_1x1.weight", "block{i}_pw.kernel", "conv"),
         ("bn2", "block{i}_pw_bn", "bn"))
HEAD = (("fc.weight", "predictions.kernel", "dense"), ("fc.bias", "predictions.bias", "vector"))
BLOCKS = len(V1_BASE) - 1  # 13
# the tensor whose first dimension is slot i's width
SLOT_WIDTH = ["feature.0.conv1.weight"] + [f"feature.{i}.pwconv_1x1.weight"
                                           for i in range(1, BLOCKS + 1)]


def v1_rules(model, source: str = "official", include_top: bool = True) -> List[Rule]:
    found = [Rule(*r) for r in STEM]
    for i in range(1, BLOCKS + 1):
        found += [Rule(f"feature.{i}.{key}", target.format(i=i), kind) for key, target, kind in BLOCK]
    return found + ([Rule(*r) for r in HEAD] if include_top else [])


def _check_keys(shapes: Mapping) -> None:
    for key in (*SLOT_WIDTH, "fc.weight"):
        if key not in shapes:
            first = next(iter(shapes), None)
            seen = f"; its first tensor is {first!r} {list(shapes[first])}" if first else ""
            raise WeightsError(f"The checkpoint is not MetaPruning's released MobileNetV1: it has "
                               f"no tensor {key!r}{seen}. Check the model name.")


def v1_0_75_overrides(shapes: Mapping) -> Dict[str, object]:
    """The 0.75x entry's genome is fixed: the file fixes only the classes (its widths are
    checked tensor by tensor against the entry's)."""
    _check_keys(shapes)
    return {"num_classes": int(shapes["fc.weight"][0])}


def v1_overrides(shapes: Mapping) -> Dict[str, object]:
    """``arch`` (the genome the file's widths give, with the width when not 1.0: the last
    block's, which is not pruned) and the classes."""
    _check_keys(shapes)
    last = int(shapes[SLOT_WIDTH[-1]][0])
    width = last / V1_BASE[-1]
    bases = [max(1, int(b * width)) for b in V1_BASE]
    if bases[-1] != last:
        raise WeightsError(f"The checkpoint's last block has {last} channels, which no base "
                           f"width gives.")
    percents = []
    for slot, key in enumerate(SLOT_WIDTH[:-1]):
        got = int(shapes[key][0])
        percent = next((p for p in RATIO_PERCENTS if channels_for(bases[slot], p) == got), None)
        if percent is None:
            raise WeightsError(
                f"{key} of the checkpoint has {got} output channels, which no MetaPruning width "
                f"ratio (10%-100%) gives from {bases[slot]}: it is not a MetaPruning MobileNetV1.")
        percents.append(percent)
    return {"arch": encode_arch(percents, width), "num_classes": int(shapes["fc.weight"][0])}
