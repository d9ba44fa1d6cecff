"""zoo.hub: manifest records, verified download and cache, offline mode, mirrors,
locking, the read-only search path, resolving weights= and loading.

Downloads come from a local HTTP server on 127.0.0.1 (port 0) serving a temp folder;
every test has its own cache ($ZOO_HOME) and manifest ($ZOO_MANIFEST), so the
committed weights/manifest.json and ~/.cache/zoo are never touched.
"""
import dataclasses
import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_one_error_line, cache_files, invoke

import zoo
from zoo import data as zdata
from zoo.cli import cli
from zoo.hub import cache as zcache, loading as zloading, packed as zpacked, spec as zspec
from zoo.errors import WeightsError

MODEL = "birealnet18"
SHAPE = (28, 28, 3)
CLASSES = 10


# ----------------------------------------------------------------------------- server


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``server.state["root"]``; can truncate or slow down a file."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        state = self.server.state
        name = self.path.split("?")[0].lstrip("/")
        with state["lock"]:
            state["requests"].append(name)
        path = Path(state["root"]) / name
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        with state["lock"]:
            truncate = state["truncate"].get(path.name, 0)
            if truncate:
                state["truncate"][path.name] = truncate - 1
        if truncate:  # promise every byte, send half, hang up
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        step = 64 * 1024
        for start in range(0, len(data), step):
            self.wfile.write(data[start:start + step])
            if state["delay"]:
                time.sleep(state["delay"])
        self.wfile.flush()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = {"root": root, "requests": [], "truncate": {}, "delay": 0.0,
                   "lock": threading.Lock()}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.root = root
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


DEAD_URL = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


pytestmark = pytest.mark.usefixtures("isolated_weights")


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _record(file, sha, size, urls, tag="test", model=MODEL, notop=None):
    return {
        "model": model, "tag": tag, "dataset": "fashion_mnist",
        "input_shape": list(SHAPE), "num_classes": CLASSES,
        "files": {"top": {"file": file, "sha256": sha, "size": size, "urls": list(urls)},
                  "notop": notop},
        "preprocessing": {"dataset": "fashion_mnist", "mean": [0.286], "std": [0.353]},
        "labels": list(zdata.get_dataset("fashion_mnist").labels),
        "metrics": {}, "license": "Apache-2.0", "date": "2025-01-01",
    }


def _write_manifest(*records) -> Path:
    path = zspec.manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "records": {f"{r['model']}.{r['tag']}": r for r in records}}))
    zspec.attach_manifest(path)
    return path


@pytest.fixture
def payload(server):
    """A 300 KB file (the download machinery does not care that it is not h5) and its record."""
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    sha = hashlib.sha256(data).hexdigest()
    name = f"payload-{sha[:8]}.h5"
    (server.root / name).write_bytes(data)
    return {"name": name, "sha": sha, "size": len(data), "data": data}


def _spec(payload, urls, **kwargs):
    _write_manifest(_record(payload["name"], payload["sha"], payload["size"], urls, **kwargs))
    return zspec.get_spec(MODEL, kwargs.get("tag", "test"))


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """Bi-Real Net-18 at 28x28x3 / 10 classes: its h5 weights and the weight values."""
    folder = tmp_path_factory.mktemp("small")
    tf.keras.utils.set_random_seed(1)
    model = zoo.load(MODEL, input_shape=SHAPE, num_classes=CLASSES)
    path = folder / "birealnet18-small.h5"
    model.save_weights(str(path))
    values = [w.copy() for w in model.get_weights()]
    tf.keras.backend.clear_session()
    return path, values


# ----------------------------------------------------------------------------- download


def _serve(server, source):
    """Put ``source`` on the test server under its hash-named file and write its record."""
    sha = _sha(source)
    name = f"{MODEL}-test-{sha[:8]}.h5"
    (server.root / name).write_bytes(source.read_bytes())
    _write_manifest(_record(name, sha, source.stat().st_size, [f"{server.url}/{name}"]))
    return name, sha


