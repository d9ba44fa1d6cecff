"""Weights: published weight sets, their verified download and cache, and loading (h5 only).

A *weight set* is one immutable record of ``weights/manifest.json`` (keyed
``"model.tag"``, e.g. ``birealnet18.fashion_mnist``): a top and a no-top h5
file (name, full sha256, size, URLs: primary first, then mirrors), the input
shape, preprocessing and class labels it was trained with, its metrics, costs,
recipe, command, library versions, license and date. ``attach_manifest()``
(run when ``zoo`` is imported) puts each record on its registry entry as
``entry.weights[tag]``; publishing a new set (``zoo publish``) only adds a
record and a file, never code.

Where a file is looked for, in order (the first verified copy wins):

1. ``$ZOO_CACHE_PATH`` (``os.pathsep``-separated, read-only, e.g. a shared
   pre-filled cache; each folder may use the cache layout ``weights/MODEL/FILE``,
   ``MODEL/FILE`` or hold ``FILE`` directly);
2. the folder of the manifest the record came from and the repository's
   ``weights/`` folder (read-only: committed Fashion-MNIST weights load offline);
3. the writable cache: ``cache_dir=`` argument, else ``$ZOO_HOME``, else the
   platform cache folder (``$XDG_CACHE_HOME/zoo``, default ``~/.cache/zoo``),
   files in ``<root>/weights/MODEL/FILE``;
4. larq-zoo's own Keras cache (``$KERAS_HOME`` or ``~/.keras``) for larq-zoo files;
5. a download: each URL in turn (``$ZOO_MIRROR`` replaces them by
   ``MIRROR/FILE``), streamed into a ``.partial`` file in the cache folder while
   the sha256 is computed, then moved into place with ``os.replace``. A file
   lock keeps two processes from racing; a truncated transfer is retried once;
   a file whose hash differs is deleted and rejected. There is no switch that
   turns verification off (pass a path to load an unverified file).

``ZOO_OFFLINE=1`` never touches the network: a missing file fails with its
name, sha256, URL and the folder to put it in.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from zoo.errors import InvalidInputError, WeightsError

MANIFEST_SCHEMA = 1
REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_URL_TEMPLATE = "https://github.com/bnn-zoo/zoo/releases/download/{model}-{tag}/{file}"
DEFAULT_LICENSE = "Apache-2.0"
CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# ============================================================================ records


def _freeze(value):
    """JSON-like value -> read-only (mappings become MappingProxyType, lists tuples)."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    """The inverse of :func:`_freeze`: plain dicts and lists, for JSON."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
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

    Frozen: a record is never edited once published; a new file means a new tag.
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
    # the folder of the manifest this record was read from (searched read-only)
    origin: Optional[str] = dataclasses.field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.model}.{self.tag}"

    def file(self, include_top: bool = True) -> WeightFile:
        if include_top:
            return self.top
        if self.notop is None:
            raise WeightsError(
                f"Weight set {self.key} has no no-top file: load it with include_top=True and "
                f"take the features from the model's layers.")
        return self.notop

    def files(self) -> List[WeightFile]:
        return [self.top] + ([self.notop] if self.notop is not None else [])

    def __eq__(self, other):
        return isinstance(other, WeightSpec) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self.key, self.top.sha256))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model, "tag": self.tag, "dataset": self.dataset,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "files": {"top": self.top.to_dict(),
                      "notop": None if self.notop is None else self.notop.to_dict()},
            "preprocessing": _thaw(self.preprocessing),
            "labels": self.labels if isinstance(self.labels, str) else list(self.labels),
            "model_overrides": _thaw(self.model_overrides),
            "metrics": _thaw(self.metrics), "costs": _thaw(self.costs),
            "recipe": _thaw(self.recipe), "command": self.command,
            "versions": _thaw(self.versions), "license": self.license, "date": self.date,
            "source": self.source, "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, key: str, record: Mapping, origin: Optional[str] = None) -> "WeightSpec":
        where = f"manifest record {key!r}"
        if not isinstance(record, Mapping):
            raise WeightsError(f"{where} must be an object.")
        model, tag = record.get("model"), record.get("tag")
        if not model or not tag or f"{model}.{tag}" != key:
            raise WeightsError(f"{where}: 'model' and 'tag' must be set and match the key.")
        if not _TAG_RE.match(str(tag)):
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
            preprocessing=_freeze(record.get("preprocessing") or {}), labels=labels,
            model_overrides=_freeze(record.get("model_overrides") or {}),
            metrics=_freeze(record.get("metrics") or {}), costs=_freeze(record.get("costs") or {}),
            recipe=_freeze(record.get("recipe")), command=record.get("command"),
            versions=_freeze(record.get("versions") or {}), license=record.get("license"),
            date=record.get("date"), source=record.get("source"), notes=record.get("notes"),
            origin=origin,
        )


# ============================================================================ manifest


def manifest_path(path: Optional[os.PathLike] = None) -> Path:
    """The manifest to read: ``path``, else ``$ZOO_MANIFEST``, else the repository's
    ``weights/manifest.json``."""
    if path is not None:
        return Path(os.path.expanduser(str(path)))
    if os.environ.get("ZOO_MANIFEST"):
        return Path(os.path.expanduser(os.environ["ZOO_MANIFEST"]))
    return REPO_WEIGHTS_DIR / "manifest.json"


def _read_manifest_json(path: Path) -> Dict[str, Any]:
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
    data = _read_manifest_json(path)
    origin = str(path.resolve().parent)
    return {key: WeightSpec.from_dict(key, record, origin) for key, record in data["records"].items()}


# specs put on registry entries by attach_manifest: {(entry name, tag): spec}
_ATTACHED: Dict[Tuple[str, str], WeightSpec] = {}
# every record of the attached manifest, including models not (yet) registered
_RECORDS: Dict[str, WeightSpec] = {}


def attach_manifest(path: Optional[os.PathLike] = None, strict: bool = True) -> int:
    """Put the manifest's records on their registry entries (``entry.weights[tag] = spec``).

    Replaces what an earlier call attached (so a test can point at its own
    manifest and then call ``attach_manifest()`` again to restore the default).
    Returns the number of records attached. ``strict=False`` turns a broken
    manifest into a warning (used at import time, so ``import zoo`` never fails).
    """
    from zoo.registry import MODELS

    try:
        records = read_manifest(path)
    except WeightsError as error:
        if strict:
            raise
        import warnings

        warnings.warn(f"zoo: no published weights attached: {error}", stacklevel=2)
        records = {}
    for (name, tag), spec in list(_ATTACHED.items()):
        if name in MODELS and MODELS.get(name).weights.get(tag) is spec:
            del MODELS.get(name).weights[tag]
    _ATTACHED.clear()
    _RECORDS.clear()
    _RECORDS.update(records)
    for spec in records.values():
        if spec.model in MODELS:
            entry = MODELS.get(spec.model)
            entry.weights[spec.tag] = spec
            _ATTACHED[(entry.name, spec.tag)] = spec
    return len(_ATTACHED)


