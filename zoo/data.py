"""Datasets by name, through tensorflow-datasets, and the per-model pipelines.

Offline machines give tfds the already-downloaded files through a manual
directory: ``ZOO_MANUAL_DIR`` (files directly in it, or in a sub-folder named
after the dataset), else a known system location (Debian's
``dataset-fashion-mnist`` package puts Fashion-MNIST in
``/usr/share/datasets/fashion-mnist``). Prepared data goes to ``ZOO_DATA_DIR``
(default: tfds' own ``~/tensorflow_datasets``).

An image folder works too: ``folder:/path/to/root`` with ``train/`` and
``test/`` (or ``val/``, ``validation/``) sub-folders holding one folder per class.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from zoo import settings
from zoo.errors import DatasetNotFoundError, InvalidInputError
from zoo.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset the zoo can train and evaluate on."""

    name: str
    tfds_name: Optional[str]
    num_classes: int
    image_shape: Tuple[int, int, int]  # native (H, W, C)
    # model input size used when a model is trained on it (small datasets are padded up)
    default_size: int
    mean: Tuple[float, ...]  # per channel, on [0, 1] pixels
    std: Tuple[float, ...]
    train_split: str = "train"
    test_split: str = "test"
    augment: str = "flip"  # "flip" | "crop_flip" | "inception" | "none"
    labels: Tuple[str, ...] = ()
    manual_files: Tuple[str, ...] = ()
    system_dirs: Tuple[str, ...] = ()
    root: Optional[str] = None  # image folders only
    # where tfds downloads it from (None: manual download only, e.g. ImageNet)
    download_host: Optional[str] = None

    @property
    def large(self) -> bool:
        return self.image_shape[0] is None or self.image_shape[0] > 64


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec, aliases: Sequence[str] = ()) -> DatasetSpec:
    return DATASETS.register(spec.name, spec, aliases)


# Channel statistics are computed on the training splits.
register_dataset(DatasetSpec(
    # native 28x28: every zoo entry with 'same' padding runs at it, and an epoch of
    # Bi-Real-18 takes ~110 s on 2 CPU cores (32x32: ~145 s)
    "fashion_mnist", "fashion_mnist:3.*.*", 10, (28, 28, 1), 28, (0.2860,), (0.3530,),
    augment="flip",
    labels=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
            "Sneaker", "Bag", "Ankle boot"),
    manual_files=("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    download_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com",
), aliases=("fmnist",))
register_dataset(DatasetSpec(
    "cifar10", "cifar10:3.*.*", 10, (32, 32, 3), 32,
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), augment="crop_flip",
    labels=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    manual_files=("cifar-10-binary.tar.gz",), download_host="www.cs.toronto.edu",
))
register_dataset(DatasetSpec(
    "cifar100", "cifar100:3.*.*", 100, (32, 32, 3), 32,
    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), augment="crop_flip",
    manual_files=("cifar-100-binary.tar.gz",), download_host="www.cs.toronto.edu",
))
register_dataset(DatasetSpec(
    "imagenet2012", "imagenet2012:5.*.*", 1000, (None, None, 3), 224,
    (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), test_split="validation", augment="inception",
    manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
), aliases=("imagenet",))
register_dataset(DatasetSpec(
    "imagenette", "imagenette/full-size-v2:1.*.*", 10, (None, None, 3), 224,
    (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), test_split="validation", augment="inception",
    labels=("tench", "English springer", "cassette player", "chain saw", "church", "French horn",
            "garbage truck", "gas pump", "golf ball", "parachute"),
    manual_files=("imagenette2.tgz",), download_host="s3.amazonaws.com",
))


def get_dataset(name: str) -> DatasetSpec:
    """The spec of a registered dataset, or of an image folder given as ``folder:PATH``."""
    name = str(name)
    if name.startswith("folder:") or (os.sep in name and Path(name).is_dir()):
        return _folder_spec(name.split(":", 1)[1] if name.startswith("folder:") else name)
    return DATASETS.get(name)


# ----------------------------------------------------------------------------- locating files


def manual_dir(spec: DatasetSpec) -> Optional[Path]:
    """The folder holding the dataset's already-downloaded files, if there is one."""
    candidates = []
    root = settings.manual_dir_root()
    if root is not None:
        candidates += [root / spec.name, root / spec.name.replace("_", "-"), root]
    candidates += [Path(d) for d in spec.system_dirs]
    for folder in candidates:
        if folder.is_dir() and all((folder / f).exists() for f in spec.manual_files):
            return folder
    return None


