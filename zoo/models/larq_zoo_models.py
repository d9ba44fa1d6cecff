"""larq-zoo's literature and sota models, registered as zoo entries.

The builders are larq-zoo's own (``larq_zoo.literature`` / ``larq_zoo.sota``);
this file only gives them names and metadata. Their ImageNet weights are manifest
records (larq-zoo's URLs and hashes), fetched and loaded by ``zoo.load``.
"""
from __future__ import annotations

import larq_zoo as lqz

from zoo.layers import check_builder_weights
from zoo.registry import register_model
from zoo.papers import BDENSE, BNN, DOREFA, LARQ_ZOO_BIREAL, LCE, MELIUS, R2B, XNOR



def _wrap(name, fn, paper, top1, top5, min_input_size=16, aliases=(), input_multiple=1):
    """Register a larq-zoo model function under ``name``."""

    def builder(*, include_top=True, weights=None, input_shape=None, input_tensor=None,
                num_classes=1000):
        # "imagenet" (no manifest record for it): larq-zoo's own verified download
        check_builder_weights(weights, allowed=(None, "imagenet"))
        return fn(include_top=include_top, weights=weights, input_shape=input_shape,
                  input_tensor=input_tensor, num_classes=num_classes)

    builder.__name__ = name
    builder.__doc__ = f"{fn.__name__} from larq-zoo ({paper.title})."
    register_model(
        name, aliases=aliases, paper=paper, family="larq_zoo",
        reported={"imagenet2012": {"top1": top1, "top5": top5, "source": "larq-zoo"}},
        min_input_size=min_input_size, input_multiple=input_multiple,
        default_recipe="larq_zoo_adam",
        extra={"larq_zoo": f"{fn.__module__}.{fn.__name__}", "larq_zoo_weights": "imagenet"},
    )(builder)
    return builder


# ImageNet top-1/top-5 of larq-zoo's released weights (larq-zoo docstrings / docs).
_wrap("quicknet", lqz.sota.QuickNet, LCE, 63.3, 84.6, min_input_size=32)
_wrap("quicknet_small", lqz.sota.QuickNetSmall, LCE, 59.4, 81.8, min_input_size=32)
_wrap("quicknet_large", lqz.sota.QuickNetLarge, LCE, 66.9, 87.0, min_input_size=32)
_wrap("real_to_binary_net", lqz.literature.RealToBinaryNet, R2B, 65.01, 85.72, aliases=("realtobinarynet",))
_wrap("binary_densenet28", lqz.literature.BinaryDenseNet28, BDENSE, 60.91, 82.83)
_wrap("binary_densenet37", lqz.literature.BinaryDenseNet37, BDENSE, 62.89, 84.19)
_wrap("binary_densenet37_dilated", lqz.literature.BinaryDenseNet37Dilated, BDENSE, 64.34, 85.15)
_wrap("binary_densenet45", lqz.literature.BinaryDenseNet45, BDENSE, 64.59, 85.21)
_wrap("meliusnet22", lqz.literature.MeliusNet22, MELIUS, 62.4, 83.9)
# its last conv is a 6x6 "valid" one after a /4 stem and three valid 3x3/2 pools
_wrap("xnornet", lqz.literature.XNORNet, XNOR, 44.96, 69.18, min_input_size=224)
_wrap("dorefanet", lqz.literature.DoReFaNet, DOREFA, 53.39, 76.50, min_input_size=64)
_wrap("binary_alexnet", lqz.literature.BinaryAlexNet, BNN, 36.30, 61.53, min_input_size=64)
# its strided shortcuts ('valid' 2x2 avg-pools) and convs ('same') disagree on odd maps
_wrap("binary_resnet_e18", lqz.literature.BinaryResNetE18, BDENSE, 58.32, 80.79,
      aliases=("binaryresnete18",), input_multiple=8)
_wrap("larq_zoo_birealnet", lqz.literature.BiRealNet,
      LARQ_ZOO_BIREAL, 57.47, 79.84)
