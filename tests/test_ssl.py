"""Self-supervised learning: Un-Mix mixing and loss against hand computations, MoCo's
momentum and queue, NT-Xent, the kNN classifier, and a tiny end-to-end pretrain + evaluate."""
import json

import numpy as np
import pytest
import tensorflow as tf

from zoo.errors import InvalidInputError, UnknownNameError
from zoo.ssl import get_method
from zoo.ssl.moco import MoCo, infonce_queue
from zoo.ssl.probe import knn_accuracy, knn_predict
from zoo.ssl.simclr import nt_xent
from zoo.ssl.unmix import (mix_global, mix_region, reverse_batch, reversed_partners, unmix_images,
                           unmix_loss)


def _normalise(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _constant_batch(size, side=8):
    values = np.arange(1, size + 1, dtype=np.float32)
    return tf.constant(np.broadcast_to(values[:, None, None, None], (size, side, side, 1)).copy())


def _ce_positive_first(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(-logits[:, 0] + np.log(np.exp(logits).sum(axis=1))))


def test_partner_is_the_reversed_batch():
    np.testing.assert_array_equal(reversed_partners(5).numpy(), [4, 3, 2, 1, 0])
    x = _constant_batch(5)
    mixed = mix_global(x, 0.3).numpy()[:, 0, 0, 0]
    np.testing.assert_allclose(mixed, [0.3 * (i + 1) + 0.7 * (5 - i) for i in range(5)], rtol=1e-6)
    # the embedding of the reversed-order mixture is the batch-reversed embedding of the mixture
    dense = tf.keras.layers.Dense(3)
    flat = tf.reshape(x, (5, -1))
    reverse_mixture = 0.3 * tf.reverse(flat, [0]) + 0.7 * flat
    np.testing.assert_allclose(dense(reverse_mixture).numpy(),
                               reverse_batch(dense(mix_global(flat, 0.3))).numpy(), rtol=1e-5, atol=1e-5)


def test_region_mix_lam_is_the_kept_area():
    x = _constant_batch(4)
    mixed, kept = mix_region(x, tf.constant([2, 6, 0, 4]))  # a 4x4 box of 8x8: 1/4 of the image
    mixed = mixed.numpy()[..., 0]
    assert float(kept) == pytest.approx(0.75)
    for i in range(4):
        assert (mixed[i, 2:6, 0:4] == 4 - i).all()
        assert np.mean(mixed[i] == i + 1) == pytest.approx(0.75)  # the rest is its own image


def test_unmix_images_global_and_region_branches():
    x = _constant_batch(6, side=16)
    mixed, lam = unmix_images(x, tf.constant([1, 2], tf.int64), prob_global=1.0)
    lam = float(lam)
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], [lam * (i + 1) + (1 - lam) * (6 - i) for i in range(6)],
                               rtol=1e-5)
    for seed in range(6):
        mixed, lam = unmix_images(x, tf.constant([seed, 3], tf.int64), prob_global=0.0)
        mixed = mixed.numpy()[..., 0]
        for i in range(6):  # only the sample's own pixels and its reversed partner's
            assert set(np.unique(mixed[i])) <= {i + 1.0, 6.0 - i}
        assert np.mean(mixed[0] == 1.0) == pytest.approx(float(lam))


