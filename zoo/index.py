"""A static index of the model registry, ``zoo/models/index.json``: what ``zoo list``
shows of every model (name, aliases, family, paper, reported ImageNet top-1), so that
listing needs neither TensorFlow nor the model files (the registry fills only as those
are imported, which takes seconds). The published weight tags come from the manifest.

``tests/test_cli.py`` checks that the index matches the registry; after adding or
changing a model entry, regenerate it:
``python -c "import zoo.api, zoo.index; zoo.index.write_index()"``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from zoo.hub.spec import read_manifest
from zoo.registry import MODELS, Registry

INDEX_FILE = Path(__file__).resolve().parent / "models" / "index.json"


def entry_record(entry) -> Dict[str, Any]:
    """The indexed facts of a registry entry."""
    return {"name": entry.name, "aliases": list(entry.aliases), "family": entry.family,
            "paper": entry.paper.arxiv if entry.paper else "",
            "imagenet_top1": entry.reported.get("imagenet2012", {}).get("top1")}


def registry_records() -> List[Dict[str, Any]]:
    """The records of every model in the (filled) registry, by name."""
    return [entry_record(MODELS.get(name)) for name in MODELS.names()]


def write_index(path: Path = INDEX_FILE) -> Path:
    """Write the index of the registry as it is now (import zoo.api first to fill it)."""
    path.write_text(json.dumps(registry_records(), indent=1) + "\n", encoding="utf-8")
    return path


def read_index(path: Path = INDEX_FILE) -> Registry:
    """The index as a registry of records (names, aliases and wildcards as MODELS)."""
    index: Registry = Registry("model")
    for record in json.loads(path.read_text(encoding="utf-8")):
        index.register(record["name"], record, record["aliases"])
    return index


def list_records(pattern: str = "*", pretrained: bool = False) -> List[Dict[str, Any]]:
    """``zoo list``'s records: the index's, with each model's published weight tags."""
    index = read_index()
    tags: Dict[str, List[str]] = {}
    for spec in read_manifest().values():
        if spec.model in index:
            tags.setdefault(index.canonical(spec.model), []).append(spec.tag)
    records = [{**index.get(name), "weights": sorted(tags.get(name, []))}
               for name in index.names(pattern)]
    return [r for r in records if r["weights"]] if pretrained else records