def _entry(entry_or_name):
    from zoo.registry import MODELS

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
    available = sorted(set(entry.weights) | {s.tag for s in _RECORDS.values() if s.model == entry.name})
    if tag is None:
        if len(available) == 1:
            tag = available[0]
        else:
            raise WeightsError(
                f"{entry.name} has {'no published weights' if not available else 'several weight sets: ' + ', '.join(available)}"
                f"{'' if not available else '; name one as ' + entry.name + '.TAG or with --weights TAG'}.")
    tag = str(tag).lower()
    spec = entry.weights.get(tag) or _RECORDS.get(f"{entry.name}.{tag}")
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
    return key in entry.weights or f"{entry.name}.{key}" in _RECORDS


def apply_spec_defaults(entry, weights, include_top: bool, input_shape, num_classes,
                        input_tensor=None):
    """``(input_shape, num_classes)`` for ``zoo.load``. When ``weights`` names a weight set,
    missing values (``None``) come from its spec, and with ``include_top`` given ones must
    match it (the keras.applications rule). Otherwise ``num_classes`` defaults to 1000.
    With ``input_tensor`` and no ``input_shape`` the tensor fixes the shape (returned as None)."""
    if not is_tag(entry, weights):
        return input_shape, (1000 if num_classes is None else int(num_classes))
    spec = weights if isinstance(weights, WeightSpec) else get_spec(entry, weights.strip().lower())
    num_classes = spec.num_classes if num_classes is None else int(num_classes)
    if include_top and num_classes != spec.num_classes:
        raise InvalidInputError(
            f"Weights {spec.key} have {spec.num_classes} classes, not {num_classes}: drop "
            f"num_classes, or load with include_top=False and add your own head.")
    if input_shape is None and input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
        if include_top and None not in shape and tuple(int(d) for d in shape) != tuple(spec.input_shape):
            raise InvalidInputError(
                f"Weights {spec.key} were trained at input {tuple(spec.input_shape)}, the input "
                f"tensor has {shape}: use include_top=False for another size.")
        return None, num_classes
    input_shape = tuple(spec.input_shape) if input_shape is None else tuple(input_shape)
    if include_top and input_shape != tuple(spec.input_shape):
        raise InvalidInputError(
            f"Weights {spec.key} were trained at input {tuple(spec.input_shape)}: with "
            f"include_top=True the input shape must match (include_top=False allows another size).")
    return input_shape, num_classes


def spec_overrides(entry, weights) -> Dict[str, Any]:
    """Builder arguments a weight set was trained with (e.g. ``activation="clip"``);
    ``{}`` unless ``weights`` names a weight set. Explicit overrides win over these."""
    if not is_tag(entry, weights):
        return {}
    spec = weights if isinstance(weights, WeightSpec) else get_spec(entry, weights.strip().lower())
    return _thaw(spec.model_overrides)


# ============================================================================ cache locations


def _truthy(value: Optional[str]) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """``ZOO_OFFLINE=1``: never touch the network."""
    return _truthy(os.environ.get("ZOO_OFFLINE"))


def cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    """The writable cache root: the argument, else ``$ZOO_HOME``, else the platform cache
    folder (``$XDG_CACHE_HOME/zoo`` = ``~/.cache/zoo`` on Linux)."""
    if cache_dir is not None:
        return Path(os.path.expanduser(str(cache_dir)))
    if os.environ.get("ZOO_HOME"):
        return Path(os.path.expanduser(os.environ["ZOO_HOME"]))
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
        return Path(base) / "zoo" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "zoo"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo"


def weights_dir(root: Optional[os.PathLike] = None, model: Optional[str] = None) -> Path:
    """Where the writable cache keeps weight files (``<root>/weights[/MODEL]``)."""
    base = cache_root(root) / "weights"
    return base / model if model else base


def search_path() -> List[Path]:
    """``$ZOO_CACHE_PATH``: read-only folders searched before the writable cache."""
    value = os.environ.get("ZOO_CACHE_PATH", "")
    return [Path(os.path.expanduser(p)) for p in value.split(os.pathsep) if p.strip()]


def _read_only_candidates(spec_model: str, wf: WeightFile, origin: Optional[str]) -> List[Path]:
    candidates: List[Path] = []
    for root in search_path():
        candidates += [root / "weights" / spec_model / wf.file, root / spec_model / wf.file, root / wf.file]
    for folder in (origin, str(REPO_WEIGHTS_DIR)):
        if folder:
            candidates += [Path(folder) / wf.file, Path(folder) / spec_model / wf.file]
    return list(dict.fromkeys(candidates))


def _keras_candidates(wf: WeightFile) -> List[Path]:
    if not wf.keras_cache_subdir:
        return []
    roots = [os.environ.get("KERAS_HOME"), os.path.join(os.path.expanduser("~"), ".keras"),
             os.path.join(tempfile.gettempdir(), ".keras")]
    return list(dict.fromkeys(Path(r) / wf.keras_cache_subdir / wf.file for r in roots if r))


# ============================================================================ verification


