"""The packed weights format: one HDF5 file per weight set, binary kernels at one bit.

A packed file holds every weight of a model in graph order (the weighted layers of
``model.layers``, each layer's ``weights``), in four datasets (HDF5 1.10 layout):

- ``bits`` (uint8): each binary kernel's signs, ``np.packbits`` of ``w < 0`` in C order,
  one byte-aligned run per kernel;
- ``scales`` (float32): each binary kernel's magnitude, one per output channel (the
  last axis), or a single one when every channel has the same magnitude (``+-1``);
- ``real`` (float32, gzip-compressed): every other float32 weight, flattened in C order;
- ``layout`` (uint8, a gzip-compressed UTF-8 JSON text): per layer its name, class and weights (name,
  shape, dtype, kind ``binary``/``real``/``other``, number of scales); weights of
  another dtype are stored as they are in ``other/<n>``.

A kernel is stored as binary only when that is exact: every value of an output
channel has the same magnitude (``sign * scale`` reproduces it bit for bit) and the
bits are smaller than the floats. The file's root attributes ``zoo_format`` and
``zoo_format_version`` tell it from a Keras h5 weights file, which
:func:`zoo.hub.loading.load_weights_file` still loads as before. A model built with
``include_top=False`` takes the leading layers of the same file (the body).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

import h5py
import numpy as np

FORMAT = "zoo.packed"
FORMAT_VERSION = 1
_GZIP = dict(compression="gzip", compression_opts=9, track_times=False)
_PLAIN = dict(track_times=False)  # signs and scales do not compress: stored as they are
# HDF5 1.10's object headers and chunk indexes: a few KB per file instead of tens
_LIBVER = ("v110", "v110")


def _weighted_layers(model) -> list:
    return [layer for layer in model.layers if layer.weights]


def binary_scales(values: np.ndarray):
    """The per-output-channel magnitudes of a kernel whose channels each hold one
    magnitude (one value when all channels share it), else None."""
    if values.dtype != np.float32 or values.ndim < 2 or values.size < 2:
        return None
    magnitudes = np.abs(values).reshape(-1, values.shape[-1])
    if not np.all(magnitudes == magnitudes[:1]):  # NaN too: never equal
        return None
    scales = magnitudes[0]
    if np.all(scales == scales[0]):
        scales = scales[:1]
    if (values.size + 7) // 8 + 4 * scales.size >= 4 * values.size:  # no smaller than floats
        return None
    return np.ascontiguousarray(scales, dtype=np.float32)


def _unpack_binary(bits: np.ndarray, scales: np.ndarray, shape) -> np.ndarray:
    count = int(np.prod(shape))
    negative = np.unpackbits(bits, count=count).astype(bool).reshape(shape)
    return np.where(negative, -scales, scales).astype(np.float32)


def is_packed(path: os.PathLike) -> bool:
    """Whether ``path`` (an HDF5 file) is in the packed format."""
    with h5py.File(path, "r") as handle:
        return handle.attrs.get("zoo_format") == FORMAT


def save_packed(model, path: os.PathLike) -> Dict[str, int]:
    """Write ``model``'s weights to ``path`` in the packed format; returns the counts
    (:func:`summary` of the file)."""
    layers: List[Dict[str, Any]] = []
    bits, scales, real, other = [], [], [], []
    for layer in _weighted_layers(model):
        entries = []
        for variable, values in zip(layer.weights, layer.get_weights()):
            values = np.asarray(values)
            entry = {"name": variable.name, "shape": list(values.shape), "dtype": values.dtype.name}
            channel_scales = binary_scales(values)
            if channel_scales is not None:
                entry.update(kind="binary", scales=int(channel_scales.size))
                bits.append(np.packbits(np.signbit(values).reshape(-1)))
                scales.append(channel_scales)
            elif values.dtype == np.float32:
                entry["kind"] = "real"
                real.append(values.reshape(-1))
            else:
                entry.update(kind="other", index=len(other))
                other.append(values)
            entries.append(entry)
        layers.append({"name": layer.name, "class": type(layer).__name__, "weights": entries})
    layout = json.dumps({"layers": layers}, separators=(",", ":")).encode("utf-8")

    def blob(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0,), dtype)

    with h5py.File(path, "w", libver=_LIBVER) as handle:
        handle.attrs["zoo_format"] = FORMAT
        handle.attrs["zoo_format_version"] = FORMAT_VERSION
        handle.create_dataset("layout", data=np.frombuffer(layout, np.uint8), **_GZIP)
        handle.create_dataset("bits", data=blob(bits, np.uint8), **_PLAIN)
        handle.create_dataset("scales", data=blob(scales, np.float32), **_PLAIN)
        handle.create_dataset("real", data=blob(real, np.float32), shuffle=True, **_GZIP)
        for index, values in enumerate(other):
            extra = _GZIP if values.shape else _PLAIN
            handle.create_dataset(f"other/{index}", data=values, **extra)
    return summary(path)


def _read(path: os.PathLike) -> Tuple[List[Dict[str, Any]], Dict[str, np.ndarray], h5py.File]:
    handle = h5py.File(path, "r")
    try:
        version = int(handle.attrs.get("zoo_format_version", 0))
        if handle.attrs.get("zoo_format") != FORMAT or version > FORMAT_VERSION:
            raise ValueError(f"not a packed weights file of version <= {FORMAT_VERSION} "
                             f"(format {handle.attrs.get('zoo_format')!r}, version {version}): "
                             f"upgrade the zoo")
        layout = json.loads(bytes(handle["layout"][()]).decode("utf-8"))["layers"]
        blobs = {name: handle[name][()] for name in ("bits", "scales", "real")}
    except BaseException:
        handle.close()
        raise
    return layout, blobs, handle


def _sizes(weights) -> Tuple[int, int, int]:
    """(bytes of bits, scales, real values) the weights of one layer take."""
    nbits = nscales = nreal = 0
    for weight in weights:
        count = int(np.prod(weight["shape"], dtype=np.int64))
        if weight["kind"] == "binary":
            nbits += (count + 7) // 8
            nscales += int(weight["scales"])
        elif weight["kind"] == "real":
            nreal += count
    return nbits, nscales, nreal


def _check_totals(layout, blobs) -> None:
    totals = np.sum([_sizes(layer["weights"]) for layer in layout], axis=0, dtype=np.int64) \
        if layout else np.zeros(3, np.int64)
    for name, want in zip(("bits", "scales", "real"), totals):
        if blobs[name].size != want:
            raise ValueError(f"the packed file is damaged: its {name!r} dataset holds "
                             f"{blobs[name].size} values, its layout names {int(want)}")


def load_packed(model, path: os.PathLike, include_top: bool = True) -> None:
    """Load a packed file into the built ``model``: every weighted layer in graph order,
    or with ``include_top=False`` the leading layers (a model built without its head).
    A layer whose class or weight shapes differ from the file's raises ValueError."""
    import tensorflow as tf

    layout, blobs, handle = _read(path)
    try:
        _check_totals(layout, blobs)
        targets = _weighted_layers(model)
        if len(targets) > len(layout) or (include_top and len(targets) != len(layout)):
            raise ValueError(
                f"the file holds {len(layout)} weighted layers, the model has {len(targets)}"
                f"{'' if include_top else ' (with include_top=False at most as many)'}")
        offsets = [0, 0, 0]
        assignments = []
        for layer, record in zip(targets, layout):
            shapes = [tuple(w["shape"]) for w in record["weights"]]
            own = [tuple(int(d) for d in w.shape) for w in layer.weights]
            if type(layer).__name__ != record["class"] or own != shapes:
                raise ValueError(
                    f"layer {layer.name} ({type(layer).__name__}, weights {own}) does not match "
                    f"the file's {record['name']} ({record['class']}, weights {shapes})")
            for variable, weight in zip(layer.weights, record["weights"]):
                shape, count = tuple(weight["shape"]), int(np.prod(weight["shape"], dtype=np.int64))
                if weight["kind"] == "binary":
                    nbytes, nscales = (count + 7) // 8, int(weight["scales"])
                    values = _unpack_binary(blobs["bits"][offsets[0]:offsets[0] + nbytes],
                                            blobs["scales"][offsets[1]:offsets[1] + nscales], shape)
                    offsets[0] += nbytes
                    offsets[1] += nscales
                elif weight["kind"] == "real":
                    values = blobs["real"][offsets[2]:offsets[2] + count].reshape(shape)
                    offsets[2] += count
                else:
                    values = handle[f"other/{int(weight['index'])}"][()]
                assignments.append((variable, values))
        tf.keras.backend.batch_set_value(assignments)
    finally:
        handle.close()