def _missing_message(spec: DatasetSpec, reason: str = "") -> str:
    files = ", ".join(spec.manual_files) or "the dataset files"
    hint = ""
    if spec.name == "fashion_mnist":
        hint = " On Debian/Ubuntu: `apt-get install dataset-fashion-mnist`."
    reason = f" ({reason})" if reason else ""
    return (
        f"Dataset {spec.name!r} is not available{reason}: put {files} in "
        f"$ZOO_MANUAL_DIR or $ZOO_MANUAL_DIR/{spec.name} (set ZOO_MANUAL_DIR to that folder), "
        f"or run once with internet access so tensorflow-datasets downloads it.{hint}"
    )


def _prepared_builder(spec: DatasetSpec):
    import tensorflow_datasets as tfds

    builder = tfds.builder(spec.tfds_name, data_dir=settings.data_dir())
    if _is_prepared(builder):
        return builder
    folder = manual_dir(spec)
    if folder is None:
        if settings.offline():
            raise DatasetNotFoundError(_missing_message(spec, "ZOO_OFFLINE=1 and no manual files"))
        if spec.download_host is None:
            raise DatasetNotFoundError(_missing_message(spec, "it can only be downloaded by hand"))
        if not host_resolves(spec.download_host):
            raise DatasetNotFoundError(_missing_message(spec, f"no network: {spec.download_host} "
                                                              f"cannot be reached"))
    # one process prepares, others wait for it (tfds' own rename is not safe against a race)
    with _prepare_lock(builder, spec):
        builder = tfds.builder(spec.tfds_name, data_dir=settings.data_dir())
        if _is_prepared(builder):  # another process finished while this one waited
            return builder
        print(f"Preparing {spec.name} with tensorflow-datasets"
              f"{f' from {folder}' if folder else ''} (once)...", file=sys.stderr)
        config = tfds.download.DownloadConfig(manual_dir=str(folder) if folder else None)
        try:  # tensorflow-datasets prints on stdout: keep it free for --format json
            tfds.disable_progress_bar()  # hundreds of tqdm lines otherwise
            with contextlib.redirect_stdout(sys.stderr):
                builder.download_and_prepare(download_config=config)
        except Exception as error:  # network errors, missing manual files, corrupt archives
            first = (str(error).strip().splitlines()[0][:200] if str(error).strip()
                     else type(error).__name__)
            raise DatasetNotFoundError(_missing_message(spec, first)) from error
    return builder


def _prepare_lock(builder, spec: DatasetSpec):
    """A file lock beside the dataset's tfds version folder (waits up to an hour)."""
    from filelock import FileLock

    folder = Path(builder.data_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder.with_name(folder.name + ".lock")), timeout=3600)


def host_resolves(host: str) -> bool:
    """A fast check (DNS only) before tfds' download, which retries for minutes offline."""
    import socket

    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _is_prepared(builder) -> bool:
    try:
        return bool(builder.info.splits) and tf.io.gfile.exists(
            os.path.join(builder.data_dir, "dataset_info.json"))
    except Exception:  # noqa: BLE001 - an unprepared builder may fail in many ways
        return False


def class_names(spec: DatasetSpec) -> Tuple[str, ...]:
    if spec.labels:
        return spec.labels
    if spec.root is not None:
        return tuple(_folder_classes(Path(spec.root)))
    return tuple(str(i) for i in range(spec.num_classes))


def num_examples(spec: DatasetSpec, split: str) -> int:
    if spec.root is not None:
        return len(_folder_files(spec, split)[0])
    builder = _prepared_builder(spec)
    return builder.info.splits[_split_name(spec, split)].num_examples


def _split_name(spec: DatasetSpec, split: str) -> str:
    return {"train": spec.train_split, "test": spec.test_split}.get(split, split)


def load_split(spec: DatasetSpec, split: str) -> tf.data.Dataset:
    """Raw ``(image uint8 HxWxC, label int64)`` pairs of a split, in a fixed order."""
    if spec.root is not None:
        return _folder_split(spec, split)
    builder = _prepared_builder(spec)
    name = _split_name(spec, split)
    if name.split("[")[0] not in builder.info.splits:
        raise InvalidInputError(
            f"Dataset {spec.name!r} has no split {split!r}; it has {sorted(builder.info.splits)}.")
    return builder.as_dataset(split=name, as_supervised=True, shuffle_files=False)


# ----------------------------------------------------------------------------- image folders


def _folder_classes(root: Path):
    train = root / "train"
    return sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []


