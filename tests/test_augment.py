"""Mixing augmentations: label ratios against the pixels, attentive cells, soft-label loss."""
import json

import numpy as np
import pytest
import tensorflow as tf

from zoo.augment import (AttentiveCutMix, CutMix, Mixup, SoftAccuracy, SoftCrossentropy,
                         apply_augmentation, get_augmentation)
from zoo.augment.attentive import attention_grid, cells_to_pixels, paste_top_cells, pick_layer, top_cells
from zoo.augment.mixing import box_mask, cutmix_box
from zoo.errors import InvalidInputError, UnknownNameError


def _constant_batch(size, height=8, width=8, channels=3):
    """Image i is filled with the value i + 1: every pixel tells which image it came from."""
    values = np.arange(1, size + 1, dtype=np.float32)
    return tf.constant(np.broadcast_to(values[:, None, None, None], (size, height, width, channels)).copy())


def test_mixup_image_and_label_use_the_same_ratio():
    images, labels = _constant_batch(6), tf.constant([0, 1, 2, 3, 4, 5])
    mixed, soft = Mixup(alpha=1.0)(images, labels, 6, tf.constant([3, 4], tf.int64))
    mixed, soft = mixed.numpy(), soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    # every pixel of image i is the label-weighted mean of the source values j + 1
    expected = soft @ np.arange(1, 7, dtype=np.float32)
    np.testing.assert_allclose(mixed[:, 0, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(mixed, np.broadcast_to(expected[:, None, None, None], mixed.shape), rtol=1e-5)
    own = [soft[i, i] for i in range(6) if soft[i, i] < 1.0]  # one lam per batch
    assert own and np.allclose(own, own[0])


def test_cutmix_box_has_the_sampled_area():
    # lam 0.75 -> side sqrt(0.25) = half of 8 = 4 pixels, centre clipped at the border
    for seed in range(5):
        y0, y1, x0, x1 = cutmix_box(8, 8, 0.75, tf.constant([seed, 1], tf.int64)).numpy()
        assert 0 <= y0 <= y1 <= 8 and 0 <= x0 <= x1 <= 8
        assert y1 - y0 <= 4 and x1 - x0 <= 4
    mask = box_mask(8, 8, tf.constant([2, 6, 1, 5])).numpy()
    assert mask.sum() == 16 and mask[2:6, 1:5].all()


def test_cutmix_label_ratio_is_the_kept_pixel_area():
    seen_mixed = 0
    for seed in range(8):
        images, labels = _constant_batch(5, 16, 16), tf.constant([0, 1, 2, 3, 4])
        mixed, soft = CutMix(beta=1.0, prob=1.0)(images, labels, 5, tf.constant([seed, 7], tf.int64))
        mixed, soft = mixed.numpy()[..., 0], soft.numpy()
        for i in range(5):
            own = float(np.mean(mixed[i] == i + 1))
            np.testing.assert_allclose(soft[i, i] if soft[i, i] < 1 else own, own, atol=1e-6)
            others = [v for v in np.unique(mixed[i]) if v != i + 1]
            assert len(others) <= 1
            if others:
                seen_mixed += 1
                partner = int(others[0]) - 1
                np.testing.assert_allclose(soft[i, partner], 1.0 - own, atol=1e-6)
                rows, cols = np.nonzero(mixed[i] != i + 1)  # the pasted region is one rectangle
                assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)
    assert seen_mixed > 0


def test_cutmix_prob_zero_leaves_the_batch_alone():
    images, labels = _constant_batch(4), tf.constant([0, 1, 2, 3])
    mixed, soft = CutMix(prob=0.0)(images, labels, 4, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(mixed.numpy(), images.numpy())
    np.testing.assert_array_equal(soft.numpy(), np.eye(4))


def test_attention_is_the_channel_mean_not_one_channel():
    fmap = np.zeros((1, 7, 7, 2), np.float32)
    fmap[0, 1, 1] = [10.0, 0.0]   # high mean, low last channel
    fmap[0, 5, 5] = [0.0, 4.0]    # low mean, high last channel
    attention = attention_grid(tf.constant(fmap), 7).numpy()
    assert attention[0, 1, 1] == 5.0 and attention[0, 5, 5] == 2.0
    mask = top_cells(tf.constant(attention), 1).numpy()
    assert mask[0, 1, 1] == 1 and mask.sum() == 1


def test_attention_of_a_14x14_map_averages_2x2_blocks_into_a_7x7_grid():
    fmap = np.zeros((1, 14, 14, 1), np.float32)
    fmap[0, 4:6, 10:12] = 1.0
    attention = attention_grid(tf.constant(fmap), 7).numpy()[0]
    assert attention[2, 5] == pytest.approx(1.0) and attention.sum() == pytest.approx(1.0)


def test_paste_top_cells_pastes_exactly_the_partner_top_k_cells():
    # 2 images of 28x28 (7x7 grid of 4x4-pixel cells); hand-made attention with known top-6 cells
    images = _constant_batch(2, 28, 28, 1)
    attention = np.zeros((2, 7, 7), np.float32)
    top_of_second = [(0, 0), (0, 6), (3, 3), (6, 1), (2, 5), (4, 4)]
    for rank, (r, c) in enumerate(top_of_second):
        attention[1, r, c] = 10.0 - rank
    attention[1, 5, 5] = 0.5  # the 7th: must not be pasted
    attention[0] = np.arange(49, dtype=np.float32).reshape(7, 7)  # top cells: the last 6
    perm = tf.constant([1, 0])
    mixed, pasted = paste_top_cells(images, tf.constant(attention), perm, 6)
    mixed = mixed.numpy()[..., 0]
    expected = np.ones((28, 28), np.float32)
    for r, c in top_of_second:
        expected[4 * r:4 * r + 4, 4 * c:4 * c + 4] = 2.0
    np.testing.assert_array_equal(mixed[0], expected)
    expected_1 = np.full((28, 28), 2.0, np.float32)
    for index in range(43, 49):
        r, c = divmod(index, 7)
        expected_1[4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
    np.testing.assert_array_equal(mixed[1], expected_1)
    np.testing.assert_allclose(pasted.numpy(), [6 / 49, 6 / 49], rtol=1e-6)


def test_cells_to_pixels_on_a_side_that_does_not_divide():
    cells = np.zeros((1, 7, 7), np.float32)
    cells[0, 0, 0] = 1
    pixels = cells_to_pixels(tf.constant(cells), 32, 32).numpy()[0]
    # rows with floor(r * 7 / 32) == 0: r = 0..4
    assert pixels[:5, :5].all() and pixels.sum() == 25


def test_attentive_cutmix_labels_mix_by_k_over_49():
    images, labels = _constant_batch(4, 28, 28, 3), tf.constant([0, 1, 2, 3])

    def feature_fn(x):  # every image attends most to cells 43..48 (the last six of the 7x7 grid)
        return tf.tile(tf.reshape(tf.range(49, dtype=tf.float32), (1, 7, 7, 1)), [tf.shape(x)[0], 1, 1, 2])

    mixed, soft = AttentiveCutMix(feature_fn, grid=7, top_k=6)(images, labels, 4, tf.constant([5, 6], tf.int64))
    soft, mixed = soft.numpy(), mixed.numpy()[..., 0]
    top = np.zeros((28, 28), bool)
    top[24:28, 4:28] = True  # cells 43..48: row 6, columns 1..6
    changed = 0
    for i in range(4):
        partner = int(mixed[i][27, 27]) - 1
        assert (mixed[i][~top] == i + 1).all() and (mixed[i][top] == partner + 1).all()
        if partner != i:
            changed += 1
            np.testing.assert_allclose(soft[i, i], 43 / 49, rtol=1e-6)
            np.testing.assert_allclose(soft[i, partner], 6 / 49, rtol=1e-5)
    assert changed > 0


def test_apply_augmentation_maps_a_batched_pipeline_deterministically():
    images = np.random.RandomState(0).rand(16, 8, 8, 3).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 4)).batch(8)
    aug = get_augmentation("cutmix", prob=1.0)
    first = [(x.numpy(), y.numpy()) for x, y in apply_augmentation(ds, aug, 4, seed=3)]
    again = [(x.numpy(), y.numpy()) for x, y in apply_augmentation(ds, aug, 4, seed=3)]
    assert [y.shape for _, y in first] == [(8, 4), (8, 4)]
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_soft_crossentropy_and_accuracy():
    probs = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    soft = tf.constant([[0.8, 0.2, 0.0], [0.0, 0.4, 0.6]])
    expected = -np.sum(soft.numpy() * np.log(probs.numpy()), axis=1).mean()
    assert float(SoftCrossentropy()(soft, probs)) == pytest.approx(expected, rel=1e-5)
    hard = -np.log([0.7, 0.6]).mean()
    assert float(SoftCrossentropy()(tf.constant([[0], [2]]), probs)) == pytest.approx(hard, rel=1e-5)
    accuracy = SoftAccuracy()
    accuracy.update_state(tf.constant([[0.3, 0.7, 0.0], [0.0, 0.4, 0.6]]), probs)
    assert float(accuracy.result()) == pytest.approx(0.5)
    accuracy.reset_state()
    accuracy.update_state(tf.constant([[0], [2]]), probs)
    assert float(accuracy.result()) == pytest.approx(1.0)


def test_bad_names_and_arguments():
    with pytest.raises(UnknownNameError, match="cutmix"):
        get_augmentation("cutmx")
    with pytest.raises(InvalidInputError, match="alpha"):
        get_augmentation("cutmix", alpha=1.0)
    with pytest.raises(InvalidInputError, match="prob"):
        get_augmentation("mixup", prob=2.0)
    with pytest.raises(InvalidInputError, match="top_k"):
        AttentiveCutMix(lambda x: x, grid=2, top_k=6)


def test_pick_layer_takes_the_deepest_map_with_enough_cells():
    inputs = tf.keras.Input((28, 28, 3))
    a = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same", name="a")(inputs)   # 14
    b = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same", name="b")(a)        # 7
    c = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c")(b)        # 4
    model = tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(c))
    assert pick_layer(model, 7).shape[1] == 7
    assert pick_layer(model, 4).shape[1] == 4
    with pytest.raises(InvalidInputError):
        pick_layer(model, 30)


