"""Weight files: where they are looked for, verified, downloaded and cached.

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

import hashlib
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from zoo import settings
from zoo.errors import WeightsError
from zoo.hub.spec import REPO_WEIGHTS_DIR, RECORDS, WeightFile, WeightSpec, get_spec

CHUNK_SIZE = 1 << 20



def weights_dir(root: Optional[os.PathLike] = None, model: Optional[str] = None) -> Path:
    """Where the writable cache keeps weight files (``<root>/weights[/MODEL]``)."""
    base = settings.cache_root(root) / "weights"
    return base / model if model else base


def _read_only_candidates(spec_model: str, wf: WeightFile, origin: Optional[str]) -> List[Path]:
    candidates: List[Path] = []
    for root in settings.cache_search_path():
        candidates += [root / "weights" / spec_model / wf.file, root / spec_model / wf.file, root / wf.file]
    for folder in (origin, str(REPO_WEIGHTS_DIR)):
        if folder:
            candidates += [Path(folder) / wf.file, Path(folder) / spec_model / wf.file]
    return list(dict.fromkeys(candidates))


def _keras_candidates(wf: WeightFile) -> List[Path]:
    if not wf.keras_cache_subdir:
        return []
    return [root / wf.keras_cache_subdir / wf.file for root in settings.keras_cache_roots()]



def sha256_file(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


# read-only files verified in this process: {(path, size, mtime_ns): sha256}
VERIFIED: Dict[Tuple[str, int, int], str] = {}
# files handed to a builder: {path: (WeightFile, model, cache root or None if read-only)}
PROVENANCE: Dict[str, Tuple[WeightFile, str, Optional[Path]]] = {}


def stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    try:
        stamp_path(path).write_text(json.dumps(
            {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    except OSError:
        pass  # a stamp only saves a re-hash


def remove_files(*paths: Path) -> None:
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
        if VERIFIED.get(memo_key) == wf.sha256:
            return True, "verified earlier"
        try:
            stamp = json.loads(stamp_path(path).read_text())
            if (stamp.get("sha256"), stamp.get("size"), stamp.get("mtime_ns")) == (
                    wf.sha256, stat.st_size, stat.st_mtime_ns):
                VERIFIED[memo_key] = wf.sha256
                return True, "verification stamp"
        except (OSError, ValueError, AttributeError):
            pass
    try:
        actual = sha256_file(path)
    except OSError as error:
        return False, f"cannot read it ({error.strerror or error})"
    if actual != wf.sha256:
        VERIFIED.pop(memo_key, None)
        return False, f"sha256 {actual}, expected {wf.sha256}"
    VERIFIED[memo_key] = actual
    return True, "sha256 checked"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)



class _Truncated(Exception):
    pass


class _Mismatch(Exception):
    def __init__(self, actual: str, size: int):
        super().__init__(actual)
        self.actual, self.size = actual, size


def _mirror_urls(model: str, tag: str, wf: WeightFile) -> List[str]:
    mirrors = settings.mirrors()
    if not mirrors:
        return list(wf.urls)
    urls = []
    for base in mirrors:
        if "{file}" in base:
            urls.append(base.format(file=wf.file, model=model, tag=tag))
        else:
            urls.append(base.rstrip("/") + "/" + wf.file)
    return urls


class _Progress:
    """Download progress on stderr: a live line on a terminal, a few lines otherwise."""

    def __init__(self, label: str, total: Optional[int], enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.next_step = 0.25
        if enabled:
            size = f" ({total / 2**20:.1f} MiB)" if total else ""
            log(f"Downloading {label}{size}")

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self.tty and time.monotonic() - self.last > 0.2:
            self.last = time.monotonic()
            pct = f" {100 * done / self.total:5.1f}%" if self.total else ""
            sys.stderr.write(f"\r  {done / 2**20:8.1f} MiB{pct}")
            sys.stderr.flush()
        elif not self.tty and self.total and done / self.total >= self.next_step:
            log(f"  {100 * done / self.total:.0f}%")
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
        response = urllib.request.urlopen(request, timeout=settings.download_timeout())
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
        VERIFIED[(str(dest.resolve()), dest.stat().st_size, dest.stat().st_mtime_ns)] = actual
    finally:
        remove_files(partial)


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
                    log(f"Download of {wf.file} from {url} was truncated ({error}); retrying once.")
                    continue
            except _Mismatch as error:
                failures.append(f"{url}: sha256 mismatch")
                mismatch = mismatch or (url, error)
                log(f"Rejected {wf.file} from {url}: sha256 {error.actual} ({error.size} bytes), "
                     f"expected {wf.sha256}.")
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                failures.append(f"{url}: {reason}")
                log(f"Could not download {wf.file} from {url}: {reason}")
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
                PROVENANCE[str(candidate)] = (wf, model, None)
                return candidate
            log(f"Ignoring {candidate}: {reason}.")
    root = settings.cache_root(cache_dir)
    folder = root / "weights" / model
    dest = folder / wf.file
    if dest.is_file():  # fast path, without the lock
        ok, reason = verify_file(dest, wf)
        if ok:
            if reason == "sha256 checked":
                _write_stamp(dest, wf.sha256)
            PROVENANCE[str(dest)] = (wf, model, root)
            return dest
    for candidate in _keras_candidates(wf):
        if candidate.is_file() and verify_file(candidate, wf)[0]:
            PROVENANCE[str(candidate)] = (wf, model, None)
            return candidate
    if settings.offline():
        raise _offline_error(model, tag, wf, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(root / "weights", wf.file, timeout=max(600.0, 10 * settings.download_timeout()))
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
                    PROVENANCE[str(dest)] = (wf, model, root)
                    return dest
                log(f"Cached {dest} is damaged ({reason}); downloading it again.")
                remove_files(dest, stamp_path(dest))
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
    PROVENANCE[str(dest)] = (wf, model, root)
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
    by_file = {wf.file: (spec, wf) for spec in RECORDS.values() for wf in spec.files()}
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


def _written_by_the_cache(path: Path, known: set) -> bool:
    """A weight file of a manifest record, its verification stamp or download lock, or a
    partial download of one (``FILE.<12 hex>.partial``): the only files ``clear_cache`` deletes."""
    name = path.name
    if name.endswith((".verified", ".lock")):
        name = name.rsplit(".", 1)[0]
    elif name.endswith(".partial"):
        name = name[: -len(".partial")].rsplit(".", 1)[0]
    return name in known


def clear_cache(model: Optional[str] = None, cache_dir: Optional[os.PathLike] = None) -> List[str]:
    """Delete cached weight files (of one model, or all); returns the removed paths.

    Only what the cache writes goes: the weight files that manifest records name, their
    stamps and partial downloads. Anything else in the folder (a file the zoo did not
    write) is left where it is."""
    base = weights_dir(cache_dir)
    if not base.is_dir():
        return []
    known = {wf.file for spec in RECORDS.values() for wf in spec.files()}
    folders = [base / model] if model else [p for p in base.iterdir() if p.is_dir()]
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and _written_by_the_cache(path, known):
                path.unlink()
                if not path.name.endswith(".verified"):
                    removed.append(str(path))
        try:
            folder.rmdir()
        except OSError:
            pass
    VERIFIED.clear()
    return sorted(removed)