def sha256_file(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


# read-only files verified in this process: {(path, size, mtime_ns): sha256}
_VERIFIED: Dict[Tuple[str, int, int], str] = {}
# files handed to a builder: {path: (WeightFile, model, cache root or None if read-only)}
_PROVENANCE: Dict[str, Tuple[WeightFile, str, Optional[Path]]] = {}


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    try:
        _stamp_path(path).write_text(json.dumps(
            {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    except OSError:
        pass  # a stamp only saves a re-hash


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def verify_file(path: os.PathLike, wf: WeightFile, use_stamp: bool = True) -> Tuple[bool, str]:
    """``(ok, reason)``: size, then sha256 (a matching verification stamp or an earlier
    check in this process stands in for the hash unless ``use_stamp=False``)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as error:
        return False, f"cannot read it ({error.strerror or error})"
    if wf.size is not None and stat.st_size != wf.size:
        return False, f"size {stat.st_size} bytes, expected {wf.size}"
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if use_stamp:
        if _VERIFIED.get(memo_key) == wf.sha256:
            return True, "verified earlier"
        try:
            stamp = json.loads(_stamp_path(path).read_text())
            if (stamp.get("sha256"), stamp.get("size"), stamp.get("mtime_ns")) == (
                    wf.sha256, stat.st_size, stat.st_mtime_ns):
                _VERIFIED[memo_key] = wf.sha256
                return True, "verification stamp"
        except (OSError, ValueError, AttributeError):
            pass
    try:
        actual = sha256_file(path)
    except OSError as error:
        return False, f"cannot read it ({error.strerror or error})"
    if actual != wf.sha256:
        _VERIFIED.pop(memo_key, None)
        return False, f"sha256 {actual}, expected {wf.sha256}"
    _VERIFIED[memo_key] = actual
    return True, "sha256 checked"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ============================================================================ download


class _Truncated(Exception):
    pass


class _Mismatch(Exception):
    def __init__(self, actual: str, size: int):
        super().__init__(actual)
        self.actual, self.size = actual, size


def _mirror_urls(model: str, tag: str, wf: WeightFile) -> List[str]:
    mirror = os.environ.get("ZOO_MIRROR", "").strip()
    if not mirror:
        return list(wf.urls)
    urls = []
    for base in (m.strip() for m in mirror.split(",")):
        if not base:
            continue
        if "{file}" in base:
            urls.append(base.format(file=wf.file, model=model, tag=tag))
        else:
            urls.append(base.rstrip("/") + "/" + wf.file)
    return urls


def _timeout() -> float:
    try:
        return float(os.environ.get("ZOO_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


class _Progress:
    """Download progress on stderr: a live line on a terminal, a few lines otherwise."""

    def __init__(self, label: str, total: Optional[int], enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.next_step = 0.25
        if enabled:
            size = f" ({total / 2**20:.1f} MiB)" if total else ""
            _log(f"Downloading {label}{size}")

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self.tty and time.monotonic() - self.last > 0.2:
            self.last = time.monotonic()
            pct = f" {100 * done / self.total:5.1f}%" if self.total else ""
            sys.stderr.write(f"\r  {done / 2**20:8.1f} MiB{pct}")
            sys.stderr.flush()
        elif not self.tty and self.total and done / self.total >= self.next_step:
            _log(f"  {100 * done / self.total:.0f}%")
            self.next_step += 0.25

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _download_once(url: str, dest: Path, wf: WeightFile, progress: bool) -> None:
    """Stream ``url`` into a partial file next to ``dest``, hashing as it goes; on a
    full, matching file move it into place. Never leaves the partial file behind."""
    partial = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:12]}.partial")
    request = urllib.request.Request(url, headers={"User-Agent": "bnn-zoo (urllib)"})
    try:
        # errors while connecting / on the status line: the URL fails, try the next one
        response = urllib.request.urlopen(request, timeout=_timeout())
        dest.parent.mkdir(parents=True, exist_ok=True)
        with response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else wf.size
            meter = _Progress(f"{wf.file} from {url}", expected, progress)
            digest, received = hashlib.sha256(), 0
            try:
                while True:
                    chunk = response.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    meter.update(received)
            except (OSError, http.client.HTTPException, socket.timeout) as error:
                raise _Truncated(f"connection lost after {received} bytes ({error})") from error
            finally:
                meter.close()
            out.flush()
            os.fsync(out.fileno())
        for want in {x for x in (expected, wf.size) if x is not None}:
            if received < want:
                raise _Truncated(f"got {received} of {want} bytes")
        actual = digest.hexdigest()
        if actual != wf.sha256:
            raise _Mismatch(actual, received)
        os.replace(partial, dest)
        _write_stamp(dest, actual)
        _VERIFIED[(str(dest.resolve()), dest.stat().st_size, dest.stat().st_mtime_ns)] = actual
    finally:
        _remove(partial)


def _download(model: str, tag: str, wf: WeightFile, dest: Path, progress: bool) -> None:
    urls = _mirror_urls(model, tag, wf)
    if not urls:
        raise WeightsError(f"{wf.file} has no URL to download it from; put it by hand into {dest.parent}.")
    failures: List[str] = []
    mismatch: Optional[Tuple[str, _Mismatch]] = None
    for url in urls:
        for attempt in (1, 2):
            try:
                _download_once(url, dest, wf, progress)
                return
            except _Truncated as error:
                failures.append(f"{url}: truncated ({error})")
                if attempt == 1:
                    _log(f"Download of {wf.file} from {url} was truncated ({error}); retrying once.")
                    continue
            except _Mismatch as error:
                failures.append(f"{url}: sha256 mismatch")
                mismatch = mismatch or (url, error)
                _log(f"Rejected {wf.file} from {url}: sha256 {error.actual} ({error.size} bytes), "
                     f"expected {wf.sha256}.")
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                failures.append(f"{url}: {reason}")
                _log(f"Could not download {wf.file} from {url}: {reason}")
            break
    if mismatch is not None:
        url, error = mismatch
        raise WeightsError(
            f"{wf.file} from {url} failed verification: expected sha256 {wf.sha256}, got "
            f"{error.actual} ({error.size} bytes). The file was discarded and nothing was "
            f"cached; the server or mirror is serving a different or damaged file.")
    raise WeightsError(
        f"Could not download {wf.file} (sha256 {wf.sha256}): {'; '.join(failures)}. Nothing was "
        f"cached. Fetch it by hand into {dest.parent}, set ZOO_MIRROR to a mirror holding it, or "
        f"add a folder holding it to ZOO_CACHE_PATH.")


def _offline_error(model: str, tag: str, wf: WeightFile, folder: Path) -> WeightsError:
    urls = _mirror_urls(model, tag, wf)
    url = urls[0] if urls else "(no URL)"
    return WeightsError(
        f"ZOO_OFFLINE=1 and {wf.file} is not cached: fetch it by hand from {url} "
        f"(sha256 {wf.sha256}{'' if wf.size is None else f', {wf.size} bytes'}) into {folder}, "
        f"e.g. `mkdir -p {folder} && curl -L -o {folder / wf.file} {url}`, or add a folder "
        f"holding it to ZOO_CACHE_PATH, or run `zoo download {model}.{tag}` with network access.")


def _lock(root: Path, name: str, timeout: float):
    from filelock import FileLock

    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{name}.lock"), timeout=timeout)


def fetch_file(
    model: str,
    tag: str,
    wf: WeightFile,
    origin: Optional[str] = None,
    cache_dir: Optional[os.PathLike] = None,
    progress: bool = True,
) -> Path:
    """A verified local copy of ``wf``: from a read-only folder, the cache, or a download."""
    for candidate in _read_only_candidates(model, wf, origin):
        if candidate.is_file():
            ok, reason = verify_file(candidate, wf)
            if ok:
                _PROVENANCE[str(candidate)] = (wf, model, None)
                return candidate
            _log(f"Ignoring {candidate}: {reason}.")
    root = cache_root(cache_dir)
    folder = root / "weights" / model
    dest = folder / wf.file
    if dest.is_file():  # fast path, without the lock
        ok, reason = verify_file(dest, wf)
        if ok:
            if reason == "sha256 checked":
                _write_stamp(dest, wf.sha256)
            _PROVENANCE[str(dest)] = (wf, model, root)
            return dest
    for candidate in _keras_candidates(wf):
        if candidate.is_file() and verify_file(candidate, wf)[0]:
            _PROVENANCE[str(candidate)] = (wf, model, None)
            return candidate
    if offline():
        raise _offline_error(model, tag, wf, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(root / "weights", wf.file, timeout=max(600.0, 10 * _timeout()))
    except OSError as error:
        raise WeightsError(
            f"Cannot write the weights cache {folder} ({error.strerror or error}): set ZOO_HOME "
            f"to a writable folder, or put {wf.file} (sha256 {wf.sha256}) into a folder on "
            f"ZOO_CACHE_PATH.") from error
    from filelock import Timeout

    try:
        with lock:
            if dest.is_file():  # another process may have finished it while we waited
                ok, reason = verify_file(dest, wf)
                if ok:
                    _PROVENANCE[str(dest)] = (wf, model, root)
                    return dest
                _log(f"Cached {dest} is damaged ({reason}); downloading it again.")
                _remove(dest, _stamp_path(dest))
            try:
                _download(model, tag, wf, dest, progress)
            except WeightsError:
                try:
                    folder.rmdir()  # leave no empty folder behind (only if empty)
                except OSError:
                    pass
                raise
    except Timeout as error:
        raise WeightsError(f"Timed out waiting for another process downloading {dest} "
                           f"(lock {lock.lock_file}).") from error
    _PROVENANCE[str(dest)] = (wf, model, root)
    return dest


def fetch(spec: WeightSpec, include_top: bool = True, cache_dir: Optional[os.PathLike] = None,
          progress: bool = True) -> Path:
    """A verified local path to a weight set's top (or no-top) file, downloading if needed."""
    return fetch_file(spec.model, spec.tag, spec.file(include_top), spec.origin, cache_dir, progress)


def download_weights(name: str, tag: Optional[str] = None, include_top: bool = True,
                     cache_dir: Optional[os.PathLike] = None, progress: bool = True) -> Path:
    """Pre-fetch a weight set (``name`` may be ``"model.tag"``); returns the local path."""
    return fetch(get_spec(name, tag), include_top, cache_dir, progress)


def cached_files(cache_dir: Optional[os.PathLike] = None) -> List[Dict[str, Any]]:
    """Weight files in the writable cache: model, file, size, path, and the matching record."""
    base = weights_dir(cache_dir)
    by_file = {wf.file: (spec, wf) for spec in _RECORDS.values() for wf in spec.files()}
    rows = []
    if not base.is_dir():
        return rows
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.endswith((".verified", ".lock")):
                continue
            spec, wf = by_file.get(path.name, (None, None))
            status = "partial" if path.name.endswith(".partial") else "unknown"
            if wf is not None:
                status = "verified" if verify_file(path, wf)[0] else "damaged"
            rows.append({"model": folder.name, "file": path.name, "size": path.stat().st_size,
                         "weights": spec.key if spec else None, "status": status, "path": str(path)})
    return rows


def clear_cache(model: Optional[str] = None, cache_dir: Optional[os.PathLike] = None) -> List[str]:
    """Delete cached weight files (of one model, or all); returns the removed paths."""
    base = weights_dir(cache_dir)
    if not base.is_dir():
        return []
    folders = [base / model] if model else [p for p in base.iterdir() if p.is_dir()]
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file():
                path.unlink()
                if not path.name.endswith(".verified"):
                    removed.append(str(path))
        try:
            folder.rmdir()
        except OSError:
            pass
    _VERIFIED.clear()
    return sorted(removed)


# ============================================================================ resolve and load


def resolve(entry, weights, include_top: bool = True):
    """What a builder gets for ``zoo.load(name, weights=...)``: ``None``, a local file path,
    or a value the builder handles itself (larq-zoo's ``"imagenet"``, when the manifest has
    no record for it).

    ``weights``: ``None``; a tag of ``entry`` (``"fashion_mnist"``, ``"imagenet"``) or a
    :class:`WeightSpec`, fetched and verified; a path to an h5 file or a ``zoo train`` run
    directory (loaded as is: an explicit path is the way to use an unverified file).
    """
    if weights is None:
        return None
    if isinstance(weights, WeightSpec) or is_tag(entry, weights):
        spec = weights if isinstance(weights, WeightSpec) else get_spec(entry, weights.strip().lower())
        return str(fetch(spec, include_top))
    if weights == "imagenet" and entry.extra.get("larq_zoo_weights") == "imagenet":
        return "imagenet"
    text = str(weights)
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    path = Path(os.path.expanduser(text))
    if not path.exists() and os.sep not in text and "/" not in text and not path.suffix:
        available = sorted(entry.weights)
        raise WeightsError(
            f"{weights!r} is neither a weight set of {entry.name} "
            f"({'its weight sets: ' + ', '.join(available) if available else 'it has none published'}) "
            f"nor an existing weights file or run directory.")
    return str(resolve_weights_path(path))


def resolve_weights_path(weights, entry=None) -> Path:
    """A path to a weights file: the file itself, a training run directory, or (when no such
    path exists) a published ``"model.tag"`` weight set, fetched and verified. ``entry``:
    the model the weights are for (an unknown tag then lists its weight sets)."""
    path = Path(os.path.expanduser(str(weights)))
    if path.is_dir():
        candidate = path / "weights.h5"
        if not candidate.is_file():
            raise WeightsError(
                f"{path} is a directory without weights.h5: pass the weights file, or a run "
                f"directory written by `zoo train`."
            )
        return candidate
    if not path.is_file():
        spec = _spec_from_key(str(weights))
        if spec is not None:
            return fetch(spec)
        if entry is not None and os.sep not in str(weights) and not path.suffix:
            tags = ", ".join(sorted(entry.weights)) or "none published"
            raise WeightsError(f"{weights!r} is neither a file nor a weight set of {entry.name} "
                               f"(its weight sets: {tags}; `zoo list --pretrained`).")
        raise WeightsError(
            f"Weights file {path} does not exist: pass an existing .h5 file or run directory."
        )
    return path


def _spec_from_key(text: str) -> Optional[WeightSpec]:
    from zoo.registry import MODELS

    name, tag = split_tag(text)
    if not tag or os.sep in text or "/" in text or name not in MODELS:
        return None
    try:
        return get_spec(name, tag)
    except WeightsError:
        return None


def _is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            for offset in (0, 512, 1024, 2048):
                handle.seek(offset)
                if handle.read(8) == _HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def _load_h5(model, path: Path) -> None:
    if not _is_hdf5(path):
        raise WeightsError(
            f"{path} is not an HDF5 (.h5) weights file: the zoo loads weights from h5 only "
            f"(never pickle); save them with model.save_weights('weights.h5').")
    model.load_weights(str(path))


def load_weights_file(model, weights) -> None:
    """Load an h5 weights file (or a run directory's weights.h5) into ``model``.

    A file the zoo fetched from a weight set is re-hashed in full when loading fails: a
    damaged cached copy is deleted and downloaded again once; a good one means the
    model does not match the weights (input shape, classes, overrides)."""
    path = resolve_weights_path(weights)
    try:
        _load_h5(model, path)
        return
    except (OSError, ValueError, KeyError) as error:
        first_error = error
    provenance = _PROVENANCE.get(str(path))
    if provenance is not None:
        wf, model_name, root = provenance
        ok, reason = verify_file(path, wf, use_stamp=False)
        if not ok:
            if root is None:
                raise WeightsError(f"{path} (a read-only copy of {wf.file}) is damaged: {reason}. "
                                   f"Replace it, or remove its folder from ZOO_CACHE_PATH.") from first_error
            _log(f"{path} is damaged ({reason}); deleting it and downloading it again.")
            _remove(path, _stamp_path(path))
            tag = next((s.tag for s in _RECORDS.values() if wf in s.files()), "")
            fresh = fetch_file(model_name, tag, wf, None, root)
            try:
                _load_h5(model, fresh)
                return
            except (OSError, ValueError, KeyError) as error:
                first_error = error
    message = str(first_error).strip()
    first_line = message.splitlines()[0] if message else type(first_error).__name__
    raise WeightsError(
        f"Cannot load weights from {path} into {model.name}: {first_line}. Check that the "
        f"file is a complete h5 weights file for this model, input shape and number of classes."
    ) from first_error


# ============================================================================ preprocessing and labels


@dataclasses.dataclass(frozen=True)
class _Feed:
    """How to feed a model: the dataset spec and input shape zoo.data.preprocess uses, labels."""

    dataset: Any
    input_shape: Tuple[int, int, int]
    labels: Tuple[str, ...]
    key: str


def _dataset_for(spec: WeightSpec):
    from zoo import data as zdata

    pre = dict(spec.preprocessing)
    name = pre.get("dataset") or spec.dataset
    try:
        dataset = zdata.get_dataset(name)
    except Exception:  # noqa: BLE001 - an unregistered dataset: build one from the record
        native = tuple(pre.get("native_shape") or (None, None, spec.input_shape[2]))
        dataset = zdata.DatasetSpec(
            name=name or spec.key, tfds_name=None, num_classes=spec.num_classes,
            image_shape=native, default_size=spec.input_shape[0],
            mean=tuple(pre.get("mean") or (0.0,)), std=tuple(pre.get("std") or (1.0,)))
    changes = {}
    if pre.get("mean"):
        changes["mean"] = tuple(float(m) for m in pre["mean"])
    if pre.get("std"):
        changes["std"] = tuple(float(s) for s in pre["std"])
    if pre.get("native_shape"):
        changes["image_shape"] = tuple(None if d is None else int(d) for d in pre["native_shape"])
    return dataclasses.replace(dataset, **changes)


def _imagenet_labels() -> Tuple[str, ...]:
    """ImageNet class names: Keras' cached class index if present, else tfds' synset ids."""
    for root in (os.environ.get("KERAS_HOME"), os.path.join(os.path.expanduser("~"), ".keras")):
        index = Path(root or "") / "models" / "imagenet_class_index.json"
        if root and index.is_file():
            try:
                data = json.loads(index.read_text())
                return tuple(data[str(i)][1] for i in range(1000))
            except (OSError, ValueError, KeyError, IndexError):
                pass
    try:
        import tensorflow_datasets as tfds

        path = Path(tfds.__file__).parent / "datasets" / "imagenet2012" / "labels.txt"
        labels = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        if len(labels) == 1000:
            return labels
    except Exception:  # noqa: BLE001 - labels are a convenience
        pass
    return tuple(str(i) for i in range(1000))


def _labels_for(spec: WeightSpec, dataset) -> Tuple[str, ...]:
    from zoo import data as zdata

    if isinstance(spec.labels, tuple) and spec.labels:
        return spec.labels
    label_set = spec.labels if isinstance(spec.labels, str) and spec.labels else dataset.name
    if label_set in ("imagenet2012", "imagenet"):
        return _imagenet_labels()
    try:
        labels = tuple(zdata.class_names(zdata.get_dataset(label_set)))
    except Exception:  # noqa: BLE001
        labels = ()
    if len(labels) != spec.num_classes:
        labels = tuple(str(i) for i in range(spec.num_classes))
    return labels


def _feed(name_or_spec) -> _Feed:
    """A weight set (spec, ``"model.tag"``, or a model with one weight set) or a dataset name."""
    from zoo import data as zdata
    from zoo.registry import MODELS

    if isinstance(name_or_spec, _Feed):
        return name_or_spec
    if isinstance(name_or_spec, str) and split_tag(name_or_spec)[0] not in MODELS:
        try:
            dataset = zdata.get_dataset(name_or_spec)
        except Exception as error:  # noqa: BLE001
            raise InvalidInputError(
                f"{name_or_spec!r} is neither a weight set (model.tag) nor a dataset.") from error
        labels = tuple(zdata.class_names(dataset))
        if dataset.name == "imagenet2012":
            labels = _imagenet_labels()
        return _Feed(dataset, zdata.input_shape_for(dataset), labels, dataset.name)
    spec = get_spec(name_or_spec)
    dataset = _dataset_for(spec)
    return _Feed(dataset, tuple(spec.input_shape), _labels_for(spec, dataset), spec.key)


def _prepare_one(image, feed: _Feed):
    """One HxWxC image (any size, 1/3/4 channels) -> what zoo.data.preprocess gets at evaluation."""
    import tensorflow as tf

    from zoo import data as zdata

    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape.rank != 3:
        raise InvalidInputError(f"Expected HxWxC or NxHxWxC images, got shape {tuple(image.shape)}.")
    channels = image.shape[-1]
    if channels == 4:
        image = image[..., :3]
    elif channels not in (1, 3):
        raise InvalidInputError(f"Images need 1, 3 or 4 channels, got {channels}.")
    if image.dtype != tf.uint8:
        image = tf.cast(image, tf.float32)
    native = feed.dataset.image_shape
    native_channels = native[2] if native[2] else 3
    if image.shape[-1] == 3 and native_channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    elif image.shape[-1] == 1 and native_channels == 3:
        image = tf.tile(image, [1, 1, 3])
    if native[0] is not None and not feed.dataset.large and tuple(image.shape[:2]) != tuple(native[:2]):
        # small datasets are preprocessed at their native size: bring other images to it first
        image = tf.image.resize(image, native[:2], method="area")
    return zdata.preprocess(image, feed.dataset, feed.input_shape, training=False)


def preprocess_input(x, name_or_spec):
    """Images -> model input for a weight set, as ``zoo evaluate`` feeds its test split.

    ``x``: one ``HxWxC`` image or a batch ``NxHxWxC`` (or a list of images of any size),
    uint8, or float on the same 0-255 scale (Keras' convention); 1, 3 or 4 (alpha
    dropped) channels. ``name_or_spec``: ``"model.tag"``, a WeightSpec, a model with one
    weight set, or a dataset name. Images are converted to the dataset's channels,
    brought to its native size (small datasets), then resized/cropped, normalised with
    the weight set's mean/std and mapped to the model's channels by ``zoo.data.preprocess``.
    Returns float32 ``NxHxWxC`` (``HxWxC`` for one image); numpy in, numpy out.
    """
    import numpy as np
    import tensorflow as tf

    feed = _feed(name_or_spec)
    as_numpy = not tf.is_tensor(x)
    if isinstance(x, (list, tuple)):
        images, single = list(x), False
    else:
        x = x if tf.is_tensor(x) else np.asarray(x)
        if len(x.shape) == 4:
            images, single = [x[i] for i in range(x.shape[0])], False
        elif len(x.shape) in (2, 3):
            images, single = [x], True
        else:
            raise InvalidInputError(f"Expected HxWxC or NxHxWxC images, got shape {tuple(x.shape)}.")
    if not images:
        raise InvalidInputError("preprocess_input got no images.")
    batch = tf.stack([_prepare_one(image, feed) for image in images])
    if single:
        batch = batch[0]
    return batch.numpy() if as_numpy else batch


def decode_predictions(preds, top: int = 5, name_or_spec=None) -> List[List[Tuple[str, float]]]:
    """``[[(label, probability), ...], ...]``: the ``top`` classes of each row of ``preds``
    (``N x num_classes`` softmax outputs), named by the weight set's labels."""
    import numpy as np

    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim == 1:
        preds = preds[None]
    if preds.ndim != 2:
        raise InvalidInputError(f"decode_predictions expects N x classes, got shape {preds.shape}.")
    if name_or_spec is not None:
        labels = _feed(name_or_spec).labels
    elif preds.shape[1] == 1000:
        labels = _imagenet_labels()
    else:
        labels = tuple(str(i) for i in range(preds.shape[1]))
    if len(labels) != preds.shape[1]:
        raise InvalidInputError(
            f"Predictions have {preds.shape[1]} classes but the labels have {len(labels)}.")
    top = max(1, min(int(top), preds.shape[1]))
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(labels[i], float(row[i])) for i in order])
    return results


def read_image(path: os.PathLike):
    """A PNG/JPEG/GIF/BMP file as a uint8 HxWxC tensor."""
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"Image {path} does not exist.")
    try:
        return tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise InvalidInputError(f"Cannot decode {path} as a PNG, JPEG, GIF or BMP image.") from error


def _load_run(name: str, run_path, dataset: Optional[str]):
    """A model from a weights path (file or run dir) plus its feed (dataset from config.json)."""
    from zoo import data as zdata
    from zoo.training.loop import load_for_evaluation, run_config

    path = resolve_weights_path(run_path)
    if dataset is None:
        dataset = (run_config(path) or {}).get("dataset")
    if dataset is None:
        raise InvalidInputError(f"Pass the dataset {path} was trained on (--dataset): it sets the "
                                f"preprocessing and labels.")
    net, dspec, input_shape = load_for_evaluation(name, path, dataset)
    labels = tuple(zdata.class_names(dspec))
    return net, _Feed(dspec, tuple(input_shape), labels, str(path))


def predict(name: str, images: Sequence, weights=None, top: int = 5, dataset: Optional[str] = None):
    """Top-``top`` ``(label, probability)`` lists for image files or arrays.

    ``name`` may be ``"model.tag"``; ``weights`` a tag (default: the model's only weight
    set) or a weights file / run directory (``dataset`` from its config.json)."""
    from zoo.api import load

    model_name, name_tag = split_tag(name)
    entry = _entry(model_name)
    if weights is None or is_tag(entry, weights):
        spec = get_spec(entry, weights or name_tag)
        feed = _feed(spec)
        net = load(entry.name, weights=spec, input_shape=spec.input_shape,
                   num_classes=spec.num_classes, **dict(spec.model_overrides))
    else:
        net, feed = _load_run(entry.name, weights, dataset)
    arrays = [read_image(i) if isinstance(i, (str, os.PathLike)) else i for i in images]
    batch = preprocess_input(arrays, feed)
    probs = net.predict(batch, verbose=0)
    return decode_predictions(probs, top=top, name_or_spec=feed), feed.key


# ============================================================================ publish


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _manifest_lock(path: Path):
    from filelock import FileLock

    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return FileLock(os.path.join(tempfile.gettempdir(), f"zoo-manifest-{digest}.lock"), timeout=120)


def _copy_into_notop(top, notop) -> int:
    """Copy ``top``'s weights into the headless ``notop``, layer by layer in graph order;
    every layer of ``notop`` must match (class and weight shapes). Returns the count."""
    src = [layer for layer in top.layers if layer.weights]
    dst = [layer for layer in notop.layers if layer.weights]
    if len(dst) > len(src):
        raise WeightsError(f"The no-top {notop.name} has more weighted layers than the top model.")
    for a, b in zip(src, dst):
        if type(a) is not type(b) or [tuple(w.shape) for w in a.weights] != [tuple(w.shape) for w in b.weights]:
            raise WeightsError(
                f"Cannot derive no-top weights: layer {a.name} ({type(a).__name__}) does not match "
                f"{b.name} ({type(b).__name__}).")
        b.set_weights(a.get_weights())
    return len(dst)


RESULTS_FIELDS = ("model", "tag", "dataset", "split", "examples", "top1", "top5", "loss",
                  "params", "binary_params", "ops", "input_shape", "file", "recipe", "date")


def write_results_csv(manifest: Optional[os.PathLike] = None) -> Path:
    """``results.csv`` next to the manifest: one row per weight set evaluated by the zoo
    (records whose metrics came from `zoo publish`, not from a paper or larq-zoo)."""
    import csv

    mpath = manifest_path(manifest)
    records = _read_manifest_json(mpath)["records"]
    target = mpath.parent / "results.csv"
    tmp = target.with_name(f".results.{uuid.uuid4().hex[:8]}.csv")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULTS_FIELDS)
        writer.writeheader()
        for key, record in sorted(records.items()):
            metrics = record.get("metrics") or {}
            if "source" in metrics or "examples" not in metrics:  # reported, not evaluated here
                continue
            costs = record.get("costs") or {}
            writer.writerow({
                "model": record["model"], "tag": record["tag"], "dataset": metrics.get("dataset"),
                "split": metrics.get("split"), "examples": metrics.get("examples"),
                "top1": metrics.get("top1"), "top5": metrics.get("top5"), "loss": metrics.get("loss"),
                "params": costs.get("params"), "binary_params": costs.get("binary_params"),
                "ops": costs.get("ops"), "input_shape": "x".join(map(str, record.get("input_shape", []))),
                "file": record["files"]["top"]["file"],
                "recipe": (record.get("recipe") or {}).get("name"), "date": record.get("date"),
            })
    os.replace(tmp, target)
    return target