def _folder_spec(path: str) -> DatasetSpec:
    root = Path(path).expanduser().resolve()
    classes = _folder_classes(root)
    if not classes:
        raise DatasetNotFoundError(
            f"Image folder {root} needs a train/ sub-folder with one folder of images per class "
            f"(and test/ or val/ for evaluation).")
    if len(classes) < 2:
        raise InvalidInputError(
            f"Image folder {root} has {len(classes)} class folder(s) under train/ "
            f"({', '.join(classes)}): a classifier needs at least two (one sub-folder per class).")
    test = next((s for s in ("test", "val", "validation") if (root / s).is_dir()), "test")
    return DatasetSpec(
        name=f"folder:{root}", tfds_name=None, num_classes=len(classes),
        image_shape=(None, None, 3), default_size=224,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        test_split=test, augment="inception", labels=tuple(classes), root=str(root),
    )


def _folder_files(spec: DatasetSpec, split: str):
    root = Path(spec.root) / _split_name(spec, split)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Image folder split {root} does not exist.")
    files, labels = [], []
    for index, name in enumerate(spec.labels):
        folder = root / name
        if not folder.is_dir():
            continue
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(str(file))
                labels.append(index)
    if not files:
        raise DatasetNotFoundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")
    return files, labels


def _folder_split(spec: DatasetSpec, split: str) -> tf.data.Dataset:
    files, labels = _folder_files(spec, split)

    def read(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return image, tf.cast(label, tf.int64)

    return tf.data.Dataset.from_tensor_slices((files, labels)).map(
        read, num_parallel_calls=tf.data.AUTOTUNE)


@contextlib.contextmanager
def named_image_errors(spec: DatasetSpec):
    """Turns TensorFlow's error for an image of a ``folder:`` dataset that cannot be decoded
    (raised deep inside a fit or an evaluation, without the file's name) into one
    InvalidInputError that names the file."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        bad = _unreadable_image(spec) if spec.root is not None else None
        if bad is None:
            raise
        path, reason = bad
        raise InvalidInputError(f"{path} (in image folder {spec.root}) is not a readable image "
                                f"({reason}); remove or replace it.") from error


def _unreadable_image(spec: DatasetSpec):
    """``(path, reason)`` of the first image of a folder dataset that does not decode."""
    for split in ("train", "test"):
        try:
            files = _folder_files(spec, split)[0]
        except DatasetNotFoundError:
            continue
        for path in files:
            try:
                tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
                text = re.sub(r"\{\{.*?\}\}", "", error.message).strip()  # TensorFlow's op prefix
                return path, (text.splitlines() or ["unknown format"])[0].rstrip(". ")[:120]
    return None


# ----------------------------------------------------------------------------- preprocessing


def input_shape_for(spec: DatasetSpec, entry=None, image_size: Optional[int] = None):
    """The model input shape for a dataset: (S, S, 3)."""
    if image_size is None:
        image_size = spec.default_size
        if entry is not None:
            image_size = max(image_size, entry.min_input_size)
            if spec.large:
                image_size = entry.input_size[0]
            multiple = entry.input_multiple  # round up: Fashion-MNIST 28 -> 32 at 8
            image_size = -(-image_size // multiple) * multiple
    channels = entry.input_size[2] if entry is not None else 3
    return (int(image_size), int(image_size), int(channels))


def _match_channels(image, channels: int):
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1:
        return tf.tile(image, [1, 1, channels])
    if channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise InvalidInputError(f"Cannot map {have}-channel images to {channels} channels.")


def _resize(image, size: int, spec: DatasetSpec):
    """Small datasets: centred zero padding up to ``size`` (Fashion-MNIST 28 -> 32) or a
    bilinear resize; large ones: resize the shorter side to size/0.875, centre crop."""
    native = spec.image_shape[0]
    if native is not None and not spec.large:
        if native == size:
            return image
        if native < size <= native + 8:
            return tf.image.resize_with_crop_or_pad(image, size, size)
        return tf.image.resize(image, (size, size), method="bilinear")
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, resized, method="bilinear")
    return tf.image.resize_with_crop_or_pad(image, size, size)


def _inception_crop(image, size: int, seed):
    """Random-resized crop (area 0.08-1, aspect 3/4-4/3) then resize, as the papers' ImageNet recipes."""
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seed, area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop)
    return tf.image.resize(image, (size, size), method="bilinear")


# AlexNet's PCA lighting noise on ImageNet's RGB eigen-decomposition (the values of the
# Bi-Real / ReActNet / MetaPruning releases' utils Lighting, from fb.resnet.torch)
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
LIGHTING_STD = 0.1  # Bi-Real / ReActNet train.py: Lighting(0.1)
JITTER = 0.4  # SPOS Evaluation/train.py: ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
# photometric augmentations a recipe stage can name; the ImageNet-style ("inception") pipeline
# applies them, smaller datasets' pipelines do not
PHOTOMETRIC = ("none", "lighting", "color_jitter")