def test_download_verify_and_load(server, small_weights):
    source, values = small_weights
    name, sha = _serve(server, source)
    assert "test" in zoo.get_entry(MODEL).weights
    assert MODEL in zoo.list_models(pretrained=True)

    model = zoo.load(MODEL, weights="test", input_shape=SHAPE, num_classes=CLASSES)
    for got, want in zip(model.get_weights(), values):
        np.testing.assert_array_equal(got, want)
    cached = Path(os.environ["ZOO_HOME"]) / "weights" / MODEL / name
    assert cached.is_file() and _sha(cached) == sha
    assert cache_files() == sorted([f"weights/{MODEL}/{name}", f"weights/{MODEL}/{name}.verified"])
    assert server.state["requests"] == [name]

    # loaded again: from the cache, no request
    zoo.load(MODEL, weights="test", input_shape=SHAPE, num_classes=CLASSES)
    assert server.state["requests"] == [name]
    assert zspec.spec_defaults(MODEL, "test") == {"input_shape": SHAPE, "num_classes": CLASSES}
    assert zspec.get_spec(f"{MODEL}.test").key == f"{MODEL}.test"
    assert zloading.resolve_weights_path(f"{MODEL}.test") == cached


def test_damaged_cached_file_is_rehashed_and_fetched_again_when_loading_fails(server, small_weights):
    source, values = small_weights
    name, sha = _serve(server, source)
    path = zcache.download_weights(MODEL, "test")
    # damage the header, keep size and mtime: the verification stamp still matches
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"\0" * 16)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    zcache.VERIFIED.clear()
    model = zoo.load(MODEL, weights="test", input_shape=SHAPE, num_classes=CLASSES)
    np.testing.assert_array_equal(model.get_weights()[0], values[0])
    assert server.state["requests"] == [name, name]
    assert _sha(path) == sha


def test_tampered_file_is_rejected_and_nothing_is_cached(server, payload):
    tampered = bytearray(payload["data"])
    tampered[1000] ^= 0xFF
    (server.root / payload["name"]).write_bytes(bytes(tampered))
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    with pytest.raises(WeightsError) as error:
        zcache.fetch(spec)
    message = str(error.value)
    assert payload["sha"] in message and hashlib.sha256(tampered).hexdigest() in message
    assert cache_files() == []
    with pytest.raises(WeightsError):  # and the loader refuses it too
        zoo.load(MODEL, weights="test", input_shape=SHAPE, num_classes=CLASSES)
    assert cache_files() == []


def test_truncated_download_is_retried_once(server, payload):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    server.state["truncate"][payload["name"]] = 1
    path = zcache.fetch(spec)
    assert _sha(path) == payload["sha"]
    assert server.state["requests"] == [payload["name"]] * 2
    assert not [p for p in cache_files() if p.endswith(".partial")]


def test_truncated_download_twice_is_rejected_cleanly(server, payload):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    server.state["truncate"][payload["name"]] = 99
    with pytest.raises(WeightsError, match="truncated"):
        zcache.fetch(spec)
    assert server.state["requests"] == [payload["name"]] * 2
    assert cache_files() == []


def test_offline_without_cached_file_names_file_hash_url_and_folder(server, payload, monkeypatch):
    url = f"{server.url}/{payload['name']}"
    spec = _spec(payload, [url])
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError) as error:
        zcache.fetch(spec)
    message = str(error.value)
    folder = Path(os.environ["ZOO_HOME"]) / "weights" / MODEL
    for part in (payload["name"], payload["sha"], url, str(folder)):
        assert part in message
    assert server.state["requests"] == []
    assert cache_files() == []


def test_offline_with_cached_file_uses_it_without_network(server, payload, monkeypatch):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    path = zcache.fetch(spec)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    zcache.VERIFIED.clear()
    assert zcache.fetch(spec) == path
    assert server.state["requests"] == [payload["name"]]


def test_mirror_replaces_base_url(server, payload, monkeypatch):
    mirror = server.root / "mirror"
    mirror.mkdir()
    (mirror / payload["name"]).write_bytes((server.root / payload["name"]).read_bytes())
    (server.root / payload["name"]).unlink()
    spec = _spec(payload, [f"{DEAD_URL}/{payload['name']}"])
    monkeypatch.setenv("ZOO_MIRROR", f"{server.url}/mirror/")
    assert _sha(zcache.fetch(spec)) == payload["sha"]
    assert server.state["requests"] == [f"mirror/{payload['name']}"]


