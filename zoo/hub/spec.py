"""Weight-set records: ``WeightFile``, ``WeightSpec``, the manifest and tags.

A *weight set* is one immutable record of ``weights/manifest.json`` (keyed
``"model.tag"``, e.g. ``birealnet18.fashion_mnist``): one packed h5 file
(:mod:`zoo.hub.packed`; older and larq-zoo sets: a Keras h5 top and no-top file),
each with its name, full sha256, size and URLs (primary first, then mirrors), the input
shape, preprocessing and class labels it was trained with, its metrics, costs,
recipe, command, library versions, license and date. ``attach_manifest()``
(run when ``zoo.api`` is imported) puts each record on its registry entry as
``entry.weights[tag]``; publishing a new set (``zoo publish``) only adds a
record and a file, never code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import types
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from zoo import settings
from zoo.errors import WeightsError
from zoo.hub.releases import imported_manifest_path
from zoo.registry import MODELS

MANIFEST_SCHEMA = 1
REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")



def freeze(value):
    """JSON-like value -> read-only (mappings become MappingProxyType, lists tuples)."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value):
    """The inverse of :func:`freeze`: plain dicts and lists, for JSON."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One published h5 file: its name (with a sha256 prefix), full sha256, size and URLs."""

    file: str
    sha256: str
    size: Optional[int] = None
    urls: Tuple[str, ...] = ()
    # larq-zoo files: the sub-folder of the Keras cache larq-zoo downloads them to
    keras_cache_subdir: Optional[str] = None
    release: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        record = {"file": self.file, "sha256": self.sha256, "size": self.size, "urls": list(self.urls)}
        if self.keras_cache_subdir:
            record["keras_cache_subdir"] = self.keras_cache_subdir
        if self.release:
            record["release"] = self.release
        return record

    @classmethod
    def from_dict(cls, record: Mapping, where: str) -> "WeightFile":
        try:
            file, sha256 = str(record["file"]), str(record["sha256"]).lower()
        except (KeyError, TypeError) as error:
            raise WeightsError(f"{where}: a file record needs 'file' and 'sha256'.") from error
        if not _SHA256_RE.match(sha256):
            raise WeightsError(f"{where}: sha256 of {file} must be 64 hex digits, got {sha256!r}.")
        if "/" in file or "\\" in file or file in ("", ".", ".."):
            raise WeightsError(f"{where}: file name {file!r} must not contain a path.")
        if not file.endswith(".h5"):
            raise WeightsError(f"{where}: {file} is not an .h5 file (weights are h5 only).")
        size = record.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise WeightsError(f"{where}: size of {file} must be a byte count or null.")
        urls = record.get("urls") or ()
        if isinstance(urls, str) or not all(isinstance(u, str) for u in urls):
            raise WeightsError(f"{where}: 'urls' of {file} must be a list of strings.")
        return cls(file, sha256, size, tuple(urls), record.get("keras_cache_subdir"),
                   record.get("release"))


