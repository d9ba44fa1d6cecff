"""Release layouts of ReActNet-A (official and AdamBNN files) and ReAct-ResNet-18, as data.

Names are those of the official PyTorch code: ``mobilenet/2_step2/reactnet.py`` and
``resnet/2_step2/birealnet.py`` of liuzechun/ReActNet, ``step2/reactnet.py`` of
liuzechun/AdamBNN. Targets are the layers of :mod:`zoo.models.reactnet`. Both releases
pad symmetrically: the imported models are built with ``padding="symmetric"``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

from zoo.errors import WeightsError
from zoo.imports.mapping import Rule

# ReActNet-A's stem and head (`firstconv3x3` = feature.0, `fc`)
MOBILENET_STEM = (("feature.0.conv1.weight", "stem_conv.kernel", "conv"),
                  ("feature.0.bn1", "stem_conv_bn", "bn"))
HEAD = (("fc.weight", "predictions.kernel", "dense"), ("fc.bias", "predictions.bias", "vector"))
# one `BasicBlock` (feature.i -> block{i}); {w}/{binary}: the binary kernels' name and kind
MOBILENET_3X3 = (
    ("move11.bias", "{b}_conv3x3.input_quantizer.bias", "bias4d"),
    ("binary_3x3.{w}", "{b}_conv3x3.kernel", "{binary}"),
    ("bn1", "{b}_conv3x3_bn", "bn"),
    ("move12.bias", "{b}_rprelu1.bias_in", "bias4d"),
    ("prelu1.weight", "{b}_rprelu1.alpha", "vector"),
    ("move13.bias", "{b}_rprelu1.bias_out", "bias4d"),
)
MOBILENET_1X1_SAME = (  # Cin == Cout
    ("move21.bias", "{b}_conv1x1.input_quantizer.bias", "bias4d"),
    ("binary_pw.{w}", "{b}_conv1x1.kernel", "{binary}"),
    ("bn2", "{b}_conv1x1_bn", "bn"),
)
MOBILENET_1X1_DOUBLING = (  # Cout == 2 Cin: two 1x1 convs on one RSign, concatenated
    ("move21.bias", "{b}_rsign2.bias", "bias4d"),
    ("binary_pw_down1.{w}", "{b}_conv1x1_1.kernel", "{binary}"),
    ("binary_pw_down2.{w}", "{b}_conv1x1_2.kernel", "{binary}"),
    ("bn2_1", "{b}_conv1x1_1_bn", "bn"),
    ("bn2_2", "{b}_conv1x1_2_bn", "bn"),
)
MOBILENET_OUT = (
    ("move22.bias", "{b}_rprelu2.bias_in", "bias4d"),
    ("prelu2.weight", "{b}_rprelu2.alpha", "vector"),
    ("move23.bias", "{b}_rprelu2.bias_out", "bias4d"),
)
# the binary kernels per source: the official code keeps them flat ([Cout*Cin*k*k, 1]
# `weights`), AdamBNN's as 4-D `weight`
MOBILENET_SOURCES = {"official": ("weights", "flat_conv"), "adambnn": ("weight", "conv")}

# ReAct-ResNet-18 (`BiRealNet` with `BasicBlock`s: layer{s}.{j} -> stage{s}_block{j+1})
RESNET_STEM = (("conv1.weight", "stem_conv.kernel", "conv"), ("bn1", "stem_conv_bn", "bn"))
RESNET_BLOCK = (
    ("move0.bias", "{b}_conv3x3.input_quantizer.bias", "bias4d"),
    ("binary_conv.weight", "{b}_conv3x3.kernel", "conv"),
    ("bn1", "{b}_conv3x3_bn", "bn"),
    ("move1.bias", "{b}_rprelu.bias_in", "bias4d"),
    ("prelu.weight", "{b}_rprelu.alpha", "vector"),
    ("move2.bias", "{b}_rprelu.bias_out", "bias4d"),
)
RESNET_DOWNSAMPLE = (("downsample.1.weight", "{b}_downsample.kernel", "conv"),
                     ("downsample.2", "{b}_downsample_bn", "bn"))
RESNET_REPEATS = (4, 4, 4, 4)

MOBILENET_STEM_WIDTH = 32  # official `stage_out_channel[0]`
RESNET_STEM_WIDTH = 64  # official `self.inplanes`


def _layer_names(model) -> set:
    return {layer.name for layer in model.layers}


def _fill(table, **values) -> List[Rule]:
    return [Rule(key.format(**values), target.format(**values), kind.format(**values))
            for key, target, kind in table]


def mobilenet_rules(model, source: str = "official", include_top: bool = True) -> List[Rule]:
    """ReActNet-A: ``feature.0`` (stem), ``feature.1..13`` (blocks), ``fc``."""
    if source not in MOBILENET_SOURCES:
        raise WeightsError(f"ReActNet-A releases come as {', '.join(MOBILENET_SOURCES)}, not {source!r}.")
    weight, binary = MOBILENET_SOURCES[source]
    names = _layer_names(model)
    rules = _fill(MOBILENET_STEM)
    index = 1
    while f"block{index}_conv3x3" in names:
        values = dict(b=f"block{index}", w=weight, binary=binary)
        tail = MOBILENET_1X1_DOUBLING if f"block{index}_rsign2" in names else MOBILENET_1X1_SAME
        for table in (MOBILENET_3X3, tail, MOBILENET_OUT):
            rules += [Rule(f"feature.{index}.{r.key}", r.target, r.kind) for r in _fill(table, **values)]
        index += 1
    return rules + (_fill(HEAD) if include_top else [])


def resnet18_rules(model, source: str = "official", include_top: bool = True) -> List[Rule]:
    """ReAct-ResNet-18: ``conv1``/``bn1``, ``layer1..4.{0..3}``, ``fc``."""
    if source != "official":
        raise WeightsError(f"ReAct-ResNet-18 has one release (official), not {source!r}.")
    names = _layer_names(model)
    rules = _fill(RESNET_STEM)
    for stage, blocks in enumerate(RESNET_REPEATS, start=1):
        for block in range(blocks):
            b = f"stage{stage}_block{block + 1}"
            table = RESNET_BLOCK + (RESNET_DOWNSAMPLE if f"{b}_downsample" in names else ())
            rules += [Rule(f"layer{stage}.{block}.{r.key}", r.target, r.kind)
                      for r in _fill(table, b=b)]
    return rules + (_fill(HEAD) if include_top else [])


def _width(shapes: Mapping, key: str, full: int) -> Dict[str, object]:
    """Builder arguments a release's shapes fix: the width (a fraction for reduced copies)
    and the number of classes."""
    for needed, shape in ((key, [full, 3, "k", "k"]), ("fc.weight", ["classes", "width"])):
        if needed not in shapes:
            first = next(iter(shapes), None)
            seen = f"; its first tensor is {first!r} {list(shapes[first])}" if first else ""
            raise WeightsError(
                f"The checkpoint is not this network's release: it has no tensor {needed!r} "
                f"(shape {shape} at full width){seen}. Check the model name and --source.")
    stem, classes = int(shapes[key][0]), int(shapes["fc.weight"][0])
    overrides: Dict[str, object] = {"num_classes": classes}
    if stem != full:
        overrides["width_multiplier"] = stem / full
    return overrides


def mobilenet_overrides(shapes: Mapping) -> Dict[str, object]:
    return _width(shapes, "feature.0.conv1.weight", MOBILENET_STEM_WIDTH)


def resnet18_overrides(shapes: Mapping) -> Dict[str, object]:
    return _width(shapes, "conv1.weight", RESNET_STEM_WIDTH)
