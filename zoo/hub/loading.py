"""Resolving ``weights=`` once, and loading h5 weight files into a built model.

Two h5 layouts load: the packed format (:mod:`zoo.hub.packed`, one file per weight set,
``include_top=False`` takes its body) and Keras's own h5 weights files (larq-zoo's
ImageNet files, sets published before the packed format, a user's ``save_weights``).

``zoo.load`` calls :func:`resolve` once (a tag becomes a :class:`WeightSpec`, a path a
path), builds the model with the shapes and builder arguments the weights need
(:meth:`Resolved.shapes`, :attr:`Resolved.model_overrides`), then :func:`load_into`
fetches, verifies and loads the file. Builders never touch files.
"""
from __future__ import annotations

import dataclasses
import os
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Optional

from zoo.errors import InvalidInputError, WeightsError
from zoo.hub import packed
from zoo.hub.cache import PROVENANCE, fetch, fetch_file, log, remove_files, stamp_path, verify_file
from zoo.hub.releases import not_imported_error
from zoo.hub.spec import RECORDS, WeightSpec, get_spec, is_tag, split_tag, thaw
from zoo.registry import MODELS

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What ``weights=`` of ``zoo.load`` names, resolved once.

    ``spec``: a published weight set (fetched and verified by :func:`load_into`);
    ``path``: a user's h5 file (loaded as is: an explicit path is the way to use an
    unverified file); ``builder_weights``: a value the builder handles itself (larq-zoo's
    ``"imagenet"`` when the manifest has no record for it). All None: random init.
    """

    spec: Optional[WeightSpec] = None
    path: Optional[Path] = None
    builder_weights: Optional[str] = None
    include_top: bool = True

    @property
    def model_overrides(self) -> Dict[str, Any]:
        """Builder arguments the weight set was trained with (e.g. ``activation="clip"``);
        explicit overrides win over these."""
        return {} if self.spec is None else thaw(self.spec.model_overrides)

    def shapes(self, input_shape, num_classes, input_tensor=None):
        """``(input_shape, num_classes)`` to build. For a weight set, missing values
        (``None``) come from its spec, and with ``include_top`` given ones must match it
        (the keras.applications rule). Otherwise ``num_classes`` defaults to 1000. With
        ``input_tensor`` and no ``input_shape`` the tensor fixes the shape (None returned)."""
        spec, include_top = self.spec, self.include_top
        if spec is None:
            return input_shape, (1000 if num_classes is None else int(num_classes))
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


def resolve(entry, weights, include_top: bool = True) -> Resolved:
    """``weights`` of ``zoo.load`` for ``entry``: ``None``; a tag of ``entry``
    (``"fashion_mnist"``, ``"imagenet"``) or a :class:`WeightSpec`; a path to an h5 file or
    a ``zoo train`` run directory (or a ``file://`` URL of one)."""
    if weights is None:
        return Resolved(include_top=include_top)
    if isinstance(weights, WeightSpec) or is_tag(entry, weights):
        spec = weights if isinstance(weights, WeightSpec) else get_spec(entry, weights.strip().lower())
        return Resolved(spec=spec, include_top=include_top)
    if weights == "imagenet" and entry.extra.get("larq_zoo_weights") == "imagenet":
        return Resolved(builder_weights="imagenet", include_top=include_top)
    text = str(weights)
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    path = Path(os.path.expanduser(text))
    if not path.exists() and os.sep not in text and "/" not in text and not path.suffix:
        pending = not_imported_error(entry.name, text.strip().lower())
        if pending is not None:
            raise pending
        available = sorted(entry.weights)
        raise WeightsError(
            f"{weights!r} is neither a weight set of {entry.name} "
            f"({'its weight sets: ' + ', '.join(available) if available else 'it has none published'}) "
            f"nor an existing weights file or run directory.")
    return Resolved(path=resolve_weights_path(path), include_top=include_top)


def load_into(model, resolved: Resolved) -> None:
    """Load what ``resolved`` names into ``model`` (a weight set: fetched and verified first)."""
    if resolved.spec is not None:
        load_weights_file(model, fetch(resolved.spec, resolved.include_top), resolved.include_top)
    elif resolved.path is not None:
        load_weights_file(model, resolved.path, resolved.include_top)


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


def _load_h5(model, path: Path, include_top: bool = True) -> None:
    if not _is_hdf5(path):
        raise WeightsError(
            f"{path} is not an HDF5 (.h5) weights file: the zoo loads weights from h5 only "
            f"(never pickle); save them with model.save_weights('weights.h5').")
    if packed.is_packed(path):
        packed.load_packed(model, path, include_top)
    else:
        model.load_weights(str(path))


def load_weights_file(model, weights, include_top: bool = True) -> None:
    """Load an h5 weights file (or a run directory's weights.h5) into ``model``; a packed
    file loads into a model built with ``include_top=False`` too (its body).

    A file the zoo fetched from a weight set is re-hashed in full when loading fails: a
    damaged cached copy is deleted and downloaded again once; a good one means the
    model does not match the weights (input shape, classes, overrides)."""
    path = resolve_weights_path(weights)
    try:
        _load_h5(model, path, include_top)
        return
    except (OSError, ValueError, KeyError) as error:
        first_error = error
    provenance = PROVENANCE.get(str(path))
    if provenance is not None:
        wf, model_name, root = provenance
        ok, reason = verify_file(path, wf, use_stamp=False)
        if not ok:
            if root is None:
                raise WeightsError(f"{path} (a read-only copy of {wf.file}) is damaged: {reason}. "
                                   f"Replace it, or remove its folder from ZOO_CACHE_PATH.") from first_error
            log(f"{path} is damaged ({reason}); deleting it and downloading it again.")
            remove_files(path, stamp_path(path))
            tag = next((s.tag for s in RECORDS.values() if wf in s.files()), "")
            fresh = fetch_file(model_name, tag, wf, None, root)
            try:
                _load_h5(model, fresh, include_top)
                return
            except (OSError, ValueError, KeyError) as error:
                first_error = error
    message = str(first_error).strip()
    first_line = (message.splitlines()[0] if message else type(first_error).__name__).rstrip(".")
    raise WeightsError(
        f"Cannot load weights from {path} into {model.name}: {first_line}. Check that the "
        f"file is a complete h5 weights file for this model, input shape and number of classes."
    ) from first_error