@dataclasses.dataclass(frozen=True, eq=False)
class WeightSpec:
    """One published weight set (``model.tag``): files, how to feed it, where it came from.

    Frozen: a record is never edited once published; a new file means a new tag, or a
    retrained set that replaces it whole (``zoo publish --supersede``, the old record kept
    in ``supersedes``).
    """

    model: str
    tag: str
    dataset: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    top: WeightFile
    notop: Optional[WeightFile] = None
    # {"dataset", "native_shape", "mean", "std", "resize", "crop_pct", "interpolation", "scale"}
    preprocessing: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # class names in output order, or the name of a label set ("imagenet2012")
    labels: Union[Tuple[str, ...], str] = ()
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    costs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    recipe: Any = None
    command: Optional[str] = None
    versions: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    license: Optional[str] = None
    date: Optional[str] = None
    source: Optional[str] = None
    notes: Optional[str] = None
    # an imported release: {"url", "file", "sha256", "size", "source", "layout", ...}
    release: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # what training it cost: {"epochs", "seconds", "seconds_per_epoch", "hardware"} (zoo.runs.training_time)
    training: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # the records this one replaced, newest first: [{"files", "metrics", "command", "date", "source", "training"}]
    supersedes: Tuple[Mapping[str, Any], ...] = ()
    # the folder of the manifest this record was read from (searched read-only)
    origin: Optional[str] = dataclasses.field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.model}.{self.tag}"

    def file(self, include_top: bool = True) -> WeightFile:
        """The file to load: without the top, the no-top file of a set that has one
        (Keras h5 sets), else the one file (packed: its body loads without the head)."""
        if include_top or self.notop is None:
            return self.top
        return self.notop

    def files(self) -> List[WeightFile]:
        return [self.top] + ([self.notop] if self.notop is not None else [])

    def __eq__(self, other):
        return isinstance(other, WeightSpec) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self.key, self.top.sha256))

    def to_dict(self) -> Dict[str, Any]:
        record = {
            "model": self.model, "tag": self.tag, "dataset": self.dataset,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "files": {"top": self.top.to_dict(),
                      "notop": None if self.notop is None else self.notop.to_dict()},
            "preprocessing": thaw(self.preprocessing),
            "labels": self.labels if isinstance(self.labels, str) else list(self.labels),
            "model_overrides": thaw(self.model_overrides),
            "metrics": thaw(self.metrics), "costs": thaw(self.costs),
            "recipe": thaw(self.recipe), "command": self.command,
            "versions": thaw(self.versions), "license": self.license, "date": self.date,
            "source": self.source, "notes": self.notes,
        }
        if self.release:
            record["release"] = thaw(self.release)
        if self.training:
            record["training"] = thaw(self.training)
        if self.supersedes:
            record["supersedes"] = [thaw(entry) for entry in self.supersedes]
        return record

    @classmethod
    def from_dict(cls, key: str, record: Mapping, origin: Optional[str] = None) -> "WeightSpec":
        where = f"manifest record {key!r}"
        if not isinstance(record, Mapping):
            raise WeightsError(f"{where} must be an object.")
        model, tag = record.get("model"), record.get("tag")
        if not model or not tag or f"{model}.{tag}" != key:
            raise WeightsError(f"{where}: 'model' and 'tag' must be set and match the key.")
        if not TAG_RE.match(str(tag)):
            raise WeightsError(f"{where}: tag {tag!r} must be lowercase letters, digits and '_'.")
        files = record.get("files") or {}
        if not isinstance(files, Mapping) or not files.get("top"):
            raise WeightsError(f"{where}: 'files' needs a 'top' file record.")
        try:
            input_shape = tuple(int(d) for d in record["input_shape"])
            num_classes = int(record["num_classes"])
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"{where}: 'input_shape' (H, W, C) and 'num_classes' are required.") from error
        if len(input_shape) != 3 or num_classes < 1:
            raise WeightsError(f"{where}: 'input_shape' must be (H, W, C) and num_classes positive.")
        labels = record.get("labels") or ()
        labels = labels if isinstance(labels, str) else tuple(str(label) for label in labels)
        if not isinstance(labels, str) and labels and len(labels) != num_classes:
            raise WeightsError(f"{where}: {len(labels)} labels for {num_classes} classes.")
        return cls(
            model=str(model), tag=str(tag), dataset=str(record.get("dataset") or ""),
            input_shape=input_shape, num_classes=num_classes,
            top=WeightFile.from_dict(files["top"], where),
            notop=WeightFile.from_dict(files["notop"], where) if files.get("notop") else None,
            preprocessing=freeze(record.get("preprocessing") or {}), labels=labels,
            model_overrides=freeze(record.get("model_overrides") or {}),
            metrics=freeze(record.get("metrics") or {}), costs=freeze(record.get("costs") or {}),
            recipe=freeze(record.get("recipe")), command=record.get("command"),
            versions=freeze(record.get("versions") or {}), license=record.get("license"),
            date=record.get("date"), source=record.get("source"), notes=record.get("notes"),
            release=freeze(record.get("release") or {}),
            training=freeze(record.get("training") or {}),
            supersedes=tuple(freeze(entry) for entry in record.get("supersedes") or ()),
            origin=origin,
        )



def manifest_path(path: Optional[os.PathLike] = None) -> Path:
    """The manifest to read: ``path``, else ``$ZOO_MANIFEST``, else the repository's
    ``weights/manifest.json``."""
    if path is not None:
        return Path(os.path.expanduser(str(path)))
    return settings.manifest_override() or REPO_WEIGHTS_DIR / "manifest.json"


def read_manifest_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {"schema": MANIFEST_SCHEMA, "records": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"Cannot read weights manifest {path}: {error}.") from error
    if not isinstance(data, dict) or not isinstance(data.get("records", {}), dict):
        raise WeightsError(f"Weights manifest {path} must be an object with a 'records' object.")
    if int(data.get("schema", MANIFEST_SCHEMA)) > MANIFEST_SCHEMA:
        raise WeightsError(f"Weights manifest {path} has schema {data['schema']}; this zoo reads "
                           f"schema {MANIFEST_SCHEMA}: upgrade the zoo.")
    data.setdefault("records", {})
    return data


def read_manifest(path: Optional[os.PathLike] = None) -> Dict[str, WeightSpec]:
    """The records of a manifest, ``{"model.tag": WeightSpec}`` (empty if there is no file)."""
    path = manifest_path(path)
    data = read_manifest_json(path)
    origin = str(path.resolve().parent)
    return {key: WeightSpec.from_dict(key, record, origin) for key, record in data["records"].items()}