def compact_binary_kernels(model) -> int:
    """Replace latent binary kernels by the values the forward pass uses, so that
    published files compress to a fraction of their float size.

    A kernel is replaced by ``q = kernel_quantizer(kernel)`` when ``q`` is binary (one
    magnitude per output channel: ``+-1``, ``sign(w) * mean|w|`` per channel or per
    layer, XNOR's clipped scale) and the quantizer maps ``q`` onto itself, so the
    model's outputs are unchanged (to float rounding): larq's sign quantizers, its
    ``MagnitudeAwareSign``, latent-free (Bop) kernels and function quantizers alike.
    Only the latent values that training would continue from are dropped; multi-bit
    and real-valued kernels are left alone. Returns the number of kernels replaced."""
    import numpy as np
    import tensorflow as tf

    replaced, kept = 0, []
    for layer in model.layers:
        quantizer = getattr(layer, "kernel_quantizer", None)
        kernel = getattr(layer, "kernel", None)
        if quantizer is None or kernel is None:
            continue
        values = kernel.numpy()
        quantized = np.asarray(quantizer(tf.constant(values)), dtype=values.dtype)
        magnitudes = np.abs(quantized).reshape(-1, values.shape[-1])
        # q(q) differs from q by the float32 rounding of the per-channel mean, which grows
        # with the channel's length (3e-5 relative over a 3x3x1024 kernel): tolerate that
        rtol = max(1e-5, np.finfo(np.float32).eps * magnitudes.shape[0])
        binary = (  # one magnitude per channel, and the quantizer reproduces its own output
            np.allclose(magnitudes, magnitudes[:1], rtol=1e-5, atol=1e-7)
            and np.allclose(np.asarray(quantizer(tf.constant(quantized))), quantized,
                            rtol=rtol, atol=1e-7))
        if binary:
            kernel.assign(quantized)
            replaced += 1
        else:
            kept.append(layer.name)
    if kept:  # quantized kernels stored at full size: multi-bit ones, or a quantizer to check
        _log(f"{len(kept)} quantized kernel(s) stored as float (not binary, or not reproduced "
             f"by their quantizer): {', '.join(kept[:8])}{' ...' if len(kept) > 8 else ''}")
    return replaced


