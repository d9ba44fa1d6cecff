"""Datasets: Fashion-MNIST through tfds from the real files, preprocessing, the
pipelines, missing-data errors, manual directories and image folders."""
import dataclasses
import gzip
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import FMNIST_DIR, FMNIST_FILES, needs_fmnist, needs_fmnist_files

import zoo  # noqa: F401  (before TensorFlow: Keras 2)
import tensorflow as tf  # noqa: E402

from zoo import DatasetNotFoundError, UnknownNameError  # noqa: E402
from zoo import data as zdata  # noqa: E402
from zoo.data import get_dataset, load_split, make_dataset, manual_dir, num_examples, preprocess  # noqa: E402

FMNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530


def _raw_labels(name):
    with gzip.open(FMNIST_DIR / name, "rb") as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=8)


@pytest.fixture(scope="module")
def fmnist():
    return get_dataset("fashion_mnist")


@pytest.fixture(scope="module")
def fmnist_test_head(fmnist):
    """The first 1000 raw test examples, in split order."""
    images, labels = [], []
    for image, label in load_split(fmnist, "test").take(1000):
        images.append(image.numpy())
        labels.append(int(label))
    return np.stack(images), np.array(labels)


# ----------------------------------------------------------------------------- Fashion-MNIST


@needs_fmnist_files
def test_fashion_mnist_test_split_from_real_files(fmnist):
    assert fmnist.name == "fashion_mnist"
    assert fmnist.num_classes == 10
    assert zdata.class_names(fmnist) == FMNIST_LABELS
    assert num_examples(fmnist, "test") == 10000
    assert num_examples(fmnist, "train") == 60000

    ds = load_split(fmnist, "test")
    image_spec, label_spec = ds.element_spec
    assert tuple(image_spec.shape) == (28, 28, 1) and image_spec.dtype == tf.uint8
    assert label_spec.dtype == tf.int64

    labels = np.concatenate([y.numpy() for _, y in ds.batch(2500)])
    assert labels.shape == (10000,)
    assert labels.min() == 0 and labels.max() == 9
    # the same labels as the raw t10k file (tfds reorders the examples, not their labels)
    raw = _raw_labels("t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(np.bincount(labels, minlength=10), np.bincount(raw, minlength=10))
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 1000))


@needs_fmnist
def test_fashion_mnist_images_are_real(fmnist_test_head):
    images, labels = fmnist_test_head
    assert images.dtype == np.uint8 and images.shape == (1000, 28, 28, 1)
    assert images.max() == 255 and images.min() == 0
    # Fashion-MNIST's mean pixel is ~0.286 of 255 (the spec's normalisation mean)
    assert abs(images.mean() / 255.0 - MEAN) < 0.02
    assert set(labels.tolist()) == set(range(10))


def test_dataset_names_and_aliases():
    assert get_dataset("fashion-mnist").name == "fashion_mnist"
    assert get_dataset("FMNIST").name == "fashion_mnist"
    assert get_dataset("imagenet").name == "imagenet2012"
    assert "fashion_mnist" in zdata.DATASETS.names() and "cifar10" in zdata.DATASETS.names()


def test_unknown_dataset_suggests_close_matches():
    with pytest.raises(UnknownNameError) as info:
        get_dataset("fashion_mnst")
    message = str(info.value)
    assert "fashion_mnst" in message and "fashion_mnist" in message
    assert "Did you mean" in message
    with pytest.raises(UnknownNameError):
        make_dataset("no_such_data", "test", (28, 28, 1), 8)


# ----------------------------------------------------------------------------- preprocessing


def _image(values):
    return tf.constant(np.asarray(values, np.uint8).reshape(28, 28, 1))


def test_preprocess_replicates_gray_to_three_equal_channels(fmnist):
    pixels = np.zeros((28, 28), np.uint8)
    pixels[0, 0], pixels[5, 7], pixels[27, 27] = 0, 255, 51
    out = preprocess(_image(pixels), fmnist, (28, 28, 3)).numpy()
    assert out.shape == (28, 28, 3) and out.dtype == np.float32
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[0, 0], [(0 - MEAN) / STD] * 3, rtol=1e-6)
    np.testing.assert_allclose(out[5, 7], [(1.0 - MEAN) / STD] * 3, rtol=1e-6)
    np.testing.assert_allclose(out[27, 27], [(0.2 - MEAN) / STD] * 3, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0], -0.2860 / 0.3530, rtol=1e-6)


