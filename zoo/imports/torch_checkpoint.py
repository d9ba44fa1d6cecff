"""Read a PyTorch checkpoint's tensors as numpy arrays, without PyTorch and without
running its pickle.

Both of ``torch.save``'s formats: the zip archive (PyTorch >= 1.6: ``*/data.pkl`` plus
one raw file per storage) and the legacy stream (a magic number, the protocol, system
info, the object pickle, the storage keys, then each storage's bytes). The object pickle
is read by a restricted unpickler: it resolves only the tensor/storage rebuild
functions, ``OrderedDict``, numeric numpy scalars and latin-1 bytes; any other global
(``os.system``, a class of the training code, ...) is refused when the pickle names it,
before anything is called. :func:`read_state_dict` unwraps ``{"state_dict": ...}`` and
strips DataParallel's ``module.`` prefix.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np

from zoo.errors import WeightsError

# torch's storage classes -> numpy dtype (bfloat16 is widened to float32 on reading)
STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_NUMERIC_KINDS = "biufc"


class _StorageType:
    """What a pickle's ``torch.FloatStorage`` (etc.) resolves to: a dtype marker."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


def _decode(raw: bytes, dtype) -> np.ndarray:
    if isinstance(dtype, str):  # bfloat16: the upper half of a float32
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """``torch._utils._rebuild_tensor_v2`` on a numpy storage: a strided view, copied."""
    flat = np.asarray(storage)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(flat[int(offset)])
    needed = int(offset) + sum((s - 1) * t for s, t in zip(size, stride)) + 1 if all(size) else 0
    if needed > flat.size:
        raise WeightsError("a tensor reaches past the end of its storage (damaged checkpoint).")
    view = np.lib.stride_tricks.as_strided(flat[int(offset):], size,
                                           tuple(t * flat.itemsize for t in stride))
    return np.array(view, dtype=flat.dtype if flat.dtype != np.float16 else np.float32)


def _rebuild_parameter(data, *_ignored):
    return data


def _numpy_scalar(dtype, raw=None):
    dtype = np.dtype(dtype)
    if dtype.kind not in _NUMERIC_KINDS or not isinstance(raw, bytes):
        raise WeightsError(f"the checkpoint holds a numpy scalar of type {dtype}: only numbers "
                           f"are read.")
    return np.frombuffer(raw, dtype=dtype, count=1)[0]


def _numpy_dtype(name, *_flags):
    dtype = np.dtype(name)
    if dtype.kind not in _NUMERIC_KINDS:
        raise WeightsError(f"the checkpoint holds a numpy {dtype} value: only numbers are read.")
    return dtype