def _gzip_h5(source: Path, target: Path) -> None:
    """Rewrite an h5 file with every dataset gzip-compressed (h5py reads it transparently)."""
    import h5py

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                group = dst.require_group(name)
                for key, value in obj.attrs.items():
                    group.attrs[key] = value
            else:
                data = obj[()]
                kwargs = dict(compression="gzip", compression_opts=9, shuffle=True) if obj.shape else {}
                dataset = dst.create_dataset(name, data=data, **kwargs)
                for key, value in obj.attrs.items():
                    dataset.attrs[key] = value

        src.visititems(copy)


def _save_hashed(model, folder: Path, stem: str,
                 created: Optional[List[Path]] = None) -> Tuple[Path, str, int]:
    """Save ``model``'s weights (h5, no optimizer state, gzip-compressed datasets) as
    ``{stem}-{sha256[:8]}.h5``; a new file is appended to ``created``."""
    tmp = folder / f".{stem}.{uuid.uuid4().hex[:8]}.h5"
    raw = folder / f".{stem}.{uuid.uuid4().hex[:8]}.raw.h5"
    try:
        model.save_weights(str(raw), save_format="h5")
        _gzip_h5(raw, tmp)
        digest = sha256_file(tmp)
        final = folder / f"{stem}-{digest[:8]}.h5"
        if final.exists() and sha256_file(final) != digest:
            raise WeightsError(f"{final} exists with other contents; it is never overwritten.")
        if not final.exists() and created is not None:
            created.append(final)
        os.replace(tmp, final)
    finally:
        _remove(tmp, raw)
    return final, digest, final.stat().st_size


