"""The public API: load, list_models, info."""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional

from zoo import settings

settings.ensure_legacy_keras()  # Keras 2, and TensorFlow imported quietly, before the models load

from zoo import models  # noqa: E402,F401  (registers the model entries)
from zoo.costs import model_costs  # noqa: E402
from zoo.errors import InvalidInputError  # noqa: E402
from zoo.hub.loading import load_into, resolve  # noqa: E402
from zoo.hub.spec import attach_manifest, split_tag  # noqa: E402
from zoo.layers import check_input_shape  # noqa: E402
from zoo.memory import discarded_models  # noqa: E402
from zoo.schema import check_call_arguments  # noqa: E402
from zoo.registry import MODELS, ModelEntry  # noqa: E402

attach_manifest(strict=False)  # weights/manifest.json (or $ZOO_MANIFEST) -> entry.weights


def get_entry(name: str) -> ModelEntry:
    """The registry record of a model name or alias."""
    return MODELS.get(name)


def list_models(pattern: str = "*", exclude: Optional[str] = None, pretrained: bool = False) -> List[str]:
    """Registered model names matching a shell wildcard, naturally sorted."""
    names = MODELS.names(pattern, exclude)
    if pretrained:
        names = [n for n in names if MODELS.get(n).weights]
    return names


def load(
    name: str,
    weights=None,
    include_top: bool = True,
    input_shape=None,
    input_tensor=None,
    num_classes: Optional[int] = None,
    **overrides,
):
    """Build a registered model, keras.applications style.

    ``name`` may carry a weights tag (``"birealnet18.fashion_mnist"``).
    ``weights``: ``None`` (random init), a published tag of the entry
    (``"fashion_mnist"``, ``"imagenet"``), a path to an h5 weights file or a
    ``zoo train`` run directory; an explicit ``weights`` wins over a tag in the
    name. With a tag, ``input_shape`` and ``num_classes`` default to the weight
    set's. ``overrides`` go to the builder (e.g. ``activation="clip"`` for
    Bi-Real Net's real-valued pre-training).
    """
    name, tag = split_tag(name)
    entry = get_entry(name)
    resolved = resolve(entry, tag if weights is None else weights, include_top)
    input_shape, num_classes = resolved.shapes(input_shape, num_classes, input_tensor)
    if input_shape is not None:
        input_shape = tuple(input_shape)
    shape = input_shape if input_shape is not None or input_tensor is None else input_tensor.shape[1:]
    if shape is not None:  # the entry's record holds its limits: one clear error before building
        check_input_shape(shape, entry.min_input_size, entry.input_multiple)
    if int(num_classes) < 1:
        raise InvalidInputError(f"num_classes must be positive, got {num_classes}.")
    overrides = check_call_arguments(
        entry.name, entry.builder, overrides, " (model settings: --set model_overrides={...}, --model-arg)",
        skip=("include_top", "weights", "input_shape", "input_tensor", "num_classes"), open_keywords=True,
        types=False)
    model = entry.builder(
        include_top=include_top,
        weights=resolved.builder_weights,
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=int(num_classes),
        **{**resolved.model_overrides, **overrides},
    )
    load_into(model, resolved)
    return model


@functools.lru_cache(maxsize=None)
def _costs_at_paper_size(name: str) -> Dict[str, Any]:
    entry = get_entry(name)
    with discarded_models():  # a table of every entry builds them all in one process
        model = load(name, input_shape=entry.input_size, num_classes=1000)
        costs = model_costs(model)
        del model
    return costs


def info(name: str, costs: bool = True) -> Dict[str, Any]:
    """Metadata of a model: paper, reported accuracy, params (binary/real) and OPs."""
    entry = get_entry(name)
    record: Dict[str, Any] = {
        "name": entry.name,
        "aliases": list(entry.aliases),
        "family": entry.family,
        "description": entry.description,
        "paper": None if entry.paper is None else {
            "arxiv": entry.paper.arxiv, "title": entry.paper.title,
            "venue": entry.paper.venue, "url": entry.paper.url,
        },
        "reported": entry.reported,
        "input_size": list(entry.input_size),
        "min_input_size": entry.min_input_size,
        "input_multiple": entry.input_multiple,
        "default_recipe": entry.default_recipe,
        "weights": sorted(entry.weights),
    }
    if costs and entry.extra.get("supernet"):
        # generated or masked kernels are not conv layers a profile can count: any number
        # would be a part of the cost (the searched network's entry has the real ones)
        record["costs"] = None
        record["costs_note"] = ("not meaningful for a supernet / PruningNet: its generated or "
                                "masked kernels are not counted; see the searched network's entry")
    elif costs:
        record["costs"] = dict(_costs_at_paper_size(entry.name))
        if "release_flops" in entry.extra:  # as the release's own script counts them
            record["costs"]["release_flops"] = int(entry.extra["release_flops"])
    return record
