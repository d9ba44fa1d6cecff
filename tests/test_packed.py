"""The packed weights format: binary kernels at one bit plus a scale per output channel,
exact round trips, the body of the one file for include_top=False, Keras h5 files still
loading, and one clear error for a damaged file."""
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import WeightsError
from zoo.hub import packed
from zoo.hub.loading import load_weights_file

TINY = dict(filters=8, dense_units=32, input_shape=(28, 28, 1), num_classes=10)


def _mixed_model():
    """Magnitude-aware (per channel), +-1, latent and real kernels, batch norm, a head."""
    import larq as lq

    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(16, 3, padding="same", name="real")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = lq.layers.QuantConv2D(32, 3, padding="same", input_quantizer="ste_sign", use_bias=False,
                              kernel_quantizer=lq.quantizers.MagnitudeAwareSign(),
                              name="per_channel")(x)
    x = lq.layers.QuantConv2D(32, 3, padding="same", input_quantizer="ste_sign", use_bias=False,
                              kernel_quantizer="ste_sign", name="signs")(x)
    x = lq.layers.QuantConv2D(8, 1, input_quantizer="ste_sign", use_bias=False,
                              kernel_quantizer="ste_sign", name="latent")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(10, activation="softmax", name="head")(x)
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer, scale in (("per_channel", rng.uniform(0.01, 0.1, 32)), ("signs", np.ones(32))):
        kernel = model.get_layer(layer).kernel
        signs = np.where(rng.normal(size=kernel.shape) < 0, -1.0, 1.0)
        kernel.assign((signs * scale).astype("float32"))  # as zoo publish compacts them
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(size=16).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 16).astype("float32"))
    return model


def test_round_trip_is_exact_and_binary_kernels_take_one_bit(fresh_session, tmp_path):
    model = _mixed_model()
    images = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    before = model(images, training=False).numpy()
    path = tmp_path / "mixed.h5"
    stats = packed.save_packed(model, path)

    # two binary kernels (3x3x16x32 with 32 scales, 3x3x32x32 with one): 13,824 weights
    assert stats["binary_weights"] == 3 * 3 * 16 * 32 + 3 * 3 * 32 * 32
    assert stats["bits_bytes"] == stats["binary_weights"] // 8 and stats["scales"] == 33
    assert stats["bits_per_binary_weight"] == pytest.approx(1 + 33 * 32 / 13824)
    assert packed.binary_weight_names(path) == [model.get_layer("per_channel").kernel.name,
                                                model.get_layer("signs").kernel.name]
    real = model.count_params() - stats["binary_weights"]  # the latent kernel stays float
    assert stats["real_params"] == real
    minimum = stats["binary_weights"] / 8 + 4 * real  # 5,160 bytes
    assert path.stat().st_size < minimum + 8192  # the HDF5 container's fixed few KB

    tf.keras.backend.clear_session()
    fresh = _mixed_model()  # other values: every one must come from the file
    load_weights_file(fresh, path)
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(fresh(images, training=False).numpy(), before)


def test_include_top_false_takes_the_body_of_the_one_file(fresh_session, tmp_path):
    top = zoo.load("binarynet", **TINY)
    top.set_weights([np.sign(w) + 0.5 * (w.ndim == 1) for w in top.get_weights()])
    path = tmp_path / "binarynet.h5"
    packed.save_packed(top, path)

    body = zoo.load("binarynet", weights=path, include_top=False, **TINY)
    weights = top.get_weights()
    assert 0 < len(body.get_weights()) < len(weights)
    for a, b in zip(body.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    images = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    features = tf.keras.Model(top.input, top.layers[len(body.layers) - 1].output)
    np.testing.assert_array_equal(body(images, training=False), features(images, training=False))
    # with the head, the model must match the file: another number of classes is refused
    with pytest.raises(WeightsError, match=r"Cannot load weights .*quant_dense"):
        zoo.load("binarynet", weights=path, **{**TINY, "num_classes": 7})


def test_keras_h5_files_still_load(fresh_session, tmp_path):
    top = zoo.load("binarynet", **TINY)
    path = tmp_path / "keras.h5"
    top.save_weights(str(path), save_format="h5")
    assert not packed.is_packed(path)
    loaded = zoo.load("binarynet", weights=path, **TINY)
    for a, b in zip(loaded.get_weights(), top.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_truncated_or_foreign_packed_file_is_one_clear_error(fresh_session, tmp_path):
    model = zoo.load("binarynet", **TINY)
    path = tmp_path / "packed.h5"
    packed.save_packed(model, path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as error:
        zoo.load("binarynet", weights=truncated, **TINY)
    message = str(error.value)
    assert message.startswith(f"Cannot load weights from {truncated}") and "\n" not in message
    assert "truncated" in message

    import h5py

    newer = tmp_path / "newer.h5"
    newer.write_bytes(data)
    with h5py.File(newer, "r+") as handle:
        handle.attrs["zoo_format_version"] = packed.FORMAT_VERSION + 1
    with pytest.raises(WeightsError, match="upgrade the zoo"):
        zoo.load("binarynet", weights=newer, **TINY)


def test_published_packed_sets_meet_the_storage_goals():
    """Every packed set in weights/: at most 1.05 bits per binary weight (scales counted)
    and at most 1.15x its minimum size; the report the README shows lists every set."""
    import json
    from pathlib import Path

    from benchmarks.zoo_table import storage_table

    root = Path(__file__).resolve().parent.parent
    rows = [line.split(" | ") for line in storage_table(root / "weights").splitlines()
            if line.startswith("| `")]
    records = json.loads((root / "weights" / "manifest.json").read_text())["records"]
    local = {key for key, r in records.items() if (root / "weights" / r["files"]["top"]["file"]).is_file()}
    assert {row[0].strip("| `") for row in rows} == local
    packed_rows = [row for row in rows if row[1] == "packed"]
    assert len(packed_rows) >= 22
    for row in packed_rows:
        if row[3] != "-":  # a set with binary weights
            assert float(row[3]) <= 1.05, row
        assert float(row[6].strip(" |")) <= 1.15, row
