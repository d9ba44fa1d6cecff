"""The papers' released ImageNet checkpoints that ``zoo import`` turns into weight sets.

Each :class:`Release` says where its authors publish the file (the repository README's
link; the file itself is never redistributed by the zoo), the top-1 the release reports,
its license status, the layout its tensors follow (:mod:`zoo.imports`), the builder
arguments it needs and how its images are prepared. An imported set is a record of the
local manifest ``$ZOO_HOME/imported/manifest.json`` (:func:`imported_manifest_path`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from zoo import settings
from zoo.errors import WeightsError

# torchvision's ImageNet evaluation, used by the official training scripts (`train.py`:
# Resize(256), CenterCrop(224), Normalize(mean, std)); the keys are the weight records'
IMAGENET_TORCHVISION = {
    "dataset": "imagenet2012", "native_shape": [None, None, 3], "scale": 255.0,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
    "resize": "shorter_side_center_crop", "crop_pct": 0.875, "interpolation": "bilinear",
    "channels": 3,
}
# SPOS's evaluation (`OpencvResize(256)`, `CenterCrop(224)`, `ToBGRTensor`): 0-255 values,
# no normalisation; BGR is taken care of by the imported stem (input channels reversed)
IMAGENET_SPOS = {**IMAGENET_TORCHVISION, "mean": [0.0, 0.0, 0.0], "std": [1 / 255.0] * 3}
NO_LICENSE = "none stated (the repository has no LICENSE file): ask the authors before redistributing"


@dataclasses.dataclass(frozen=True)
class Release:
    model: str
    source: str
    tag: str
    title: str
    url: str  # the download link of the repository's README
    repository: str
    top1: float  # as the release reports it
    license: str
    layout: str  # a layout name of zoo.imports.LAYOUTS
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preprocessing: Mapping[str, Any] = dataclasses.field(default_factory=lambda: IMAGENET_TORCHVISION)
    input_shape: tuple = (224, 224, 3)

    @property
    def command(self) -> str:
        source = "" if self.source == "official" else f" --source {self.source}"
        return f"zoo import {self.model} CHECKPOINT{source}"


_METAPRUNING = "https://github.com/liuzechun/MetaPruning"
_SYMMETRIC = {"padding": "symmetric"}  # PyTorch pads 1 on every side of a strided 3x3 conv
RELEASES: List[Release] = [
    Release("reactnet_a", "official", "imagenet", "ReActNet-A (official release)",
            "https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
            "EW1FVkAKN5dJg1ns_CcMtQoBJAy1Yxx-b7lpaTFjTJIUKw?e=oyebWy",
            "https://github.com/liuzechun/ReActNet", 69.5, NO_LICENSE, "reactnet_a_official",
            _SYMMETRIC),
    Release("reactnet_a", "adambnn", "imagenet_adambnn", "ReActNet-A trained by AdamBNN",
            "https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
            "EXEsfAt42gNLqfzt09BMoTwBbYT6sxH5VkZ_9DmBWhJxXg?e=fd4f5v",
            "https://github.com/liuzechun/AdamBNN", 70.5, NO_LICENSE, "reactnet_a_adambnn",
            _SYMMETRIC),
    Release("reactnet18", "official", "imagenet", "ReAct-ResNet-18 (official release)",
            "https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
            "EY9P7mxs-8BLkTlqMZif4s4BnNWcKbUnvqeA_CvN3c9q4w?e=IpUyF4",
            "https://github.com/liuzechun/ReActNet", 65.9, NO_LICENSE, "reactnet18_official",
            _SYMMETRIC),
    # README: Evaluation/$ARCHITECTURE, arch (2,1,0,1,2,0,2,0,2,0,2,3,0,0,0,0,3,2,3,3), top-1 err 25.6
    Release("spos", "official", "imagenet", "SPOS searched network (official Evaluation release)",
            "https://1drv.ms/u/s!Am_mmG2-KsrnajesvSdfsq_cN48?e=aHVppN",
            "https://github.com/megvii-model/SinglePathOneShot", 74.4, "Apache-2.0",
            "spos_official", _SYMMETRIC, IMAGENET_SPOS),
    # README "Models", MobileNet v1 (Meta Pruning: 70.9% 316M, 66.1% 142M, 57.2% 41M); MIT LICENSE;
    # evaluating/evaluate.py: Resize 256, CenterCrop 224, ImageNet mean/std (the default)
    Release("metapruning_mobilenet_v1_0_75", "official", "imagenet",
            "MetaPruning MobileNetV1 0.75x (official release)",
            "https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
            "EXuAHjKVTa9Gkj4ZHET0s58BU9QGI9O88iEVLopWu-usdw?e=b0VcpJ",
            _METAPRUNING, 70.9, "MIT", "metapruning_v1_0_75", _SYMMETRIC),
    # the 0.5x / 0.25x genomes are not in the repository: read from the files' widths
    Release("metapruning_mobilenet_v1", "0.5x", "imagenet_0_5x",
            "MetaPruning MobileNetV1 0.5x (official release)",
            "https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
            "ERb0bJ7ggL5Du8v4mrLeVlkBEontkyhTWdDKIoMZQwHC2w?e=5pXdDh",
            _METAPRUNING, 66.1, "MIT", "metapruning_v1", _SYMMETRIC),
    Release("metapruning_mobilenet_v1", "0.25x", "imagenet_0_25x",
            "MetaPruning MobileNetV1 0.25x (official release)",
            "https://hkustconnect-my.sharepoint.com/:u:/g/personal/zliubq_connect_ust_hk/"
            "EQpBwbDTmCxLmpG8BCzG3xMBJsRoYOURAwG53HzkIqOzKQ?e=UrABgZ",
            _METAPRUNING, 57.2, "MIT", "metapruning_v1", _SYMMETRIC),
]


def releases_for(model: str) -> List[Release]:
    return [r for r in RELEASES if r.model == model]


def find_release(model: str, source: Optional[str] = None, tag: Optional[str] = None) -> Optional[Release]:
    """The release of ``model`` from ``source`` (default: official), or the one a tag names."""
    for release in releases_for(model):
        if (source is None or release.source == source) and (tag is None or release.tag == tag):
            return release
    return None


def get_release(model: str, source: str = "official") -> Release:
    release = find_release(model, source)
    if release is None:
        known = ", ".join(f"{r.model} --source {r.source}" for r in RELEASES)
        raise WeightsError(f"No released checkpoint of {model} from {source!r} is known: the "
                           f"importable releases are {known}.")
    return release


def not_imported_error(model: str, tag: str) -> Optional[WeightsError]:
    """The error of ``zoo.load(model, weights=tag)`` before the release was imported."""
    release = find_release(model, tag=tag)
    if release is None:
        return None
    return WeightsError(
        f"{model}.{tag} ({release.title}, {release.top1}% top-1 reported) is not imported yet: "
        f"download the checkpoint from {release.url} (linked from {release.repository}), then "
        f"run `{release.command.replace('CHECKPOINT', 'FILE')}`.")


def imported_dir() -> Path:
    """Where ``zoo import`` writes weight files and its manifest: ``$ZOO_HOME/imported``."""
    return settings.cache_root() / "imported"


def imported_manifest_path() -> Path:
    return imported_dir() / "manifest.json"


def describe(release: Release) -> Dict[str, Any]:
    """The ``release`` part of an imported record (the checkpoint's hash is added there)."""
    return {"title": release.title, "url": release.url, "repository": release.repository,
            "source": release.source, "layout": release.layout, "reported_top1": release.top1}