def test_preprocess_keeps_one_channel(fmnist):
    pixels = np.full((28, 28), 255, np.uint8)
    out = preprocess(_image(pixels), fmnist, (28, 28, 1)).numpy()
    assert out.shape == (28, 28, 1)
    np.testing.assert_allclose(out, (1.0 - MEAN) / STD, rtol=1e-6)


def test_preprocess_pads_to_32_centred(fmnist):
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 256, (28, 28)).astype(np.uint8)  # no zero pixel inside
    native = preprocess(_image(pixels), fmnist, (28, 28, 3)).numpy()
    out = preprocess(_image(pixels), fmnist, (32, 32, 3)).numpy()
    assert out.shape == (32, 32, 3)
    pad = np.float32((0.0 - MEAN) / STD)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    np.testing.assert_allclose(out[border], pad, rtol=1e-6)
    np.testing.assert_allclose(out[2:30, 2:30], native, rtol=1e-6)
    assert (out[2:30, 2:30] > pad).all()


@needs_fmnist
def test_preprocess_resizes_to_64(fmnist, fmnist_test_head):
    flat = preprocess(_image(np.full((28, 28), 102, np.uint8)), fmnist, (64, 64, 3)).numpy()
    assert flat.shape == (64, 64, 3)
    np.testing.assert_allclose(flat, (0.4 - MEAN) / STD, rtol=1e-5)

    # left half black, right half white: a resize stretches it over all 64 columns
    pixels = np.zeros((28, 28), np.uint8)
    pixels[:, 14:] = 255
    out = preprocess(_image(pixels), fmnist, (64, 64, 3)).numpy()
    np.testing.assert_allclose(out[:, :30], (0.0 - MEAN) / STD, rtol=1e-5)
    np.testing.assert_allclose(out[:, 34:], (1.0 - MEAN) / STD, rtol=1e-5)
    middle = out[0, 30:34, 0]
    assert (np.diff(middle) > 0).all()  # bilinear ramp between them

    image = tf.constant(fmnist_test_head[0][0])
    out = preprocess(image, fmnist, (64, 64, 3)).numpy()
    assert out.shape == (64, 64, 3) and np.array_equal(out[..., 0], out[..., 2])
    original = preprocess(image, fmnist, (28, 28, 1)).numpy()
    assert abs(out.mean() - original.mean()) < 0.05


def test_preprocess_training_flip_only_mirrors(fmnist):
    pixels = np.zeros((28, 28), np.uint8)
    pixels[:, :5] = 255  # a bright left edge: a flip moves it to the right
    image = _image(pixels)
    plain = preprocess(image, fmnist, (28, 28, 1)).numpy()
    seen = set()
    for _ in range(40):
        out = preprocess(image, fmnist, (28, 28, 1), training=True).numpy()
        if np.array_equal(out, plain):
            seen.add("same")
        elif np.array_equal(out, plain[:, ::-1]):
            seen.add("flipped")
        else:
            pytest.fail("training augmentation did something other than a left-right flip")
    assert seen == {"same", "flipped"}
    # augment="none" turns it off
    for _ in range(10):
        out = preprocess(image, fmnist, (28, 28, 1), training=True, augment="none").numpy()
        assert np.array_equal(out, plain)


# ----------------------------------------------------------------------------- pipelines