def _remove_unrecorded(paths: List[Path], mpath: Path) -> None:
    """Undo a failed publish: remove the files it wrote, except those a manifest record
    names. Files are named by their content's hash, so a concurrent publish of the same
    weights that won the manifest may have recorded the very file this one wrote."""
    from filelock import Timeout

    try:
        with _manifest_lock(mpath):
            try:
                records = _read_manifest_json(mpath)["records"].values()
            except Exception:  # an unreadable manifest names no file
                records = []
            recorded = {f.get("file") for r in records for f in r.get("files", {}).values()}
            _remove(*(p for p in paths if p.name not in recorded))
    except Timeout:  # another publish holds the manifest and may name them: leave them
        pass


def _urls(base_url: Optional[str], model: str, tag: str, file: str) -> List[str]:
    base = base_url or DEFAULT_URL_TEMPLATE
    if "{file}" in base:
        return [base.format(model=model, tag=tag, file=file)]
    return [base.rstrip("/") + "/" + file]


def _preprocessing_record(dataset, input_shape) -> Dict[str, Any]:
    return {
        "dataset": dataset.name,
        "native_shape": list(dataset.image_shape),
        "scale": 255.0,
        "mean": list(dataset.mean), "std": list(dataset.std),
        "resize": "shorter_side_center_crop" if dataset.large else (
            "none" if dataset.image_shape[0] == input_shape[0] else "pad_or_resize"),
        "crop_pct": 0.875 if dataset.large else None,
        "interpolation": "bilinear",
        "channels": int(input_shape[2]),
    }