def test_failing_url_falls_through_to_the_next(server, payload):
    spec = _spec(payload, [f"{DEAD_URL}/{payload['name']}", f"{server.url}/missing/{payload['name']}",
                           f"{server.url}/{payload['name']}"])
    assert _sha(zcache.fetch(spec)) == payload["sha"]
    assert server.state["requests"] == [f"missing/{payload['name']}", payload["name"]]


def test_no_reachable_url_fails_cleanly(payload):
    spec = _spec(payload, [f"{DEAD_URL}/{payload['name']}"])
    with pytest.raises(WeightsError, match="Could not download"):
        zcache.fetch(spec)
    assert cache_files() == []


def test_two_concurrent_downloads_end_with_one_verified_file(server, payload):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    server.state["delay"] = 0.05  # ~0.25 s per download: the two overlap
    results, errors = [], []

    def worker():
        try:
            results.append(zcache.fetch(spec, progress=False))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert server.state["requests"] == [payload["name"]]
    assert _sha(results[0]) == payload["sha"]
    assert cache_files() == sorted([f"weights/{MODEL}/{payload['name']}",
                                     f"weights/{MODEL}/{payload['name']}.verified"])


def test_read_only_search_path_is_used_without_writing(tmp_path, payload, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "weights" / MODEL).mkdir(parents=True)
    copy = shared / "weights" / MODEL / payload["name"]
    copy.write_bytes(payload["data"])
    shared.chmod(0o555)
    monkeypatch.setenv("ZOO_CACHE_PATH", os.pathsep.join([str(tmp_path / "nothing"), str(shared)]))
    spec = _spec(payload, [f"{DEAD_URL}/{payload['name']}"])
    before = sorted(p.name for p in shared.rglob("*"))
    try:
        assert zcache.fetch(spec) == copy
        assert sorted(p.name for p in shared.rglob("*")) == before
        assert cache_files() == []
        # a damaged shared copy is skipped (never deleted) and the download is tried
        (shared / "weights" / MODEL).chmod(0o755)
        copy.write_bytes(b"x" * payload["size"])
        zcache.VERIFIED.clear()
        with pytest.raises(WeightsError, match="Could not download"):
            zcache.fetch(spec)
        assert copy.exists()
    finally:
        shared.chmod(0o755)
        (shared / "weights" / MODEL).chmod(0o755)


def test_manifest_folder_is_a_read_only_source(payload):
    path = _write_manifest(_record(payload["name"], payload["sha"], payload["size"],
                                   [f"{DEAD_URL}/{payload['name']}"]))
    (path.parent / payload["name"]).write_bytes(payload["data"])
    assert zcache.download_weights(f"{MODEL}.test") == path.parent / payload["name"]
    assert cache_files() == []


def test_weights_load_without_pickle(tmp_path):
    bogus = tmp_path / "weights.pkl"
    bogus.write_bytes(b"\x80\x04K\x01.")
    model = zoo.load(MODEL, input_shape=SHAPE, num_classes=CLASSES)
    with pytest.raises(WeightsError, match="HDF5"):
        zloading.load_weights_file(model, bogus)


def test_unknown_tag_lists_the_available_ones(payload):
    _spec(payload, ["http://unused/x"])
    with pytest.raises(WeightsError, match="test"):
        zspec.get_spec(MODEL, "nope")
    with pytest.raises(WeightsError, match="neither a weight set"):
        zoo.load(MODEL, weights="nope", input_shape=SHAPE, num_classes=CLASSES)


def _api_takes_tags() -> bool:
    import inspect

    return "split_tag" in inspect.getsource(zoo.api.load)


@pytest.mark.skipif(not _api_takes_tags(), reason="zoo.load does not parse NAME.TAG yet")
def test_load_name_dot_tag_takes_shape_and_classes_from_the_spec(server, small_weights):
    source, values = small_weights
    name, sha = _serve(server, source)
    model = zoo.load(f"{MODEL}.test")
    assert model.input_shape[1:] == SHAPE and model.output_shape[-1] == CLASSES
    np.testing.assert_array_equal(model.get_weights()[-1], values[-1])