def _collect(ds):
    images, labels, sizes = [], [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
        sizes.append(int(x.shape[0]))
    return np.concatenate(images), np.concatenate(labels), sizes


@needs_fmnist
def test_eval_pipeline_is_deterministic_and_in_split_order(fmnist, fmnist_test_head):
    ds = make_dataset("fashion_mnist", "test", (28, 28, 3), 300, limit=1000)
    first = _collect(ds)
    second = _collect(ds)
    assert first[2] == [300, 300, 300, 100]
    assert second[2] == [300, 300, 300, 100]
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])

    raw_images, raw_labels = fmnist_test_head
    assert np.array_equal(first[1], raw_labels)
    assert first[0].dtype == np.float32 and first[0].shape == (1000, 28, 28, 3)
    expected = (raw_images[..., 0].astype(np.float32) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(first[0][..., 1], expected, rtol=1e-5, atol=1e-6)


@needs_fmnist
def test_training_pipeline_shuffles_and_flips(fmnist):
    shape = (28, 28, 1)
    plain_x, plain_y, _ = _collect(make_dataset(fmnist, "train", shape, 64, limit=128))
    ds = make_dataset(fmnist, "train", shape, 50, training=True, seed=3, limit=128)
    x, y, sizes = _collect(ds)
    assert sizes == [50, 50, 28]
    assert x.dtype == np.float32 and x.shape == (128, 28, 28, 1)
    assert y.dtype == np.int64
    assert not np.array_equal(y, plain_y)  # shuffled
    assert sorted(y.tolist()) == sorted(plain_y.tolist())

    # every training image is one of the plain images, as is or mirrored; both occur
    matched, flipped = set(), 0
    for image in x:
        same = [i for i in range(len(plain_x)) if np.array_equal(image, plain_x[i])]
        mirror = [i for i in range(len(plain_x)) if np.array_equal(image, plain_x[i][:, ::-1])]
        assert same or mirror
        if not same:
            flipped += 1
        matched.add((same or mirror)[0])
    assert len(matched) == 128
    assert 10 < flipped < 118

    # the same seed gives the same order and the same flips on a fresh pipeline (stateless
    # per-position seeds, whatever the map's parallelism), another seed another order
    again_x, again_y = [(x_.numpy(), y_.numpy()) for x_, y_ in make_dataset(
        fmnist, "train", shape, 128, training=True, seed=3, limit=128)][0]
    other = [y_.numpy() for _, y_ in make_dataset(fmnist, "train", shape, 128, training=True,
                                                    seed=4, limit=128)][0]
    assert np.array_equal(again_y, y)
    assert np.array_equal(again_x, x)
    assert not np.array_equal(other, y)

    # a second epoch of the same pipeline: new order, and images get other flips
    second_x, second_y, _ = _collect(ds)
    assert not np.array_equal(second_y, y)
    by_label_first = {i: x[i] for i in range(128)}
    changed = sum(
        1 for i in range(128) for j in range(128)
        if np.array_equal(second_x[i], by_label_first[j][:, ::-1]) and not np.array_equal(
            second_x[i], by_label_first[j]))
    assert changed > 10


def test_make_dataset_rejects_bad_batch_size():
    with pytest.raises(zoo.InvalidInputError):
        make_dataset("fashion_mnist", "test", (28, 28, 1), 0)


# ----------------------------------------------------------------------------- missing data


@pytest.fixture
def offline_empty(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "manual").mkdir()
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ZOO_MANUAL_DIR", str(tmp_path / "manual"))
    return tmp_path


def test_missing_cifar10_names_the_file(offline_empty):
    spec = get_dataset("cifar10")
    assert manual_dir(spec) is None
    with pytest.raises(DatasetNotFoundError) as info:
        make_dataset("cifar10", "train", (32, 32, 3), 8)
    message = str(info.value)
    assert "cifar-10-binary.tar.gz" in message
    assert "ZOO_MANUAL_DIR" in message
    assert "cifar10" in message
    with pytest.raises(DatasetNotFoundError, match="cifar-10-binary.tar.gz"):
        num_examples(spec, "test")
    # nothing was written into the data dir
    assert not any((offline_empty / "data").rglob("*.tfrecord*"))


def test_missing_imagenet_names_the_file(offline_empty):
    with pytest.raises(DatasetNotFoundError) as info:
        load_split(get_dataset("imagenet"), "test")
    message = str(info.value)
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert "ZOO_MANUAL_DIR" in message


def test_dataset_not_found_is_a_zoo_and_file_error():
    assert issubclass(DatasetNotFoundError, zoo.ZooError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


# ----------------------------------------------------------------------------- manual directories


def _put_fmnist(folder: Path, files=FMNIST_FILES):
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).symlink_to(FMNIST_DIR / name)


@needs_fmnist_files
def test_manual_dir_sub_folder_and_root_layouts(tmp_path, monkeypatch, fmnist):
    no_system = dataclasses.replace(fmnist, system_dirs=())
    manual = tmp_path / "manual"
    manual.mkdir()
    monkeypatch.setenv("ZOO_MANUAL_DIR", str(manual))
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))
    assert manual_dir(no_system) is None
    # without ZOO_MANUAL_DIR files, the system location (Debian package) is found
    assert manual_dir(fmnist) == FMNIST_DIR

    # a sub-folder named after the dataset
    _put_fmnist(manual / "fashion_mnist")
    assert manual_dir(no_system) == manual / "fashion_mnist"
    assert manual_dir(fmnist) == manual / "fashion_mnist"  # ZOO_MANUAL_DIR comes first
    shutil.rmtree(manual / "fashion_mnist")

    # incomplete: three of the four files do not count
    _put_fmnist(manual / "fashion_mnist", FMNIST_FILES[:3])
    assert manual_dir(no_system) is None
    shutil.rmtree(manual / "fashion_mnist")

    # the hyphenated sub-folder name, and the files directly in ZOO_MANUAL_DIR
    _put_fmnist(manual / "fashion-mnist")
    assert manual_dir(no_system) == manual / "fashion-mnist"
    shutil.rmtree(manual / "fashion-mnist")
    _put_fmnist(manual)
    assert manual_dir(no_system) == manual

    monkeypatch.setenv("ZOO_MANUAL_DIR", str(tmp_path / "does_not_exist"))
    assert manual_dir(no_system) is None