def publish(
    run_dir: os.PathLike,
    tag: str,
    release_dir: Optional[os.PathLike] = None,
    base_url: Optional[str] = None,
    manifest: Optional[os.PathLike] = None,
    eval_limit: Optional[int] = None,
    batch_size: int = 250,
    license: str = DEFAULT_LICENSE,
    notes: Optional[str] = None,
) -> WeightSpec:
    """Turn a ``zoo train`` run directory into a published weight set.

    Writes ``{model}-{tag}-{sha[:8]}.h5`` and ``{model}-{tag}-notop-{sha[:8]}.h5``
    (weights only) into ``release_dir`` (default: the manifest's folder), evaluates the
    top file on the dataset's test split through the new record, and adds the record to
    the manifest (``manifest``, ``$ZOO_MANIFEST`` or weights/manifest.json). An existing
    ``model.tag`` is never overwritten. Returns the new spec (attached to the registry
    when ``manifest`` is the attached one).
    """
    from zoo import data as zdata
    from zoo.api import get_entry, load
    from zoo.costs import model_costs
    from zoo.training.loop import evaluate_model, run_config, run_model_overrides

    run = Path(os.path.expanduser(str(run_dir)))
    weights_path = resolve_weights_path(run)
    config = run_config(weights_path)
    if config is None:
        raise WeightsError(f"{run} has no config.json: publish a run directory written by `zoo train`.")
    entry = get_entry(config["model"])
    tag = str(tag).strip().lower()
    if not _TAG_RE.match(tag):
        raise InvalidInputError(f"Tag {tag!r} must be lowercase letters, digits and '_' (e.g. fashion_mnist).")
    key = f"{entry.name}.{tag}"
    mpath = manifest_path(manifest)
    if key in _read_manifest_json(mpath)["records"]:
        raise WeightsError(f"{key} is already published in {mpath}; a published weight set is never "
                           f"overwritten: choose a new tag (e.g. {tag}_v2).")
    folder = Path(os.path.expanduser(str(release_dir))) if release_dir else mpath.parent
    folder.mkdir(parents=True, exist_ok=True)

    dataset = zdata.get_dataset(config["dataset"])
    input_shape = tuple(int(d) for d in config["input_shape"])
    num_classes = int(config.get("num_classes", dataset.num_classes))
    overrides = run_model_overrides(config, weights_path)

    top = load(entry.name, weights=weights_path, input_shape=input_shape, num_classes=num_classes,
               **overrides)
    notop = load(entry.name, include_top=False, input_shape=input_shape, num_classes=num_classes,
                 **overrides)
    compact_binary_kernels(top)
    _copy_into_notop(top, notop)
    costs = model_costs(top)
    created: List[Path] = []  # a failed or interrupted publish (SIGTERM too, see zoo.cli)
    try:  # removes the files it wrote (temporaries: _save_hashed) and writes no record
        top_path, top_sha, top_size = _save_hashed(top, folder, f"{entry.name}-{tag}", created)
        notop_path, notop_sha, notop_size = _save_hashed(notop, folder,
                                                         f"{entry.name}-{tag}-notop", created)
        del top, notop

        record = {
            "model": entry.name, "tag": tag, "dataset": dataset.name,
            "input_shape": list(input_shape), "num_classes": num_classes,
            "files": {
                "top": {"file": top_path.name, "sha256": top_sha, "size": top_size,
                        "urls": _urls(base_url, entry.name, tag, top_path.name)},
                "notop": {"file": notop_path.name, "sha256": notop_sha, "size": notop_size,
                          "urls": _urls(base_url, entry.name, tag, notop_path.name)},
            },
            "preprocessing": _preprocessing_record(dataset, input_shape),
            "labels": list(zdata.class_names(dataset)),
            "model_overrides": overrides,
            "metrics": {}, "costs": costs,
            "recipe": config.get("recipe"), "command": config.get("command"),
            "versions": config.get("versions") or {}, "license": license,
            "date": datetime.date.today().isoformat(), "source": f"zoo publish {run.name}",
            "notes": notes,
        }
        spec = WeightSpec.from_dict(key, record, str(folder.resolve()))
        # evaluate what a user gets: the verified top file, through the record, on the test split
        net = load(entry.name, weights=spec, input_shape=input_shape, num_classes=num_classes,
                   **overrides)
        results = evaluate_model(net, dataset, input_shape, batch_size=batch_size, limit=eval_limit)
        record["metrics"] = {"dataset": dataset.name, "split": dataset.test_split,
                             "examples": results["examples"], "top1": round(results["top1"], 4),
                             "top5": round(results["top5"], 4), "loss": round(results["loss"], 6)}
        with _manifest_lock(mpath):
            data = _read_manifest_json(mpath)
            if key in data["records"]:
                raise WeightsError(f"{key} was published in {mpath} meanwhile; it is never "
                                   f"overwritten.")
            data["schema"] = MANIFEST_SCHEMA
            data["records"][key] = record
            data["records"] = dict(sorted(data["records"].items()))
            _atomic_write_json(mpath, data)  # published from here on
    except BaseException:
        _remove_unrecorded(created, mpath)
        raise
    write_results_csv(mpath)
    spec = WeightSpec.from_dict(key, record, str(folder.resolve()))
    if mpath.resolve() == manifest_path().resolve():
        _RECORDS[key] = spec
        entry.weights[tag] = spec
        _ATTACHED[(entry.name, tag)] = spec
    return spec