def binary_weight_names(path: os.PathLike) -> List[str]:
    """The names of the weights a packed file stores at one bit, in graph order."""
    layout, _, handle = _read(path)
    handle.close()
    return [w["name"] for layer in layout for w in layer["weights"] if w["kind"] == "binary"]


def summary(path: os.PathLike) -> Dict[str, int]:
    """Counts of a packed file: ``binary_weights``, ``bits_bytes``, ``scales``,
    ``real_params`` (float32 values and other weights), ``file_bytes``; and
    ``bits_per_binary_weight`` (scales counted at 32 bits)."""
    layout, blobs, handle = _read(path)
    try:
        _check_totals(layout, blobs)
        binary = real = 0
        for layer in layout:
            for weight in layer["weights"]:
                count = int(np.prod(weight["shape"], dtype=np.int64))
                if weight["kind"] == "binary":
                    binary += count
                else:
                    real += count
    finally:
        handle.close()
    return {
        "binary_weights": binary, "bits_bytes": int(blobs["bits"].size),
        "scales": int(blobs["scales"].size), "real_params": real,
        "file_bytes": Path(path).stat().st_size,
        "bits_per_binary_weight": (8 * int(blobs["bits"].size) + 32 * int(blobs["scales"].size))
        / binary if binary else 0.0,
    }
