"""zoo publish: hash-named files, a complete record, evaluation through the record,
no files left by a failed, raced or interrupted publish, and binary-kernel compaction."""
import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    TRAINED_CLASSES as CLASSES, TRAINED_MODEL as MODEL, TRAINED_SHAPE as SHAPE,
    assert_one_error_line, cache_files, invoke, summary_rows,
)

import zoo
from zoo import publish as zpublish
from zoo.cli import cli
from zoo.errors import InvalidInputError, WeightsError
from zoo.hub import cache as zcache, packed
import zoo.hub.spec  # noqa: E402  (WeightSpec.from_dict)

pytestmark = pytest.mark.usefixtures("isolated_weights")


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_publish_writes_hashed_files_and_a_complete_record(published, run_dir, monkeypatch):
    spec, release, manifest = published
    top = release / spec.top.file
    assert re.fullmatch(rf"{MODEL}-fmnist_test-[0-9a-f]{{8}}\.h5", top.name)
    assert spec.notop is None and spec.files() == [spec.top]  # one file: the body loads from it
    assert sorted(p.name for p in release.glob("*.h5")) == [top.name]
    assert _sha(top) == spec.top.sha256 and spec.top.file.endswith(f"-{spec.top.sha256[:8]}.h5")
    assert top.stat().st_size == spec.top.size
    assert spec.top.urls == (f"https://github.com/bnn-zoo/zoo/releases/download/"
                             f"{MODEL}-fmnist_test/{spec.top.file}",)
    # packed: Bi-Real-18's 10.99M binary weights at 1 bit, a scale per output channel
    stats = packed.summary(top)
    assert packed.is_packed(top) and stats["binary_weights"] == 10985472
    assert 1.0 < stats["bits_per_binary_weight"] < 1.02
    assert top.stat().st_size < 1.05 * (stats["binary_weights"] / 8 + 4 * stats["real_params"])
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
    # what training cost, from the run's summary.csv rows and the machine its config recorded
    seconds = [float(row["seconds"]) for row in summary_rows(run_dir)]
    assert record["training"] == {
        "epochs": len(seconds), "seconds": round(sum(seconds), 1),
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 1),
        "hardware": json.loads((run_dir / "config.json").read_text())["hardware"]}
    assert record["training"]["hardware"]["cpus"] >= 1 and record["training"]["seconds"] > 0
    assert dict(spec.training) == record["training"] and spec.to_dict() == record

    with pytest.raises(WeightsError, match="never overwritten"):
        zpublish.publish(run_dir, "fmnist_test", release_dir=release, manifest=manifest)
    assert_one_error_line(invoke(cli, "publish", run_dir, "--tag", "fmnist_test", "--manifest", manifest),
                          "never overwritten")

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
    assert cache_files() == []


def test_interrupted_publish_leaves_no_files_and_no_record(run_dir, tmp_path, monkeypatch):
    import zoo.publish as loop  # where publish evaluates

    release = tmp_path / "release"
    release.mkdir()
    (release / "keep.txt").write_text("not the publisher's")
    manifest = release / "manifest.json"

    def interrupted(*args, **kwargs):  # SIGTERM arrives during the evaluation (zoo.cli's
        raise SystemExit(143)  # handler turns it into SystemExit)

    monkeypatch.setattr(loop, "evaluate_model", interrupted)
    with pytest.raises(SystemExit):
        zpublish.publish(run_dir, "fmnist_cut", release_dir=release, manifest=manifest, eval_limit=200)
    assert sorted(p.name for p in release.iterdir()) == ["keep.txt"]


def test_losing_a_publish_race_keeps_the_winners_files(run_dir, tmp_path, monkeypatch):
    """Same run, same tag, published twice at once: the files are named by their hash, so
    both write the same names; the one that loses the manifest must not delete them."""
    import zoo.publish as loop  # where publish evaluates

    release = tmp_path / "release"
    manifest = release / "manifest.json"
    evaluate = loop.evaluate_model
    raced = []
    tf.keras.backend.clear_session()

    def other_publish_wins(*args, **kwargs):  # runs while this publish evaluates
        if not raced:
            raced.append(None)  # the other publish evaluates normally
            tf.keras.backend.clear_session()  # layer names as in a second process: same bytes
            raced[0] = zpublish.publish(run_dir, "fmnist_race", release_dir=release, manifest=manifest,
                                  eval_limit=100)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_model", other_publish_wins)
    with pytest.raises(WeightsError, match="published .* meanwhile"):
        zpublish.publish(run_dir, "fmnist_race", release_dir=release, manifest=manifest, eval_limit=100)
    winner = raced[0]
    assert sorted(p.name for p in release.iterdir() if p.suffix == ".h5") == sorted(
        f.file for f in winner.files())
    for weight_file in winner.files():
        ok, reason = zcache.verify_file(release / weight_file.file, weight_file, use_stamp=False)
        assert ok, reason