def test_unmix_loss_matches_a_hand_computation():
    rng = np.random.RandomState(0)
    q = _normalise(rng.randn(4, 3)).astype(np.float32)
    q_mix = _normalise(rng.randn(4, 3)).astype(np.float32)
    k = _normalise(rng.randn(4, 3)).astype(np.float32)
    queue = _normalise(rng.randn(5, 3)).astype(np.float32)
    temperature, lam = 0.2, 0.3

    def hand(query):
        logits = np.concatenate([np.sum(query * k, 1, keepdims=True), query @ queue.T], 1) / temperature
        return _ce_positive_first(logits)

    expected = hand(q) + lam * hand(q_mix) + (1 - lam) * hand(q_mix[::-1])
    total, original, mixed = unmix_loss(lambda a, b: infonce_queue(a, b, queue, temperature),
                                        tf.constant(q), tf.constant(q_mix), tf.constant(k), lam)
    assert float(original) == pytest.approx(hand(q), rel=1e-5)
    assert float(mixed) == pytest.approx(expected - hand(q), rel=1e-5)
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_nt_xent_matches_a_hand_computation():
    rng = np.random.RandomState(1)
    z1, z2 = _normalise(rng.randn(3, 4)), _normalise(rng.randn(3, 4))
    t = 0.5
    views = np.concatenate([z1, z2])
    losses = []
    for i in range(6):
        partner = (i + 3) % 6
        sims = np.array([views[i] @ views[j] / t for j in range(6) if j != i])
        others = [j for j in range(6) if j != i]
        losses.append(-sims[others.index(partner)] + np.log(np.exp(sims).sum()))
    assert float(nt_xent(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32), t)) == pytest.approx(
        np.mean(losses), rel=1e-5)


def _tiny_backbone():
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.Model(inputs, tf.keras.layers.ReLU()(x))


@pytest.mark.usefixtures("fresh_session")
def test_moco_momentum_update_and_queue():
    moco = MoCo(dim=2, queue_size=5, momentum=0.9, bn_splits=1)
    moco.build(_tiny_backbone)
    q_kernel = moco.encoder_q.features.layers[1].kernel
    k_kernel = moco.encoder_k.features.layers[1].kernel
    np.testing.assert_array_equal(q_kernel.numpy(), k_kernel.numpy())
    q_kernel.assign(q_kernel + 1.0)
    before = k_kernel.numpy()
    moco.before_step()
    np.testing.assert_allclose(k_kernel.numpy(), 0.9 * before + 0.1 * q_kernel.numpy(), rtol=1e-5, atol=1e-6)
    keys = tf.constant(np.eye(3, 2, dtype=np.float32) + 2)
    moco.after_step(keys)
    moco.after_step(keys)  # 6 keys into a queue of 5: wraps around
    k0, k1, k2 = keys.numpy()
    np.testing.assert_allclose(moco.queue.numpy(), [k2, k1, k2, k0, k1])
    assert int(moco.pointer) == 1
    assert moco.targets(tf.ones((4, 8, 8, 1)), tf.constant([1, 2], tf.int64)).shape == (4, 2)


def test_knn_classifier_on_a_toy_set():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0]], np.float32)
    labels = np.array([0, 0, 1, 1, 2])
    test = np.array([[1, 0.05], [0.05, 1], [-1, 0.1]], np.float32)
    np.testing.assert_array_equal(knn_predict(train, labels, test, 3, k=1), [0, 1, 2])
    # k = 5, everyone votes: the single very close neighbour wins at t = 0.1 ...
    np.testing.assert_array_equal(knn_predict(train, labels, test, 3, k=5, temperature=0.1), [0, 1, 2])
    # ... while with k = 3 at t = 100 (nearly equal weights) the two class-0 points outvote class 2
    assert knn_predict(train, labels, np.array([[0.2, -1.0]], np.float32), 3, k=3, temperature=100)[0] == 0
    # hand computation of the weights for one query
    query = np.array([[0.6, 0.8]], np.float32)
    sims = _normalise(train) @ query[0]
    top = np.argsort(-sims)[:3]
    votes = np.zeros(3)
    for j in top:
        votes[labels[j]] += np.exp(sims[j] / 0.1)
    assert knn_predict(train, labels, query, 3, k=3)[0] == np.argmax(votes)
    assert knn_accuracy(train, labels, test, [0, 1, 1], 3, k=1) == pytest.approx(200 / 3)


