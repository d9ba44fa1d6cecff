"""Release layout of SPOS's searched network (megvii-model/SinglePathOneShot,
``src/Evaluation/template/network.py``: ``ShuffleNetV2_OneShot``), as data.

The release's architecture is read from the file: each ``features.i`` is Xception when
it has ``branch_main.12`` (its third pointwise conv), else Shuffle-k with k its depthwise
kernel's size; its channel scale is its mid channels over half its output width. The
``branch_main`` / ``branch_proj`` indices are the positions of the ops in
:func:`zoo.models.spos.block_ops` (the same order, ReLUs included). The release reads
BGR images on the 0-255 scale (``ToBGRTensor``, no normalisation): the stem's input
channels are reversed on import, so the model reads RGB, and the record's
preprocessing keeps the 0-255 scale.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

from zoo.errors import WeightsError
from zoo.imports.mapping import Rule
from zoo.models.spos import BLOCKS, KERNELS, LAST_WIDTH, block_ops, format_arch, layer_specs

STEM = (("first_conv.0.weight", "stem_conv.kernel", "conv_bgr"), ("first_conv.1", "stem_bn", "bn"))
TAIL = (("conv_last.0.weight", "last_conv.kernel", "conv"), ("conv_last.1", "last_bn", "bn"))
HEAD = (("classifier.0.weight", "predictions.kernel", "dense"),)
OP_KINDS = {"pw": "conv", "dw": "depthwise", "bn": "bn"}  # "act": no tensors
WEIGHT = {"conv": ".kernel", "depthwise": ".depthwise_kernel", "bn": ""}
XCEPTION_MARK = "branch_main.12.weight"  # only Xception's main branch is that long


def _block_of(model, index: int) -> int:
    names = {layer.name for layer in model.layers}
    if f"layer{index}_dw1" in names:
        return BLOCKS.index("xception")
    kernel = model.get_layer(f"layer{index}_dw").kernel_size[0]
    return KERNELS.index(kernel)


def rules(model, source: str = "official", include_top: bool = True) -> List[Rule]:
    if source != "official":
        raise WeightsError(f"SPOS has one release (official), not {source!r}.")
    names = {layer.name for layer in model.layers}
    found = [Rule(*r) for r in STEM]
    index = 0
    while f"layer{index}_concat" in names:
        stride = 2 if f"layer{index}_proj_dw" in names else 1
        positions = {"main": 0, "proj": 0}
        for op in block_ops(_block_of(model, index), stride):
            branch = "proj" if op.name.startswith("proj_") else "main"
            position = positions[branch]
            positions[branch] += 1
            if op.kind in OP_KINDS:
                key = f"features.{index}.branch_{branch}.{position}"
                kind = OP_KINDS[op.kind]
                found.append(Rule(key if kind == "bn" else f"{key}.weight",
                                  f"layer{index}_{op.name}" + WEIGHT[kind],
                                  kind))
        index += 1
    found += [Rule(*r) for r in TAIL]
    return found + ([Rule(*r) for r in HEAD] if include_top else [])


def overrides(shapes: Mapping) -> Dict[str, object]:
    """The builder arguments the file fixes: its architecture, width and classes."""
    for key in ("conv_last.0.weight", "classifier.0.weight", "features.0.branch_main.0.weight"):
        if key not in shapes:
            first = next(iter(shapes), None)
            seen = f"; its first tensor is {first!r} {list(shapes[first])}" if first else ""
            raise WeightsError(f"The checkpoint is not SPOS's released network: it has no "
                               f"tensor {key!r}{seen}. Check the model name.")
    # the last conv's width is the one that is not rounded up to a minimum
    width = int(shapes["conv_last.0.weight"][0]) / LAST_WIDTH
    layers = len({k.split(".")[1] for k in shapes if k.startswith("features.")})
    try:
        specs = layer_specs(width, layers)
    except Exception as error:  # noqa: BLE001 - a depth the space does not have
        raise WeightsError(f"The checkpoint has {layers} choice layers: {error}") from None
    blocks, scales = [], []
    for spec in specs:
        prefix = f"features.{spec.index}.branch_main"
        if f"{prefix}.{XCEPTION_MARK.split('.', 1)[1]}" in shapes:
            block, mid = BLOCKS.index("xception"), int(shapes[f"{prefix}.2.weight"][0])
        else:
            kernel = int(shapes.get(f"{prefix}.3.weight", (0, 0, 0, 0))[-1])
            if kernel not in KERNELS[:3]:
                raise WeightsError(f"features.{spec.index} of the checkpoint is no SPOS block "
                                   f"(depthwise kernel {kernel}).")
            block, mid = KERNELS.index(kernel), int(shapes[f"{prefix}.0.weight"][0])
        scale = next((i for i in range(8) if spec.mid(i) == mid), None)
        if scale is None:
            raise WeightsError(f"features.{spec.index} of the checkpoint has {mid} mid channels, "
                               f"which no SPOS channel scale gives at this width.")
        blocks.append(block)
        scales.append(scale)
    found: Dict[str, object] = {"arch": format_arch(blocks, scales),
                                "num_classes": int(shapes["classifier.0.weight"][0])}
    if width != 1.0:
        found["width"] = width
    return found