def _latin1_bytes(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise WeightsError(f"the checkpoint encodes bytes as {encoding!r}: only latin-1 is read.")
    return text.encode("latin-1")


# every global a checkpoint's pickle may name, and what it resolves to here
ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RefusedPickle(WeightsError):
    """The checkpoint's pickle names a global that is not a tensor or a plain container."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle, load_storage: Callable):
        super().__init__(handle)
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"its pickle calls {module}.{name}, which is neither a tensor nor a plain "
                f"container; it was not run. A released state dict holds only tensors: "
                f"re-save it as one, or get the file from the release page.") from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise RefusedPickle(f"its pickle refers to an unknown object {pid!r}; it was not run.")
        return self._load_storage(pid)


def _storage_args(pid) -> Tuple[_StorageType, str]:
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
        raise RefusedPickle(f"its pickle names a storage of unknown type {storage_type!r}.")
    return storage_type, key


def _load_zip(handle: zipfile.ZipFile) -> Any:
    names = handle.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise WeightsError("it is a zip archive without PyTorch's data.pkl.")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in names and handle.read(byteorder).strip() not in (b"little", b""):
        raise WeightsError("it was saved on a big-endian machine; only little-endian files are read.")

    def load_storage(pid):
        storage_type, key = _storage_args(pid)
        return _decode(handle.read(f"{prefix}data/{key}"), storage_type.dtype)

    return _Unpickler(io.BytesIO(handle.read(pickles[0])), load_storage).load()


def _load_legacy(handle) -> Any:
    """The legacy stream: the tensors of the object pickle are rebuilt once their
    storages' bytes (after the pickle) are read."""
    def plain(stream):  # the header pickles hold numbers and dicts of numbers only
        return _Unpickler(stream, lambda pid: (_ for _ in ()).throw(
            RefusedPickle("its header refers to a storage."))).load()

    if plain(handle) != _LEGACY_MAGIC:
        raise WeightsError("it is neither a zip nor a legacy PyTorch file (no magic number).")
    plain(handle)  # protocol version
    plain(handle)  # system info

    class Storage:  # filled in after the object pickle, when the raw bytes are read
        def __init__(self, key, dtype):
            self.key, self.dtype, self.data = key, dtype, None

    storages: Dict[str, Storage] = {}

    def load_storage(pid):
        storage_type, key = _storage_args(pid)
        storage = storages.setdefault(key, Storage(key, storage_type.dtype))
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise WeightsError("it uses legacy storage views, which this reader does not support.")
        return storage

    tensors_pending = []

    def rebuild(storage, *args):
        tensors_pending.append((storage, args))
        return _Pending(len(tensors_pending) - 1)

    unpickler = _Unpickler(handle, load_storage)
    unpickler.find_class = lambda module, name: (  # tensors resolve once the bytes are read
        rebuild if (module, name) in (("torch._utils", "_rebuild_tensor_v2"),
                                      ("torch._utils", "_rebuild_tensor"))
        else _Unpickler.find_class(unpickler, module, name))
    result = unpickler.load()
    keys = plain(handle)
    if not isinstance(keys, list):
        raise WeightsError("its storage list is damaged.")
    for key in keys:
        storage = storages.get(str(key))
        header = handle.read(8)
        if storage is None or len(header) != 8:
            raise WeightsError("its storages end early (truncated file).")
        (count,) = struct.unpack("<q", header)
        itemsize = 2 if isinstance(storage.dtype, str) else np.dtype(storage.dtype).itemsize
        raw = handle.read(count * itemsize)
        if len(raw) != count * itemsize:
            raise WeightsError("its storages end early (truncated file).")
        storage.data = _decode(raw, storage.dtype)
    if any(s.data is None for s in storages.values()):
        raise WeightsError("a storage is missing from the file (truncated file).")
    built = [_rebuild_tensor(storage.data, *args) for storage, args in tensors_pending]
    return _resolve_pending(result, built)


class _Pending:
    """A legacy-format tensor whose storage bytes come after the object pickle."""

    def __init__(self, index: int):
        self.index = index


def _resolve_pending(value, built):
    if isinstance(value, _Pending):
        return built[value.index]
    if isinstance(value, dict):
        resolved = type(value)() if isinstance(value, collections.OrderedDict) else {}
        for key, item in value.items():
            resolved[key] = _resolve_pending(item, built)
        return resolved
    if isinstance(value, list):
        return [_resolve_pending(item, built) for item in value]
    if isinstance(value, tuple):
        return tuple(_resolve_pending(item, built) for item in value)
    return value


def load_checkpoint(path) -> Any:
    """The object ``torch.save`` wrote to ``path``, tensors as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Checkpoint {path} does not exist: pass the downloaded release file.")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as handle:
                return _load_zip(handle)
        if tarfile.is_tarfile(path):
            raise WeightsError("it is in PyTorch's pre-0.4 tar format: load it with PyTorch and "
                               "re-save its state dict with torch.save.")
        with path.open("rb") as handle:
            return _load_legacy(handle)
    except RefusedPickle as error:
        raise RefusedPickle(f"Refusing checkpoint {path}: {error}") from None
    except WeightsError as error:
        raise WeightsError(f"Cannot read checkpoint {path}: {error}") from None
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError, ValueError,
            struct.error, TypeError, IndexError, AttributeError) as error:
        raise WeightsError(
            f"Cannot read checkpoint {path}: it is truncated or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error)[:120]}). Download it again.") from None


def read_state_dict(path) -> Dict[str, np.ndarray]:
    """The tensors of a checkpoint by name: ``{"state_dict": ...}`` unwrapped, a
    ``module.`` prefix (DataParallel) stripped; the order of the file is kept."""
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"Checkpoint {path} holds no state dict (a name -> tensor mapping).")
    state: Dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise WeightsError(f"Checkpoint {path}: {key!r} is not a tensor; pass a file saved "
                               f"from a model's state_dict().")
        name = str(key)
        name = name[len("module."):] if name.startswith("module.") else name
        if name in state:
            raise WeightsError(f"Checkpoint {path} names {name!r} twice (with and without 'module.').")
        state[name] = value
    return state
