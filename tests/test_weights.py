"""Published weights: manifest records, verified download and cache, offline mode, mirrors,
locking, read-only search path, publishing a run, preprocessing and prediction.

Downloads come from a local HTTP server on 127.0.0.1 (port 0) serving a temp folder;
every test has its own cache ($ZOO_HOME) and manifest ($ZOO_MANIFEST), so the
committed weights/manifest.json and ~/.cache/zoo are never touched.
"""
import dataclasses
import hashlib
import http.server
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import zoo
from zoo import data as zdata
from zoo import weights as zw
from zoo.cli import cli
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


# ----------------------------------------------------------------------------- isolation


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache and manifest; the default manifest is re-attached afterwards."""
    default_manifest = zw.manifest_path()
    for var in ("ZOO_CACHE_PATH", "ZOO_MIRROR", "ZOO_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_MANIFEST", str(tmp_path / "manifest" / "manifest.json"))
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "20")
    tf.keras.backend.clear_session()
    yield tmp_path
    zw.attach_manifest(default_manifest)
    tf.keras.backend.clear_session()


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
    path = zw.manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "records": {f"{r['model']}.{r['tag']}": r for r in records}}))
    zw.attach_manifest(path)
    return path


def _cache_files(root=None):
    """Every file under the writable cache except lock files."""
    root = Path(root or os.environ["ZOO_HOME"])
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and ".locks" not in p.parts)


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
    return zw.get_spec(MODEL, kwargs.get("tag", "test"))


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
    assert _cache_files() == sorted([f"weights/{MODEL}/{name}", f"weights/{MODEL}/{name}.verified"])
    assert server.state["requests"] == [name]

    # loaded again: from the cache, no request
    zoo.load(MODEL, weights="test", input_shape=SHAPE, num_classes=CLASSES)
    assert server.state["requests"] == [name]
    assert zw.spec_defaults(MODEL, "test") == {"input_shape": SHAPE, "num_classes": CLASSES}
    assert zw.get_spec(f"{MODEL}.test").key == f"{MODEL}.test"
    assert zw.resolve_weights_path(f"{MODEL}.test") == cached


def test_damaged_cached_file_is_rehashed_and_fetched_again_when_loading_fails(server, small_weights):
    source, values = small_weights
    name, sha = _serve(server, source)
    path = zw.download_weights(MODEL, "test")
    # damage the header, keep size and mtime: the verification stamp still matches
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"\0" * 16)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    zw._VERIFIED.clear()
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
        zw.fetch(spec)
    message = str(error.value)
    assert payload["sha"] in message and hashlib.sha256(tampered).hexdigest() in message
    assert _cache_files() == []
    with pytest.raises(WeightsError):  # and the loader refuses it too
        zoo.load(MODEL, weights="test", input_shape=SHAPE, num_classes=CLASSES)
    assert _cache_files() == []


def test_truncated_download_is_retried_once(server, payload):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    server.state["truncate"][payload["name"]] = 1
    path = zw.fetch(spec)
    assert _sha(path) == payload["sha"]
    assert server.state["requests"] == [payload["name"]] * 2
    assert not [p for p in _cache_files() if p.endswith(".partial")]


def test_truncated_download_twice_is_rejected_cleanly(server, payload):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    server.state["truncate"][payload["name"]] = 99
    with pytest.raises(WeightsError, match="truncated"):
        zw.fetch(spec)
    assert server.state["requests"] == [payload["name"]] * 2
    assert _cache_files() == []


def test_offline_without_cached_file_names_file_hash_url_and_folder(server, payload, monkeypatch):
    url = f"{server.url}/{payload['name']}"
    spec = _spec(payload, [url])
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError) as error:
        zw.fetch(spec)
    message = str(error.value)
    folder = Path(os.environ["ZOO_HOME"]) / "weights" / MODEL
    for part in (payload["name"], payload["sha"], url, str(folder)):
        assert part in message
    assert server.state["requests"] == []
    assert _cache_files() == []


def test_offline_with_cached_file_uses_it_without_network(server, payload, monkeypatch):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    path = zw.fetch(spec)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    zw._VERIFIED.clear()
    assert zw.fetch(spec) == path
    assert server.state["requests"] == [payload["name"]]


def test_mirror_replaces_base_url(server, payload, monkeypatch):
    mirror = server.root / "mirror"
    mirror.mkdir()
    (mirror / payload["name"]).write_bytes((server.root / payload["name"]).read_bytes())
    (server.root / payload["name"]).unlink()
    spec = _spec(payload, [f"{DEAD_URL}/{payload['name']}"])
    monkeypatch.setenv("ZOO_MIRROR", f"{server.url}/mirror/")
    assert _sha(zw.fetch(spec)) == payload["sha"]
    assert server.state["requests"] == [f"mirror/{payload['name']}"]


def test_failing_url_falls_through_to_the_next(server, payload):
    spec = _spec(payload, [f"{DEAD_URL}/{payload['name']}", f"{server.url}/missing/{payload['name']}",
                           f"{server.url}/{payload['name']}"])
    assert _sha(zw.fetch(spec)) == payload["sha"]
    assert server.state["requests"] == [f"missing/{payload['name']}", payload["name"]]


def test_no_reachable_url_fails_cleanly(payload):
    spec = _spec(payload, [f"{DEAD_URL}/{payload['name']}"])
    with pytest.raises(WeightsError, match="Could not download"):
        zw.fetch(spec)
    assert _cache_files() == []


def test_two_concurrent_downloads_end_with_one_verified_file(server, payload):
    spec = _spec(payload, [f"{server.url}/{payload['name']}"])
    server.state["delay"] = 0.05  # ~0.25 s per download: the two overlap
    results, errors = [], []

    def worker():
        try:
            results.append(zw.fetch(spec, progress=False))
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
    assert _cache_files() == sorted([f"weights/{MODEL}/{payload['name']}",
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
        assert zw.fetch(spec) == copy
        assert sorted(p.name for p in shared.rglob("*")) == before
        assert _cache_files() == []
        # a damaged shared copy is skipped (never deleted) and the download is tried
        (shared / "weights" / MODEL).chmod(0o755)
        copy.write_bytes(b"x" * payload["size"])
        zw._VERIFIED.clear()
        with pytest.raises(WeightsError, match="Could not download"):
            zw.fetch(spec)
        assert copy.exists()
    finally:
        shared.chmod(0o755)
        (shared / "weights" / MODEL).chmod(0o755)


def test_manifest_folder_is_a_read_only_source(payload):
    path = _write_manifest(_record(payload["name"], payload["sha"], payload["size"],
                                   [f"{DEAD_URL}/{payload['name']}"]))
    (path.parent / payload["name"]).write_bytes(payload["data"])
    assert zw.download_weights(f"{MODEL}.test") == path.parent / payload["name"]
    assert _cache_files() == []


def test_weights_load_without_pickle(tmp_path):
    bogus = tmp_path / "weights.pkl"
    bogus.write_bytes(b"\x80\x04K\x01.")
    model = zoo.load(MODEL, input_shape=SHAPE, num_classes=CLASSES)
    with pytest.raises(WeightsError, match="HDF5"):
        zw.load_weights_file(model, bogus)


def test_unknown_tag_lists_the_available_ones(payload):
    _spec(payload, ["http://unused/x"])
    with pytest.raises(WeightsError, match="test"):
        zw.get_spec(MODEL, "nope")
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


def test_apply_spec_defaults_checks_the_head(payload):
    _spec(payload, ["http://unused/x"])
    entry = zoo.get_entry(MODEL)
    assert zw.apply_spec_defaults(entry, "test", True, None, None) == (SHAPE, CLASSES)
    assert zw.apply_spec_defaults(entry, "test", False, (64, 64, 3), None) == ((64, 64, 3), CLASSES)
    assert zw.apply_spec_defaults(entry, None, True, None, None) == (None, 1000)
    with pytest.raises(zoo.InvalidInputError):
        zw.apply_spec_defaults(entry, "test", True, None, 1000)


# ----------------------------------------------------------------------------- CLI


def test_cli_download_cache_list_and_clear(server, payload):
    _spec(payload, [f"{server.url}/{payload['name']}"])
    runner = CliRunner()
    result = runner.invoke(cli, ["download", f"{MODEL}.test", "--files", "top", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["sha256"] == payload["sha"] and Path(rows[0]["path"]).is_file()

    result = runner.invoke(cli, ["cache", "list", "--format", "json"])
    files = json.loads(result.stdout)["files"]
    assert [(f["file"], f["weights"], f["status"]) for f in files] == [
        (payload["name"], f"{MODEL}.test", "verified")]

    result = runner.invoke(cli, ["cache", "clear", "--yes"])
    assert result.exit_code == 0 and payload["name"] in result.stdout
    assert _cache_files() == []


def test_cli_errors_are_one_line_exit_2(server, payload):
    (server.root / payload["name"]).write_bytes(b"0" * payload["size"])
    _spec(payload, [f"{server.url}/{payload['name']}"])
    result = CliRunner().invoke(cli, ["download", f"{MODEL}.test"])
    assert result.exit_code == 2
    last = result.stderr.strip().splitlines()[-1]  # progress lines come first
    assert last.startswith("Error: ") and payload["sha"] in last
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------- committed manifest


def test_committed_manifest_is_valid_and_has_larq_zoo_imagenet_weights():
    records = zw.read_manifest(zw.REPO_WEIGHTS_DIR / "manifest.json")
    expected = {"quicknet", "quicknet_small", "quicknet_large", "real_to_binary_net",
                "binary_densenet28", "binary_densenet37", "binary_densenet37_dilated",
                "binary_densenet45", "meliusnet22", "xnornet", "dorefanet", "binary_alexnet",
                "binary_resnet_e18", "larq_zoo_birealnet"}
    assert expected <= {spec.model for spec in records.values() if spec.tag == "imagenet"}
    for key, spec in records.items():
        assert spec.model in zoo.MODELS, key
        assert spec.notop is not None and spec.top.file != spec.notop.file
        assert spec.license and spec.metrics.get("top1") is not None
        assert all(u.startswith("https://") for wf in spec.files() for u in wf.urls)
    bireal = records["larq_zoo_birealnet.imagenet"]
    assert bireal.top.sha256 == "6e6efac1584fcd60dd024198c87f42eb53b5ec719a5ca1f527e1fe7e8b997117"
    assert bireal.notop.sha256.startswith("5148b61c")
    assert bireal.top.urls == ("https://github.com/larq/zoo/releases/download/birealnet-v0.3.0/"
                               "birealnet_weights.h5",)
    with pytest.raises(dataclasses.FrozenInstanceError):  # records are immutable
        bireal.top.sha256 = "0" * 64


# ----------------------------------------------------------------------------- publish / predict


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from zoo.training import train

    output = tmp_path_factory.mktemp("run") / "birealnet18-fmnist"
    tf.keras.backend.clear_session()
    train(MODEL, "fashion_mnist", epochs=1, batch_size=64, limit=256, eval_limit=200,
          output=output, verbose=0, command="zoo train birealnet18 --epochs 1 --limit 256")
    return output


@pytest.fixture(scope="module")
def _published(run_dir, tmp_path_factory):
    release = tmp_path_factory.mktemp("release")  # the manifest's folder, as weights/ is
    manifest = release / "manifest.json"
    spec = zw.publish(run_dir, "fmnist_test", release_dir=release, manifest=manifest, eval_limit=200)
    return spec, release, manifest


@pytest.fixture
def published(_published):
    zw.attach_manifest(_published[2])
    return _published


def test_publish_writes_hashed_files_and_a_complete_record(published, run_dir, monkeypatch):
    spec, release, manifest = published
    top, notop = release / spec.top.file, release / spec.notop.file
    assert re.fullmatch(rf"{MODEL}-fmnist_test-[0-9a-f]{{8}}\.h5", top.name)
    assert re.fullmatch(rf"{MODEL}-fmnist_test-notop-[0-9a-f]{{8}}\.h5", notop.name)
    for path, wf in ((top, spec.top), (notop, spec.notop)):
        assert _sha(path) == wf.sha256 and wf.file.endswith(f"-{wf.sha256[:8]}.h5")
        assert path.stat().st_size == wf.size
        assert wf.urls == (f"https://github.com/bnn-zoo/zoo/releases/download/"
                           f"{MODEL}-fmnist_test/{wf.file}",)
    record = json.loads(manifest.read_text())["records"][f"{MODEL}.fmnist_test"]
    for field in ("model", "tag", "dataset", "input_shape", "num_classes", "files", "preprocessing",
                  "labels", "metrics", "costs", "recipe", "command", "versions", "license", "date"):
        assert record[field] not in (None, "", {}, []), field
    assert record["input_shape"] == list(SHAPE) and record["num_classes"] == CLASSES
    assert record["metrics"]["split"] == "test" and record["metrics"]["examples"] == 200
    assert 0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 100
    assert record["costs"]["params"] > 0 and record["costs"]["ops"] > 0
    assert record["recipe"]["name"] == "birealnet_adam" and "--limit 256" in record["command"]
    assert record["license"] == "Apache-2.0" and record["versions"]["larq"]
    assert record["labels"][0] == "T-shirt/top"

    with pytest.raises(WeightsError, match="never overwritten"):
        zw.publish(run_dir, "fmnist_test", release_dir=release, manifest=manifest)
    result = CliRunner().invoke(cli, ["publish", str(run_dir), "--tag", "fmnist_test",
                                      "--manifest", str(manifest)])
    assert result.exit_code == 2 and "never overwritten" in result.stderr

    # the published files load offline from the release folder, top and no-top agree
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    net = zoo.load(MODEL, weights="fmnist_test", input_shape=SHAPE, num_classes=CLASSES)
    reference = zoo.load(MODEL, weights=run_dir, input_shape=SHAPE, num_classes=CLASSES)
    # binary kernels are published as the values the forward pass uses: sign(w) * mean|w|
    # per output channel; every other weight is stored unchanged
    compacted = 0
    for layer, ref_layer in zip(net.layers, reference.layers):
        for a, b in zip(layer.get_weights(), ref_layer.get_weights()):
            if getattr(layer, "kernel_quantizer", None) is not None and a.ndim == 4:
                scale = np.mean(np.abs(b), axis=(0, 1, 2), keepdims=True)  # TF's mean: rtol 1e-5
                np.testing.assert_allclose(a, np.where(b >= 0, 1.0, -1.0) * scale, rtol=1e-5)
                compacted += 1
            else:
                np.testing.assert_array_equal(a, b)
    assert compacted == 16  # Bi-Real-18's binary convs
    x = np.random.RandomState(0).rand(4, *SHAPE).astype("float32")
    np.testing.assert_allclose(net(x, training=False), reference(x, training=False), atol=1e-5)
    headless = zoo.load(MODEL, weights="fmnist_test", include_top=False, input_shape=SHAPE)
    for a, b in zip(headless.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(headless.get_weights()) == len(net.get_weights()) - 2  # Dense kernel + bias
    assert _cache_files() == []


def test_interrupted_publish_leaves_no_files_and_no_record(run_dir, tmp_path, monkeypatch):
    import zoo.training.loop as loop

    release = tmp_path / "release"
    release.mkdir()
    (release / "keep.txt").write_text("not the publisher's")
    manifest = release / "manifest.json"

    def interrupted(*args, **kwargs):  # SIGTERM arrives during the evaluation (zoo.cli's
        raise SystemExit(143)  # handler turns it into SystemExit)

    monkeypatch.setattr(loop, "evaluate_model", interrupted)
    with pytest.raises(SystemExit):
        zw.publish(run_dir, "fmnist_cut", release_dir=release, manifest=manifest, eval_limit=200)
    assert sorted(p.name for p in release.iterdir()) == ["keep.txt"]


def test_losing_a_publish_race_keeps_the_winners_files(run_dir, tmp_path, monkeypatch):
    """Same run, same tag, published twice at once: the files are named by their hash, so
    both write the same names; the one that loses the manifest must not delete them."""
    import zoo.training.loop as loop

    release = tmp_path / "release"
    manifest = release / "manifest.json"
    evaluate = loop.evaluate_model
    raced = []
    tf.keras.backend.clear_session()

    def other_publish_wins(*args, **kwargs):  # runs while this publish evaluates
        if not raced:
            raced.append(None)  # the other publish evaluates normally
            tf.keras.backend.clear_session()  # layer names as in a second process: same bytes
            raced[0] = zw.publish(run_dir, "fmnist_race", release_dir=release, manifest=manifest,
                                  eval_limit=100)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_model", other_publish_wins)
    with pytest.raises(WeightsError, match="published .* meanwhile"):
        zw.publish(run_dir, "fmnist_race", release_dir=release, manifest=manifest, eval_limit=100)
    winner = raced[0]
    assert sorted(p.name for p in release.iterdir() if p.suffix == ".h5") == sorted(
        f.file for f in winner.files())
    for weight_file in winner.files():
        ok, reason = zw.verify_file(release / weight_file.file, weight_file, use_stamp=False)
        assert ok, reason


SIGTERM_DURING_PUBLISH = """
import os, signal, sys, time
from zoo.cli import exit_on_sigterm
import zoo.training.loop as loop
import zoo.weights as zw

