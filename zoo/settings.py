"""Every environment variable the zoo reads, read here and only here.

=========================  ==================================================================
``ZOO_OFFLINE``            1/true/yes/on: never touch the network (weights, datasets, extractors)
``ZOO_HOME``               the writable cache root (default: the platform cache folder)
``ZOO_CACHE_PATH``         read-only folders (``os.pathsep``-separated) searched for weight files
``ZOO_MANIFEST``           the weights manifest to read (default: the repository's)
``ZOO_MIRROR``             comma-separated mirrors that replace the weight files' URLs
``ZOO_DOWNLOAD_TIMEOUT``   seconds per download connection (default 60)
``ZOO_DATA_DIR``           tensorflow-datasets' data folder
``ZOO_MANUAL_DIR``         a folder of manually downloaded dataset files
``ZOO_TF_VERBOSE``         1: show TensorFlow's C++ start-up messages
``KERAS_HOME``             Keras' cache (larq-zoo and keras.applications downloads)
``XDG_CACHE_HOME``         the platform cache folder on Linux
``TF_CONFIG``, ``TPU_NAME``  tf.distribute's cluster (multiworker) and TPU
=========================  ==================================================================

Also: making sure TensorFlow runs with Keras 2 (tf-keras), which Larq requires.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from zoo.errors import InvalidInputError

DEFAULT_DOWNLOAD_TIMEOUT_S = 60.0
# Zoo-wide defaults that several layers share (written once, here):
EVAL_BATCH_SIZE = 250  # test-split batch of every evaluation (evaluate, publish, searches)
MAX_IMAGE_SIZE = 1024  # pixels per side of --image-size: the largest entry needs 224; more runs out of memory
MAX_SEED = 2**32 - 1  # the largest seed NumPy takes

KERAS3_MESSAGE = (
    "zoo needs Keras 2 (the tf-keras package), but TensorFlow was already imported "
    "with Keras 3. Import zoo before TensorFlow, or set TF_USE_LEGACY_KERAS=1 in the "
    "environment before Python starts (e.g. `export TF_USE_LEGACY_KERAS=1`)."
)


def _get(name: str) -> str:
    return os.environ.get(name, "").strip()


def truthy(value: Optional[str]) -> bool:
    """1/true/yes/on (any case) -> True."""
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """``ZOO_OFFLINE``: never touch the network."""
    return truthy(_get("ZOO_OFFLINE"))


def tf_verbose() -> bool:
    return truthy(_get("ZOO_TF_VERBOSE"))


def _expand(text: str) -> Path:
    return Path(os.path.expanduser(text))


def _path(name: str) -> Optional[Path]:
    """A folder or file variable, ``~`` expanded; None when it is not set."""
    value = _get(name)
    return _expand(value) if value else None


def cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    """The writable cache root: the argument, else ``$ZOO_HOME``, else the platform cache
    folder (``$XDG_CACHE_HOME/zoo`` = ``~/.cache/zoo`` on Linux)."""
    if cache_dir is not None:
        return _folder(_expand(str(cache_dir)), "--cache-dir")
    home = _path("ZOO_HOME")
    if home is not None:
        return _folder(home, "ZOO_HOME")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
        return Path(base) / "zoo" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "zoo"
    return Path(_get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo"


def _folder(path: Path, name: str) -> Path:
    """``path`` unless it is an existing file (a folder is meant)."""
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{name}={path} is a file: point it at a folder (created if missing).")
    return path


def cache_search_path() -> List[Path]:
    """``$ZOO_CACHE_PATH``: read-only folders searched before the writable cache."""
    return [_expand(p.strip()) for p in _get("ZOO_CACHE_PATH").split(os.pathsep) if p.strip()]


def manifest_override() -> Optional[Path]:
    """``$ZOO_MANIFEST``, or None."""
    return _path("ZOO_MANIFEST")


def mirrors() -> List[str]:
    """``$ZOO_MIRROR``: mirror bases (``URL`` or a template with ``{file}``), in order."""
    return [m.strip() for m in _get("ZOO_MIRROR").split(",") if m.strip()]


def download_timeout() -> float:
    """``$ZOO_DOWNLOAD_TIMEOUT``: seconds per download connection (a number > 0)."""
    text = _get("ZOO_DOWNLOAD_TIMEOUT")
    try:
        seconds = float(text or DEFAULT_DOWNLOAD_TIMEOUT_S)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise InvalidInputError(f"ZOO_DOWNLOAD_TIMEOUT={text}: give the seconds per download "
                                f"connection as a number > 0 (default {DEFAULT_DOWNLOAD_TIMEOUT_S:g}).")
    return seconds


def keras_home() -> Path:
    """Keras' cache folder: ``$KERAS_HOME``, else ``~/.keras`` (as ``tf.keras.utils.get_file``)."""
    return _path("KERAS_HOME") or Path.home() / ".keras"


def keras_cache_roots() -> List[Path]:
    """Where Keras may have cached a download: ``keras_home()``, ``~/.keras`` and the
    temporary folder Keras falls back to when the home one is not writable."""
    roots = [keras_home(), Path.home() / ".keras", Path(tempfile.gettempdir()) / ".keras"]
    return list(dict.fromkeys(roots))


def data_dir() -> Optional[str]:
    """``$ZOO_DATA_DIR``: tensorflow-datasets' data folder (None: tfds' default)."""
    return _get("ZOO_DATA_DIR") or None


def manual_dir_root() -> Optional[Path]:
    """``$ZOO_MANUAL_DIR``: manually downloaded dataset files (None: not set)."""
    return _path("ZOO_MANUAL_DIR")


def tf_config() -> str:
    """``$TF_CONFIG``: the multiworker cluster as JSON ('' when not set)."""
    return os.environ.get("TF_CONFIG", "")


def tpu_name() -> str:
    return _get("TPU_NAME")


def _quiet_import_tensorflow():
    """Import TensorFlow with the C++ start-up chatter (CUDA plugin registration on
    machines without a GPU) kept off stderr; ZOO_TF_VERBOSE=1 shows it."""
    if tf_verbose():
        import tensorflow  # noqa: F401

        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. a captured stream in tests
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stderr_fd)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, stderr_fd)
        os.close(saved)
        os.close(devnull)


def ensure_legacy_keras(import_now: bool = True) -> None:
    """Set ``TF_USE_LEGACY_KERAS=1`` or raise if it is too late for it.

    ``import_now``: import TensorFlow here (quietly) when it is not imported yet;
    ``False`` only sets the variables, for commands that never need TensorFlow."""
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ chatter off; errors still raise
        if import_now:
            _quiet_import_tensorflow()
        return
    import tensorflow as tf

    if tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        return
    raise ImportError(KERAS3_MESSAGE)