# specs put on registry entries by attach_manifest: {(entry name, tag): spec}
_ATTACHED: Dict[Tuple[str, str], WeightSpec] = {}
# every record of the attached manifest, including models not (yet) registered
RECORDS: Dict[str, WeightSpec] = {}


def attach_manifest(path: Optional[os.PathLike] = None, strict: bool = True) -> int:
    """Put the manifest's records on their registry entries (``entry.weights[tag] = spec``).

    Replaces what an earlier call attached (so a test can point at its own
    manifest and then call ``attach_manifest()`` again to restore the default).
    Returns the number of records attached. ``strict=False`` turns a broken
    manifest into a warning (used at import time, so ``import zoo`` never fails).
    """
    try:
        records = read_manifest(path)
    except WeightsError as error:
        if strict:
            raise
        import warnings

        warnings.warn(f"zoo: no published weights attached: {error}", stacklevel=2)
        records = {}
    if path is None:  # the sets `zoo import` made, beside the published ones
        records = {**_imported_records(strict), **records}
    for (name, tag), spec in list(_ATTACHED.items()):
        if name in MODELS and MODELS.get(name).weights.get(tag) is spec:
            del MODELS.get(name).weights[tag]
    _ATTACHED.clear()
    RECORDS.clear()
    RECORDS.update(records)
    for spec in records.values():
        if spec.model in MODELS:
            entry = MODELS.get(spec.model)
            entry.weights[spec.tag] = spec
            _ATTACHED[(entry.name, spec.tag)] = spec
    return len(_ATTACHED)


def _imported_records(strict: bool) -> Dict[str, WeightSpec]:
    """The records of ``$ZOO_HOME/imported/manifest.json`` (``zoo import``)."""
    path = imported_manifest_path()
    try:
        return read_manifest(path) if path.is_file() else {}
    except WeightsError as error:
        if strict:
            raise
        import warnings

        warnings.warn(f"zoo: imported weights not attached: {error}", stacklevel=3)
        return {}


def _entry(entry_or_name):
    if isinstance(entry_or_name, str):
        return MODELS.get(entry_or_name)
    return entry_or_name


def split_tag(name: str) -> Tuple[str, Optional[str]]:
    """``"birealnet18.fashion_mnist"`` -> ``("birealnet18", "fashion_mnist")``; no dot -> tag None."""
    name = str(name).strip()
    if "." in name:
        model, tag = name.split(".", 1)
        return model, tag.strip().lower() or None
    return name, None


def get_spec(entry_or_name, tag: Optional[str] = None) -> WeightSpec:
    """The weight set ``tag`` of a model (``name`` may be ``"model.tag"``). Without a tag,
    the model's only weight set; an unknown tag raises with the available ones."""
    if isinstance(entry_or_name, WeightSpec):
        return entry_or_name
    if isinstance(entry_or_name, str):
        entry_or_name, name_tag = split_tag(entry_or_name)
        tag = tag or name_tag
    entry = _entry(entry_or_name)
    available = sorted(set(entry.weights) | {s.tag for s in RECORDS.values() if s.model == entry.name})
    if tag is None:
        if len(available) == 1:
            tag = available[0]
        else:
            raise WeightsError(
                f"{entry.name} has {'no published weights' if not available else 'several weight sets: ' + ', '.join(available)}"
                f"{'' if not available else '; name one as ' + entry.name + '.TAG or with --weights TAG'}.")
    tag = str(tag).lower()
    spec = entry.weights.get(tag) or RECORDS.get(f"{entry.name}.{tag}")
    if not isinstance(spec, WeightSpec):
        hint = f"its weight sets are: {', '.join(available)}" if available else "it has no published weights"
        raise WeightsError(f"No weight set {tag!r} for {entry.name}: {hint} (`zoo list --pretrained`).")
    return spec


def spec_defaults(entry_or_name, tag: Optional[str] = None) -> Dict[str, Any]:
    """What ``zoo.load`` must build for a weight set: ``{"input_shape", "num_classes"}``."""
    spec = get_spec(entry_or_name, tag)
    return {"input_shape": tuple(spec.input_shape), "num_classes": int(spec.num_classes)}


def is_tag(entry, weights) -> bool:
    """Whether ``weights`` names a weight set of ``entry`` (rather than a path)."""
    if isinstance(weights, WeightSpec):
        return True
    if not isinstance(weights, str):
        return False
    key = weights.strip().lower()
    return key in entry.weights or f"{entry.name}.{key}" in RECORDS


def record_published(spec: WeightSpec) -> None:
    """Attach a weight set just added to the attached manifest (``zoo publish``)."""
    RECORDS[spec.key] = spec
    entry = MODELS.get(spec.model)
    entry.weights[spec.tag] = spec
    _ATTACHED[(entry.name, spec.tag)] = spec