@pytest.mark.usefixtures("fresh_session")
def test_train_with_cutmix_records_it(tmp_path):
    from zoo.training import train

    results = train("binarynet", epochs=1, batch_size=32, limit=64, eval_limit=50, output=tmp_path / "run",
                    model_overrides={"filters": 4, "dense_units": 8}, augment="cutmix",
                    augment_args={"prob": 1.0}, verbose=0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["augment"] == {"name": "cutmix", "args": {"beta": 1.0, "prob": 1.0}}
    assert 0.0 <= results["top1"] <= 100.0 and np.isfinite(results["loss"])


def test_auto_extractor_offline_is_the_best_real_valued_published_set(monkeypatch):
    """Without ResNet-50's ImageNet weights, ``auto`` takes a real-valued published set of
    the training dataset (the paper's extractor is a real classifier), the best-scoring."""
    import zoo
    from zoo.augment import attentive

    monkeypatch.setattr(attentive, "_resnet50_weights_available", lambda: False)
    real = [(spec.metrics["top1"], f"{name}.{tag}") for name, entry in zoo.MODELS.items()
            if not entry.binary for tag, spec in entry.weights.items()
            if spec.dataset == "fashion_mnist"]
    assert len(real) >= 2  # ResNet-18, SPOS, the MetaPruning MobileNets
    assert attentive.resolve_extractor_name("auto", "fashion_mnist") == max(real)[1] \
        == "resnet18.fashion_mnist"
    assert attentive.resolve_extractor_name("birealnet18.fashion_mnist", "fashion_mnist") \
        == "birealnet18.fashion_mnist"
    with pytest.raises(zoo.ZooError, match="needs a trained feature extractor"):
        attentive.resolve_extractor_name("auto", "no_such_dataset")