@pytest.mark.slow
@needs_fmnist_files
def test_prepare_fashion_mnist_offline_from_manual_dir(tmp_path, monkeypatch, capsys):
    manual = tmp_path / "manual"
    _put_fmnist(manual / "fashion_mnist")
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("ZOO_MANUAL_DIR", str(manual))
    monkeypatch.setenv("ZOO_DATA_DIR", str(data))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    spec = get_dataset("fashion_mnist")
    # another process holding the preparation lock: this one waits, then prepares
    import tensorflow_datasets as tfds

    counted = {}
    lock = zdata._prepare_lock(tfds.builder(spec.tfds_name, data_dir=str(data)), spec)
    with lock:
        worker = threading.Thread(target=lambda: counted.update(n=num_examples(spec, "test")))
        worker.start()
        worker.join(timeout=3.0)
        assert worker.is_alive() and not list(data.rglob("dataset_info.json"))
    worker.join(timeout=600)
    assert counted == {"n": 10000}
    assert f"from {manual / 'fashion_mnist'}" in capsys.readouterr().err
    assert list(data.rglob("dataset_info.json"))
    labels = np.concatenate([y.numpy() for _, y in load_split(spec, "test").batch(5000)])
    assert np.array_equal(np.bincount(labels), np.full(10, 1000))
    # prepared once: the second call does not prepare again
    assert num_examples(spec, "train") == 60000
    assert "Preparing" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- image folders

COLOURS = {"cat": (220, 30, 30), "dog": (30, 30, 220)}


def _write_folder(root: Path, counts):
    from PIL import Image

    for split, per_class in counts.items():
        for name, count in per_class.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (20 + 4 * i, 16 + 2 * i)  # (width, height): not square, not all alike
                Image.new("RGB", size, COLOURS[name]).save(folder / f"{name}_{i}.png")
    if (root / "train" / "cat").is_dir():
        (root / "train" / "cat" / "notes.txt").write_text("not an image")  # skipped


def test_image_folder_dataset(tmp_path):
    _write_folder(tmp_path, {"train": {"cat": 3, "dog": 4}, "test": {"cat": 2, "dog": 1}})
    spec = get_dataset(f"folder:{tmp_path}")
    assert spec.num_classes == 2
    assert list(spec.labels) == ["cat", "dog"]
    assert list(zdata.class_names(spec)) == ["cat", "dog"]
    assert num_examples(spec, "train") == 7 and num_examples(spec, "test") == 3

    pairs = [(image.numpy(), int(label)) for image, label in load_split(spec, "train")]
    assert [label for _, label in pairs] == [0, 0, 0, 1, 1, 1, 1]
    for image, label in pairs:
        assert image.dtype == np.uint8 and image.shape[-1] == 3
        assert tuple(image[0, 0]) == COLOURS[spec.labels[label]]
    assert pairs[1][0].shape == (18, 24, 3)  # cat_1.png: 24 wide, 18 high

    x, y, sizes = _collect(make_dataset(spec, "test", (32, 32, 3), 2))
    assert sizes == [2, 1] and x.shape == (3, 32, 32, 3) and y.tolist() == [0, 0, 1]
    red = (np.array(COLOURS["cat"]) / 255.0 - spec.mean) / spec.std
    np.testing.assert_allclose(x[0, 16, 16], red, rtol=1e-4, atol=1e-4)

    x, y, sizes = _collect(make_dataset(spec, "train", (32, 32, 3), 4, training=True, seed=0))
    assert sizes == [4, 3] and x.shape == (7, 32, 32, 3) and x.dtype == np.float32
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert np.isfinite(x).all()

    # a plain path with a separator works as well
    assert get_dataset(str(tmp_path)).labels == ("cat", "dog")