def test_moco_with_unmix_on_cifar_takes_the_unmix_demo_settings():
    from zoo.ssl.trainer import ssl_method

    demo = ssl_method("moco", True, "cifar10").config()  # unmix_c10.py: linear fc head, T 0.1
    assert (demo["mlp"], demo["temperature"], demo["queue_size"], demo["momentum"]) == (
        False, 0.1, 4096, 0.99)
    assert ssl_method("moco", True, "cifar100").config() == demo
    v2 = ssl_method("moco", False, "cifar10").config()  # MoCo v2 otherwise
    assert (v2["mlp"], v2["temperature"]) == (True, 0.2)
    assert ssl_method("moco", True, "fashion_mnist").config() == v2
    assert ssl_method("moco", True, "cifar10", {"temperature": 0.3}).config()["temperature"] == 0.3


def test_method_registry_errors():
    with pytest.raises(UnknownNameError, match="simclr"):
        get_method("simclrr")
    with pytest.raises(InvalidInputError, match="queue_size"):
        get_method("simclr", queue_size=10)
    assert get_method("moco_v2", temperature=0.1).temperature == 0.1


def test_byol_loss_and_momentum_schedule():
    from zoo.ssl.byol import BYOL, byol_loss

    p, z = _normalise(np.array([[1.0, 0.0], [1.0, 1.0]])), _normalise(np.array([[0.0, 1.0], [1.0, 1.0]]))
    # cos = 0 and 1: (2 - 0 + 2 - 2) / 2
    assert float(byol_loss(tf.constant(p, tf.float32), tf.constant(z, tf.float32))) == pytest.approx(1.0)
    byol = BYOL(tau=0.996)
    byol.total_steps = 100
    byol.step = tf.Variable(0, dtype=tf.int64)
    assert float(byol.momentum()) == pytest.approx(0.996)
    byol.step.assign(50)
    assert float(byol.momentum()) == pytest.approx(0.998)
    byol.step.assign(100)
    assert float(byol.momentum()) == pytest.approx(1.0)


@pytest.mark.usefixtures("fresh_session")
@pytest.mark.parametrize("name,settings", [("simclr", {}), ("byol", {"hidden": 16, "dim": 8})])
def test_unmix_training_steps(name, settings):
    from zoo.ssl.trainer import SSLModel

    method = get_method(name, **settings)
    method.build(_tiny_backbone)
    model = SSLModel(method, unmix=True, prob_global=0.5)
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-2))
    rng = np.random.RandomState(0)
    views = rng.rand(2, 8, 8, 8, 1).astype(np.float32)
    seeds = np.arange(6, dtype=np.int64).reshape(3, 2)
    ds = tf.data.Dataset.from_tensors((views[0], views[1])).repeat(3)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(seeds))).map(lambda v, s: (v[0], v[1], s))
    before = [w.numpy().copy() for w in method.trainable_variables]
    history = model.fit(ds, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["loss_mix"][0] > 0
    assert history["loss"][0] == pytest.approx(history["loss_orig"][0] + history["loss_mix"][0], rel=1e-4)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, method.trainable_variables))


@pytest.mark.usefixtures("fresh_session")
def test_pretrain_then_evaluate(tmp_path):
    from zoo.ssl.probe import evaluate_pretrained
    from zoo.ssl.trainer import pretrain

    out = tmp_path / "moco"
    results = pretrain("binarynet", ssl="moco", unmix=True, epochs=1, batch_size=16, limit=64,
                       eval_limit=40, knn_every=0, method_args={"queue_size": 64, "bn_splits": 2},
                       optimizer="adam", model_overrides={"filters": 4}, output=out, verbose=0)
    config = json.loads((out / "config.json").read_text())
    assert config["ssl"]["unmix"] and config["ssl"]["method"] == "moco"
    assert (out / "backbone.h5").is_file() and (out / "summary.csv").is_file()
    assert 0.0 <= results["knn_top1"] <= 100.0 and results["train_examples"] == 64
    evaluated = evaluate_pretrained("binarynet", out, knn=True, linear=True, limit=40, train_limit=64,
                                    probe_epochs=2)
    assert evaluated["knn_top1"] == pytest.approx(results["knn_top1"])  # same backbone, same data
    assert 0.0 <= evaluated["linear_top1"] <= 100.0
    with pytest.raises(InvalidInputError, match="pretrain"):
        evaluate_pretrained("binarynet", tmp_path, knn=True)