def test_resolved_shapes_check_the_head(payload):
    _spec(payload, ["http://unused/x"])
    entry = zoo.get_entry(MODEL)
    assert zloading.resolve(entry, "test", True).shapes(None, None) == (SHAPE, CLASSES)
    assert zloading.resolve(entry, "test", False).shapes((64, 64, 3), None) == ((64, 64, 3), CLASSES)
    assert zloading.resolve(entry, None, True).shapes(None, None) == (None, 1000)
    with pytest.raises(zoo.InvalidInputError):
        zloading.resolve(entry, "test", True).shapes(None, 1000)


# ----------------------------------------------------------------------------- CLI


def test_cli_download_cache_list_and_clear(server, payload):
    _spec(payload, [f"{server.url}/{payload['name']}"])
    result = invoke(cli, "download", f"{MODEL}.test", "--files", "top", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["sha256"] == payload["sha"] and Path(rows[0]["path"]).is_file()

    result = invoke(cli, "cache", "list", "--format", "json")
    files = json.loads(result.stdout)["files"]
    assert [(f["file"], f["weights"], f["status"]) for f in files] == [
        (payload["name"], f"{MODEL}.test", "verified")]

    folder = Path(rows[0]["path"]).parent
    foreign = [folder / "notes.txt", folder.parent / "photo.png", folder / "other.h5"]
    for path in foreign:  # files the zoo never wrote, in the folders it clears
        path.write_text("not the cache's")
    partial = folder / f"{payload['name']}.0123456789ab.partial"
    partial.write_bytes(b"half")
    result = invoke(cli, "cache", "clear", "--yes")
    assert result.exit_code == 0 and payload["name"] in result.stdout and str(partial) in result.stdout
    assert cache_files() == sorted(str(p.relative_to(os.environ["ZOO_HOME"])) for p in foreign)


def test_cli_errors_are_one_line_exit_2(server, payload):
    (server.root / payload["name"]).write_bytes(b"0" * payload["size"])
    _spec(payload, [f"{server.url}/{payload['name']}"])
    result = invoke(cli, "download", f"{MODEL}.test")
    line = assert_one_error_line(result, payload["sha"], alone=False)  # after the progress lines
    assert result.stderr.strip().splitlines()[-1] == line


# ----------------------------------------------------------------------------- committed manifest


def test_committed_manifest_is_valid_and_has_larq_zoo_imagenet_weights():
    records = zspec.read_manifest(zspec.REPO_WEIGHTS_DIR / "manifest.json")
    expected = {"quicknet", "quicknet_small", "quicknet_large", "real_to_binary_net",
                "binary_densenet28", "binary_densenet37", "binary_densenet37_dilated",
                "binary_densenet45", "meliusnet22", "xnornet", "dorefanet", "binary_alexnet",
                "binary_resnet_e18", "larq_zoo_birealnet"}
    assert expected <= {spec.model for spec in records.values() if spec.tag == "imagenet"}
    for key, spec in records.items():
        assert spec.model in zoo.MODELS, key
        if spec.notop is None:  # one packed file: include_top=False loads its body
            assert zpacked.is_packed(zspec.REPO_WEIGHTS_DIR / spec.top.file), key
        else:  # Keras h5: a top and a no-top file
            assert spec.top.file != spec.notop.file
        assert spec.license and spec.metrics.get("top1") is not None
        assert all(u.startswith("https://") for wf in spec.files() for u in wf.urls)
    bireal = records["larq_zoo_birealnet.imagenet"]
    assert bireal.top.sha256 == "6e6efac1584fcd60dd024198c87f42eb53b5ec719a5ca1f527e1fe7e8b997117"
    assert bireal.notop.sha256.startswith("5148b61c")
    assert bireal.top.urls == ("https://github.com/larq/zoo/releases/download/birealnet-v0.3.0/"
                               "birealnet_weights.h5",)
    with pytest.raises(dataclasses.FrozenInstanceError):  # records are immutable
        bireal.top.sha256 = "0" * 64