def test_image_folder_val_split(tmp_path):
    _write_folder(tmp_path, {"train": {"cat": 1, "dog": 1}, "val": {"cat": 1, "dog": 2}})
    spec = get_dataset(f"folder:{tmp_path}")
    assert spec.test_split == "val"
    assert [int(y) for _, y in load_split(spec, "test")] == [0, 1, 1]


def test_image_folder_without_train_raises(tmp_path):
    _write_folder(tmp_path, {"test": {"cat": 1, "dog": 1}})
    with pytest.raises(DatasetNotFoundError, match="train/"):
        get_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError):
        get_dataset(f"folder:{tmp_path / 'missing'}")


def test_image_folder_without_test_split_raises(tmp_path):
    _write_folder(tmp_path, {"train": {"cat": 1, "dog": 1}})
    spec = get_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_split(spec, "test")


# ----------------------------------------------------------------------------- photometric


def _rgb_spec(augment):
    return dataclasses.replace(get_dataset("cifar10"), augment=augment, mean=(0.0, 0.0, 0.0),
                               std=(1.0, 1.0, 1.0))


def test_pca_lighting_adds_the_eigen_shift_in_the_imagenet_pipeline_only():
    rng = np.random.RandomState(0)
    image = tf.constant(rng.randint(0, 256, size=(32, 32, 3)), tf.uint8)
    seed = tf.constant([3, 7], tf.int64)
    spec = _rgb_spec("inception")
    plain = preprocess(image, spec, (32, 32, 3), training=True, seed=seed).numpy()
    lit = preprocess(image, spec, (32, 32, 3), training=True, seed=seed, photometric="lighting").numpy()
    # the same crop and flip; every pixel shifted by eigvec @ (alpha * eigval), alpha ~ N(0, 0.1)
    alpha = tf.random.stateless_normal([3], tf.random.experimental.stateless_fold_in(seed, 3),
                                       stddev=0.1).numpy()
    shift = np.array(zdata.PCA_EIGVEC) @ (alpha * np.array(zdata.PCA_EIGVAL))
    assert np.abs(shift).max() > 1e-3
    np.testing.assert_allclose(lit - plain, np.broadcast_to(shift, plain.shape), atol=1e-5)
    # Fashion-MNIST / CIFAR pipelines (flip, crop_flip) leave it out: published commands reproduce
    for augment in ("flip", "crop_flip"):
        spec = _rgb_spec(augment)
        np.testing.assert_array_equal(
            preprocess(image, spec, (32, 32, 3), training=True, seed=seed, photometric="lighting"),
            preprocess(image, spec, (32, 32, 3), training=True, seed=seed))
    with pytest.raises(zoo.InvalidInputError, match="photometric"):
        preprocess(image, spec, (32, 32, 3), training=True, photometric="sepia")


def test_color_jitter_factors_stay_within_0_4():
    gray = tf.fill((8, 8, 3), 0.5)  # contrast and saturation leave a flat gray image alone
    values = [float(zdata.color_jitter(gray, tf.constant([i, 1], tf.int64))[0, 0, 0])
              for i in range(200)]
    assert 0.5 * 0.6 - 1e-6 <= min(values) < 0.5 * 0.7 and 0.5 * 1.3 < max(values) <= 0.5 * 1.4 + 1e-6
    colour = tf.constant(np.random.RandomState(1).rand(8, 8, 3), tf.float32)
    out = zdata.color_jitter(colour, tf.constant([0, 2], tf.int64)).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, colour.numpy())