def pca_lighting(image, seed, std: float = LIGHTING_STD):
    """``image`` ([0, 1] RGB) + eigvec @ (alpha * eigval), alpha ~ N(0, std) per image.

    The releases apply it to 0-255 uint8 images and cast back, where the shift (< 1 level)
    mostly truncates away; here it acts on [0, 1] images as in fb.resnet.torch."""
    alpha = tf.random.stateless_normal([3], seed, stddev=std)
    shift = tf.linalg.matvec(tf.constant(PCA_EIGVEC), alpha * tf.constant(PCA_EIGVAL))
    return image + shift


def color_jitter(image, seed, strength: float = JITTER):
    """Brightness, contrast and saturation each scaled by a factor uniform in
    [1 - strength, 1 + strength] (torchvision's ColorJitter, in this fixed order)."""
    factors = tf.random.stateless_uniform([3], seed, 1.0 - strength, 1.0 + strength)
    image = image * factors[0]
    gray = tf.image.rgb_to_grayscale(image)
    image = (image - tf.reduce_mean(gray)) * factors[1] + tf.reduce_mean(gray)
    gray = tf.image.rgb_to_grayscale(image)
    image = (image - gray) * factors[2] + gray
    return tf.clip_by_value(image, 0.0, 1.0)


def preprocess(image, spec: DatasetSpec, input_shape, training: bool = False, augment: Optional[str] = None,
               seed=None, photometric: str = "none"):
    """uint8 image -> normalised float32 model input (augmented when ``training``).

    Training augmentations are stateless random ops driven by ``seed`` (a [2] int
    tensor, one per image: see :func:`make_dataset`), so a seeded pipeline gives the
    same images whatever the parallelism; without one a random seed is drawn.
    ``photometric`` (one of PHOTOMETRIC, a recipe's choice) is added to the ImageNet-style
    pipeline only (``augment="inception"``)."""
    if photometric not in PHOTOMETRIC:
        raise InvalidInputError(f"Unknown photometric augmentation {photometric!r}: use one of "
                                f"{', '.join(PHOTOMETRIC)}.")
    size, channels = int(input_shape[0]), int(input_shape[-1])
    augment = spec.augment if augment is None else augment
    image = tf.cast(image, tf.float32) / 255.0
    if training and augment in ("flip", "crop_flip", "inception"):
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if training and augment == "inception":
        image = _inception_crop(image, size, crop_seed)
    else:
        image = _resize(image, size, spec)
    if training and augment in ("flip", "crop_flip", "inception"):
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if training and augment == "crop_flip":  # 4-pixel zero padding + random crop
        image = tf.image.resize_with_crop_or_pad(image, size + 8, size + 8)
        image = tf.image.stateless_random_crop(image, tf.stack([size, size, tf.shape(image)[-1]]),
                                               crop_seed)
    if training and augment == "inception" and photometric != "none" and image.shape[-1] == 3:
        # its own seed (folded in), so the crops and flips stay those of a pipeline without it
        photo_seed = tf.random.experimental.stateless_fold_in(seed, 3)
        image = (pca_lighting if photometric == "lighting" else color_jitter)(image, photo_seed)
    image = (image - tf.constant(spec.mean)) / tf.constant(spec.std)
    image = _match_channels(image, channels)
    image.set_shape((size, size, channels))
    return image


def make_dataset(
    spec,
    split: str,
    input_shape,
    batch_size: int,
    training: bool = False,
    augment: Optional[str] = None,
    seed: Optional[int] = None,
    limit: Optional[int] = None,
    cache: Optional[bool] = None,
    photometric: str = "none",
) -> tf.data.Dataset:
    """A batched, prefetched pipeline of ``(image, label)``.

    Training: shuffled (seeded), augmented. Evaluation: deterministic, in the
    split's own order, every example once (last batch may be smaller).
    """
    if isinstance(spec, str):
        spec = get_dataset(spec)
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be positive, got {batch_size}.")
    ds = load_split(spec, split)
    if limit:
        ds = ds.take(int(limit))
    if cache if cache is not None else not spec.large:
        ds = ds.cache()  # decoded uint8 images: 47 MB for Fashion-MNIST
    if training:
        ds = ds.shuffle(10_000 if not spec.large else 2_000, seed=seed, reshuffle_each_iteration=True)
        # one augmentation seed per position in the epoch: the shuffle moves images between
        # positions, so an image gets other flips / crops every epoch, reproducibly
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))

        def prep(example, aug_seed):
            image, label = example
            return preprocess(image, spec, input_shape, training, augment, seed=aug_seed,
                              photometric=photometric), label
    else:
        def prep(image, label):
            return preprocess(image, spec, input_shape, training, augment), label

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training or seed is not None)
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(tf.data.AUTOTUNE)