def test_supersede_replaces_a_set_by_a_better_one_and_keeps_the_old_record(run_dir, tmp_path):
    """A retrained set replaces the published one under the same tag only when asked, only
    when it scores at least as well on the same test images; the old record stays as
    history and its files leave the release folder."""
    release = tmp_path / "release"
    manifest = release / "manifest.json"
    key = f"{MODEL}.fmnist_sup"
    spec = zpublish.publish(run_dir, "fmnist_sup", release_dir=release, manifest=manifest,
                            eval_limit=100)
    # make the published record an older, different set: its own file, a lower score
    old_file = release / f"{MODEL}-fmnist_sup-0ld0ld00.h5"
    (release / spec.top.file).rename(old_file)
    data = json.loads(manifest.read_text())
    old = data["records"][key]
    old["files"]["top"]["file"] = old_file.name
    old["metrics"]["top1"] = spec.metrics["top1"] - 1.0
    old["command"] = "zoo train birealnet18 --epochs 1 (the old run)"
    manifest.write_text(json.dumps(data))

    assert_one_error_line(invoke(cli, "publish", run_dir, "--tag", "fmnist_sup", "--release-dir",
                                 release, "--manifest", manifest), "--supersede")
    with pytest.raises(InvalidInputError, match="nothing to replace"):
        zpublish.publish(run_dir, "fmnist_new", release_dir=release, manifest=manifest,
                         supersede=True)
    with pytest.raises(WeightsError, match="same images"):  # 50 test images, not the record's 100
        zpublish.publish(run_dir, "fmnist_sup", release_dir=release, manifest=manifest,
                         eval_limit=50, supersede=True)
    assert json.loads(manifest.read_text())["records"][key] == old
    assert sorted(p.name for p in release.glob("*.h5")) == [old_file.name]

    result = invoke(cli, "publish", run_dir, "--tag", "fmnist_sup", "--release-dir", release,
                    "--manifest", manifest, "--eval-limit", 100, "--supersede")
    assert result.exit_code == 0, result.stderr
    assert f"replaces {old_file.name} (top-1 {old['metrics']['top1']:.2f}%)" in result.stdout
    record = json.loads(manifest.read_text())["records"][key]
    new_file = record["files"]["top"]["file"]  # same weights (layer names may differ)
    assert new_file.startswith(f"{MODEL}-fmnist_sup-") and new_file != old_file.name
    assert record["metrics"]["top1"] == spec.metrics["top1"]
    assert record["supersedes"] == [{"files": old["files"], "metrics": old["metrics"],
                                     "command": old["command"], "date": old["date"],
                                     "source": old["source"], "training": old["training"]}]
    assert sorted(p.name for p in release.glob("*.h5")) == [new_file]  # the old file gone
    assert [dict(e["metrics"]) for e in zoo.hub.spec.WeightSpec.from_dict(key, record).supersedes] \
        == [old["metrics"]]
    assert f"{MODEL},fmnist_sup," in (release / "results.csv").read_text()

    # a worse set never replaces a better one
    data = json.loads(manifest.read_text())
    data["records"][key]["metrics"]["top1"] = 100.0
    manifest.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="below the published 100.00%"):
        zpublish.publish(run_dir, "fmnist_sup", release_dir=release, manifest=manifest,
                         eval_limit=100, supersede=True)
    assert json.loads(manifest.read_text())["records"][key]["metrics"]["top1"] == 100.0
    assert sorted(p.name for p in release.glob("*.h5")) == [new_file]


SIGTERM_DURING_PUBLISH = """
import os, signal, sys, time
from zoo.cli._common import exit_on_sigterm
import zoo.publish as loop  # where publish evaluates
from zoo import publish as zpublish

def terminated(*args, **kwargs):  # a real SIGTERM, delivered while the evaluation runs
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(600)

exit_on_sigterm()  # what `zoo publish` installs
loop.evaluate_model = terminated
zpublish.publish(sys.argv[1], "fmnist_term", release_dir=sys.argv[2], manifest=sys.argv[3], eval_limit=200)
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


def test_compaction_keeps_outputs_and_binarises_every_binary_kernel(fresh_session, capsys):
    """Published files hold the kernels the forward pass uses: sign, magnitude-aware (per
    channel, per layer as in DoReFa-Net, clipped as in XNOR-Net) and latent-free kernels
    become their quantized values, outputs unchanged; 2-bit and real kernels stay as they are."""
    import larq as lq
    from larq_zoo.literature.dorefanet import magnitude_aware_sign_unclipped
    from larq_zoo.literature.xnornet import xnor_weight_scale

    from zoo.publish import compact_binary_kernels

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

    from zoo.publish import compact_binary_kernels

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
