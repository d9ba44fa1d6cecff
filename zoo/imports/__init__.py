"""``zoo import``: a paper's released PyTorch checkpoint becomes a verified weight set.

:func:`import_checkpoint` reads the file without running its pickle
(:mod:`zoo.imports.torch_checkpoint`), moves every tensor into the zoo's model through
the release's layout (:mod:`zoo.imports.mapping`, one module of layouts per paper),
stores the hash-named weight files with ``zoo publish``'s writer and adds a record
(release URL, the checkpoint's sha256 and size, reported top-1, preprocessing, class
names) to ``$ZOO_HOME/imported/manifest.json``. ``zoo.load(NAME, weights=TAG)`` and the
commands that take weight sets see it from then on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from zoo.api import get_entry, load
from zoo.costs import model_costs
from zoo.errors import InvalidInputError, WeightsError
from zoo.hub.cache import log, sha256_file
from zoo.hub.releases import (
    Release, describe, get_release, imported_dir, imported_manifest_path,
)
from zoo.hub.spec import TAG_RE, WeightSpec, read_manifest_json, record_published
from zoo.imports import metapruning, reactnet, spos
from zoo.imports.mapping import shapes_of, transfer
from zoo.imports.torch_checkpoint import read_state_dict
from zoo.preprocessing import imagenet_labels
from zoo.publish import (
    remove_unrecorded, add_record, compact_binary_kernels, file_record,
    save_hashed, weight_set_record,
)

# layout name -> (rules(model, source, include_top), builder arguments from the shapes)
LAYOUTS: Dict[str, Tuple[Callable, Callable]] = {
    "reactnet_a_official": (reactnet.mobilenet_rules, reactnet.mobilenet_overrides),
    "reactnet_a_adambnn": (reactnet.mobilenet_rules, reactnet.mobilenet_overrides),
    "reactnet18_official": (reactnet.resnet18_rules, reactnet.resnet18_overrides),
    "spos_official": (spos.rules, spos.overrides),
    "metapruning_v1_0_75": (metapruning.v1_rules, metapruning.v1_0_75_overrides),
    "metapruning_v1": (metapruning.v1_rules, metapruning.v1_overrides),
}


def build_imported(release: Release, shapes, input_shape=None):
    """The model a release fills (``input_shape`` default: the release's), and the builder
    arguments it took (``padding``, and the width and classes the shapes fix)."""
    _, overrides_for = LAYOUTS[release.layout]
    overrides = {**dict(release.model_overrides), **overrides_for(shapes)}
    num_classes = overrides.pop("num_classes")
    model = load(release.model, input_shape=tuple(input_shape or release.input_shape),
                 num_classes=num_classes, **overrides)
    return model, overrides, num_classes


def fill(model, release: Release, state, include_top: bool = True) -> int:
    """Move ``state`` (name -> array) into ``model`` through the release's layout."""
    rules_for, _ = LAYOUTS[release.layout]
    turn = dict(release.model_overrides).get("padding") == "symmetric"
    return transfer(model, rules_for(model, release.source, include_top), state, turn=turn)


def _existing(key: str, sha256: str) -> Optional[WeightSpec]:
    """The record an earlier import of the same file wrote; a different file under the
    same key is refused."""
    mpath = imported_manifest_path()
    record = read_manifest_json(mpath)["records"].get(key)
    if record is None:
        return None
    known = (record.get("release") or {}).get("sha256")
    if known != sha256:
        raise WeightsError(
            f"{key} was imported from another file (sha256 {known}); this checkpoint's sha256 "
            f"is {sha256}. Import it under another tag (--tag), or remove {key} from {mpath}.")
    return WeightSpec.from_dict(key, record, str(mpath.parent.resolve()))


def import_checkpoint(name: str, checkpoint: os.PathLike, tag: Optional[str] = None,
                      source: str = "official") -> WeightSpec:
    """Import a released checkpoint of model ``name`` as weight set ``tag`` (default: the
    release's, e.g. ``imagenet``). Returns the attached record."""
    entry = get_entry(name)
    release = get_release(entry.name, source)
    tag = str(tag or release.tag).strip().lower()
    if not TAG_RE.match(tag):
        raise InvalidInputError(f"Tag {tag!r} must be lowercase letters, digits and '_'.")
    path = Path(os.path.expanduser(str(checkpoint)))
    if not path.is_file():
        raise InvalidInputError(f"Checkpoint {path} does not exist: download it from "
                                f"{release.url} first.")
    key = f"{entry.name}.{tag}"
    sha256, size = sha256_file(path), path.stat().st_size
    done = _existing(key, sha256)
    if done is not None:
        log(f"{key} was already imported from this file; nothing to do.")
        record_published(done)
        return done

    state = read_state_dict(path)
    shapes = shapes_of(state)
    top, overrides, num_classes = build_imported(release, shapes)
    moved = fill(top, release, state)
    log(f"{path.name}: {moved} tensors moved into {entry.name}.")
    compact_binary_kernels(top)
    costs = model_costs(top)

    folder, mpath = imported_dir(), imported_manifest_path()
    folder.mkdir(parents=True, exist_ok=True)
    created = []
    try:
        top_file = save_hashed(top, folder, f"{entry.name}-{tag}", created)
        labels = list(imagenet_labels()) if num_classes == 1000 else [str(i) for i in range(num_classes)]
        record = weight_set_record(
            entry.name, tag, dataset="imagenet2012", input_shape=release.input_shape,
            num_classes=num_classes, top=file_record(*top_file, urls=[]),
            notop=None, preprocessing=dict(release.preprocessing),
            labels=labels, model_overrides=overrides, costs=costs,
            recipe={"name": "release", "description": f"trained by the authors: {release.title}"},
            command=f"zoo import {entry.name} {path.name}"
                    + ("" if source == "official" else f" --source {source}")
                    + ("" if tag == release.tag else f" --tag {tag}"),
            versions={}, license=release.license, source=release.url,
            notes=("imported from the authors' PyTorch release; the layout was verified "
                   "against PyTorch on test fixtures, the ImageNet accuracy is the release's "
                   "report (not evaluated here)"),
            metrics={"dataset": "imagenet2012", "split": "validation", "top1": release.top1,
                     "source": f"reported by {release.repository}"},
            release={**describe(release), "file": path.name, "sha256": sha256, "size": size})
        add_record(mpath, key, record)
    except BaseException:
        remove_unrecorded(created, mpath)
        raise
    spec = WeightSpec.from_dict(key, record, str(folder.resolve()))
    record_published(spec)
    return spec