def terminated(*args, **kwargs):  # a real SIGTERM, delivered while the evaluation runs
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(600)

exit_on_sigterm()  # what `zoo publish` installs
loop.evaluate_model = terminated
zw.publish(sys.argv[1], "fmnist_term", release_dir=sys.argv[2], manifest=sys.argv[3], eval_limit=200)
"""


def test_sigterm_during_publish_exits_and_leaves_no_files(run_dir, tmp_path):
    import subprocess
    import sys

    release = tmp_path / "release"
    release.mkdir()
    manifest = release / "manifest.json"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SIGTERM_DURING_PUBLISH, str(run_dir), str(release),
                           str(manifest)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 128 + 15, done.stderr[-2000:]
    assert time.monotonic() - started < 300  # the handler ended the sleep, not its 600 s
    assert list(release.iterdir()) == []


def _fashion_test_image():
    spec = zdata.get_dataset("fashion_mnist")
    image, label = next(iter(zdata.load_split(spec, "test").take(1)))
    return image.numpy(), int(label)


def test_preprocess_input_matches_evaluation(published):
    spec = published[0]
    image, _ = _fashion_test_image()
    expected = zdata.preprocess(tf.constant(image), zdata.get_dataset("fashion_mnist"), SHAPE).numpy()
    np.testing.assert_allclose(zoo.preprocess_input(image, spec.key), expected, rtol=1e-6)
    batch = zoo.preprocess_input(np.stack([image, image]), spec)
    assert batch.shape == (2,) + SHAPE
    rgb = np.repeat(np.kron(image, np.ones((2, 2, 1), np.uint8)), 3, axis=-1)  # 56x56 RGB
    assert zoo.preprocess_input(rgb, spec.key).shape == SHAPE


def test_predict_on_a_png(published, tmp_path):
    spec = published[0]
    image, _ = _fashion_test_image()
    png = tmp_path / "item.png"
    png.write_bytes(tf.io.encode_png(image).numpy())
    results, source = zw.predict(spec.key, [png])
    assert source == spec.key and len(results) == 1 and len(results[0]) == 5
    labels = zdata.get_dataset("fashion_mnist").labels
    assert all(label in labels for label, _ in results[0])
    probs = [p for _, p in results[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6

    result = CliRunner().invoke(cli, ["predict", MODEL, str(png), "--weights", "fmnist_test",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert [p["label"] for p in record["predictions"]] == [label for label, _ in results[0]]
    assert sum(p["probability"] for p in record["predictions"]) <= 1 + 1e-6


def test_decode_predictions():
    preds = np.array([[0.1, 0.6, 0.3] + [0.0] * 7])
    decoded = zoo.decode_predictions(preds, top=2, name_or_spec="fashion_mnist")
    assert decoded == [[("Trouser", pytest.approx(0.6)), ("Pullover", pytest.approx(0.3))]]
    with pytest.raises(zoo.InvalidInputError):
        zoo.decode_predictions(np.zeros((1, 7)), name_or_spec="fashion_mnist")


def test_compaction_keeps_outputs_and_binarises_every_binary_kernel(fresh_session, capsys):
    """Published files hold the kernels the forward pass uses: sign, magnitude-aware (per
    channel, per layer as in DoReFa-Net, clipped as in XNOR-Net) and latent-free kernels
    become their quantized values, outputs unchanged; 2-bit and real kernels stay as they are."""
    import larq as lq
    from larq_zoo.literature.dorefanet import magnitude_aware_sign_unclipped
    from larq_zoo.literature.xnornet import xnor_weight_scale

    from zoo.weights import compact_binary_kernels

    binary = {"sign": "ste_sign", "magnitude": lq.quantizers.MagnitudeAwareSign(),
              "per_layer": magnitude_aware_sign_unclipped, "xnor": xnor_weight_scale,
              "free": lq.quantizers.NoOp(precision=1)}
    inputs = tf.keras.Input((8, 8, 3))
    x = inputs
    for name, quantizer in {**binary, "two_bit": lq.quantizers.DoReFa(k_bit=2, mode="weights"),
                            "real": None}.items():
        x = lq.layers.QuantConv2D(4, 3, padding="same", kernel_quantizer=quantizer,
                                  use_bias=False, name=name)(x)
    model = tf.keras.Model(inputs, x)
    rng = np.random.default_rng(0)
    model.get_layer("free").kernel.assign(np.sign(rng.normal(size=(3, 3, 4, 4))).astype("float32"))
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    before = model(images).numpy()
    kept = {name: model.get_layer(name).kernel.numpy() for name in ("two_bit", "real")}

    assert compact_binary_kernels(model) == len(binary)
    assert "1 quantized kernel(s) stored as float" in capsys.readouterr().err  # the 2-bit one
    np.testing.assert_allclose(model(images).numpy(), before, rtol=1e-4, atol=1e-4)
    for name in binary:
        kernel = model.get_layer(name).kernel.numpy().reshape(-1, 4)
        assert all(len(np.unique(np.abs(kernel[:, c]))) == 1 for c in range(4)), name
    assert len(np.unique(model.get_layer("per_layer").kernel.numpy())) == 2
    for name, value in kept.items():
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), value)


def test_compaction_of_long_channels(fresh_session, capsys):
    """A 3x3x1024 magnitude-aware kernel (ReActNet's last 3x3 conv) is compacted too: its
    quantizer reproduces its own output only to the float32 rounding of a 9216-term mean
    (~1e-4 relative here), which a fixed 1e-5 tolerance took for a non-binary kernel."""
    import larq as lq

    from zoo.weights import compact_binary_kernels

    inputs = tf.keras.Input((3, 3, 1024))
    layer = lq.layers.QuantConv2D(4, 3, kernel_quantizer=lq.quantizers.MagnitudeAwareSign(),
                                  use_bias=False)
    model = tf.keras.Model(inputs, layer(inputs))
    rng = np.random.RandomState(0)
    layer.kernel.assign((rng.randn(3, 3, 1024, 4) * 0.05).astype("float32"))
    quantizer = layer.kernel_quantizer
    once = np.asarray(quantizer(tf.constant(layer.kernel.numpy())))
    assert np.max(np.abs(np.asarray(quantizer(tf.constant(once))) - once) / np.abs(once)) > 1e-5
    images = rng.randn(2, 3, 3, 1024).astype("float32")
    before = model(images).numpy()

    assert compact_binary_kernels(model) == 1
    assert "stored as float" not in capsys.readouterr().err
    kernel = layer.kernel.numpy().reshape(-1, 4)
    assert all(len(np.unique(np.abs(kernel[:, c]))) == 1 for c in range(4))
    np.testing.assert_allclose(model(images).numpy(), before, rtol=1e-4, atol=1e-4)
