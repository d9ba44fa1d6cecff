"""Attentive CutMix (Walawalkar et al., ICASSP 2020, arXiv 2003.13048) as a batch transform.

A frozen, trained feature extractor looks at every image of the batch; its
feature map averaged over the channels is the attention map. The map is
resized to a ``grid x grid`` grid of cells (7x7 in the paper: a ResNet-50's last
map at 224x224, one cell per 32x32 patch); the ``top_k`` cells (6 in the paper)
of the partner image ``perm[i]`` are pasted into image ``i`` at the same
positions, and the labels mix by the pasted area (``k / grid**2`` when the
image side divides by the grid).

The grid always has ``grid x grid`` cells whatever the image size, as in the
paper, which runs its CIFAR images through the extractor at 224x224 and so
pastes 1/7-side cells: a 28x28 Fashion-MNIST image gets 4x4-pixel cells. When
the side does not divide by the grid, pixel row ``r`` belongs to cell row
``floor(r * grid / H)`` and the label ratio is the exact pasted pixel fraction.

The extractor's map: the deepest feature map of the extractor with at least
``grid x grid`` positions (``layer='auto'``; a ResNet-50 at 224 gives its last
7x7 map, the paper's; a Bi-Real Net-18 at 28x28 gives the 7x7 map after its
first stage, the deeper ones being 4x4 and smaller), averaged over channels
(not one channel: a third-party port takes only the last channel) and
resized to the grid (area averaging, bilinear when it is smaller).

Extractors (``extractor=``):

- ``resnet50``: keras.applications ResNet-50 with its ImageNet weights (the
  paper's); Keras downloads them once into ``~/.keras/models``.
- ``NAME.TAG``: a published zoo weight set, e.g. ``birealnet18.fashion_mnist``.
- ``NAME:WEIGHTS`` or ``RUN_DIR``: a zoo entry with a weights file or a
  ``zoo train`` run directory (its config.json names the model).
- ``auto`` (default): ResNet-50 with ImageNet weights when they are in the Keras
  cache (or can be downloaded), else the published zoo weight set trained on the
  training dataset that is real-valued and scores best, else an error that says
  what to pass. Offline on Fashion-MNIST this picks ``resnet18.fashion_mnist``.
"""
from __future__ import annotations

import sys
from typing import Optional

import tensorflow as tf

from zoo.augment.mixing import mix_labels, random_permutation, split_seed
from zoo import settings
from zoo.errors import InvalidInputError, ZooError
from zoo.runs import load_for_evaluation, split_reference

RESNET50_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def attention_grid(feature_map, grid: int) -> tf.Tensor:
    """``[B, h, w, C]`` feature map -> ``[B, grid, grid]`` channel-mean attention."""
    attention = tf.reduce_mean(tf.cast(feature_map, tf.float32), axis=-1, keepdims=True)
    h, w = feature_map.shape[1], feature_map.shape[2]
    if (h, w) != (grid, grid):
        method = "area" if h is not None and h >= grid and w >= grid else "bilinear"
        attention = tf.image.resize(attention, (grid, grid), method=method)
    return attention[..., 0]


def top_cells(attention, k: int) -> tf.Tensor:
    """``[B, g, g]`` -> ``[B, g, g]`` 0/1 mask of each sample's ``k`` largest cells."""
    shape = tf.shape(attention)
    flat = tf.reshape(attention, [shape[0], -1])
    _, indices = tf.math.top_k(flat, k=k)
    mask = tf.reduce_sum(tf.one_hot(indices, tf.shape(flat)[1]), axis=1)
    return tf.reshape(mask, shape)


def cells_to_pixels(cells, height: int, width: int) -> tf.Tensor:
    """``[B, g, g]`` cell mask -> ``[B, H, W]`` pixel mask (row r in cell floor(r*g/H))."""
    grid = tf.shape(cells)[1]
    rows = (tf.range(height) * grid) // height
    cols = (tf.range(width) * grid) // width
    return tf.gather(tf.gather(cells, rows, axis=1), cols, axis=2)


def paste_top_cells(images, attention, perm, k: int):
    """Paste the ``k`` most attended cells of ``images[perm]`` into ``images``.

    Returns (mixed images, pasted fraction per sample)."""
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        height, width = tf.shape(images)[1], tf.shape(images)[2]
    cells = tf.gather(top_cells(attention, k), perm)
    mask = cells_to_pixels(cells, height, width)[..., None]
    mixed = images * (1.0 - mask) + tf.gather(images, perm) * mask
    return mixed, tf.reduce_mean(mask, axis=[1, 2, 3])


class AttentiveCutMix:
    """The batch transform; ``feature_fn`` maps the batch (as the model sees it) to a feature map."""

    name = "attentive_cutmix"

    # grid 7 and top_k 6: the paper's 7x7 ResNet-50 map and its N = 6 (arXiv 2003.13048 §3);
    # prob 1.0: every batch is mixed, as the paper's method is described
    def __init__(self, feature_fn, grid: int = 7, top_k: int = 6, prob: float = 1.0,
                 extractor: str = "auto", layer: str = "auto"):
        if not 1 <= int(top_k) <= int(grid) ** 2:
            raise InvalidInputError(f"top_k must be between 1 and grid**2 = {int(grid) ** 2}, got {top_k}.")
        self.feature_fn = feature_fn
        self.grid, self.top_k, self.prob = int(grid), int(top_k), float(prob)
        self.extractor, self.layer = extractor, layer

    def config(self):
        return {"grid": self.grid, "top_k": self.top_k, "prob": self.prob,
                "extractor": self.extractor, "layer": self.layer}

    def __call__(self, images, labels, num_classes: int, seed):
        seed_apply, seed_perm = split_seed(seed, 2)
        onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
        perm = random_permutation(tf.shape(images)[0], seed_perm)

        def mix():
            attention = attention_grid(self.feature_fn(images), self.grid)
            mixed, pasted = paste_top_cells(images, attention, perm, self.top_k)
            return mixed, mix_labels(onehot, perm, 1.0 - pasted)

        return tf.cond(tf.random.stateless_uniform([], seed_apply) < self.prob, mix,
                       lambda: (images, onehot))


# ----------------------------------------------------------------------------- extractors


def pick_layer(model, grid: int, layer: str = "auto"):
    """The output of ``layer`` (a name), or the deepest 4-D output with >= grid x grid positions."""
    if layer != "auto":
        try:
            return model.get_layer(layer).output
        except ValueError as error:
            raise InvalidInputError(f"{model.name} has no layer {layer!r}.") from error
    best = None
    for item in model.layers:
        output = item.output
        if isinstance(output, (list, tuple)) or len(output.shape) != 4:
            continue
        h, w = output.shape[1], output.shape[2]
        if h is not None and w is not None and h >= grid and w >= grid:
            best = output
    if best is None:
        raise InvalidInputError(
            f"{model.name} has no feature map of at least {grid}x{grid}: pass a smaller "
            f"--augment-arg grid=N or another extractor.")
    return best


def _resnet50_weights_available() -> bool:
    cached = settings.keras_home() / "models" / RESNET50_NOTOP
    if cached.is_file():
        return True
    if settings.offline():
        return False
    from zoo.data import host_resolves

    return host_resolves("storage.googleapis.com")


def _published_for(dataset: str) -> Optional[str]:
    """The published zoo weight set trained on ``dataset`` that an extractor should be:
    real-valued entries first (the paper's extractor is a real classifier), then the
    highest test top-1."""
    from zoo.registry import MODELS

    found = []
    for name, entry in MODELS.items():
        for tag, spec in entry.weights.items():
            if getattr(spec, "dataset", None) == dataset:
                top1 = (getattr(spec, "metrics", None) or {}).get("top1", 0.0)
                found.append((entry.binary, -top1, name, tag))
    return f"{min(found)[2]}.{min(found)[3]}" if found else None


def resolve_extractor_name(extractor: str, dataset: str) -> str:
    """``auto`` -> the extractor actually used (see the module doc)."""
    if extractor != "auto":
        return extractor
    if _resnet50_weights_available():
        return "resnet50"
    published = _published_for(dataset)
    if published is not None:
        return published
    raise ZooError(
        f"Attentive CutMix needs a trained feature extractor: the ImageNet ResNet-50 weights are "
        f"not in ~/.keras/models ({RESNET50_NOTOP}) and cannot be downloaded, and no published zoo "
        f"weights exist for {dataset}. Pass --augment-arg extractor=NAME.TAG, NAME:WEIGHTS.h5 or "
        f"a `zoo train` RUN_DIR.")


def build_feature_fn(extractor: str, train_spec, input_shape, grid: int, layer: str = "auto"):
    """A function of the training batch (normalised as ``train_spec``) -> the extractor's
    feature map, with the extractor frozen and run in inference mode."""
    mean = tf.constant(train_spec.mean, tf.float32)
    std = tf.constant(train_spec.std, tf.float32)

    def to_unit(images):  # back to [0, 1] pixels; grayscale datasets were tiled to 3 channels
        channels = len(train_spec.mean)
        if images.shape[-1] != channels and channels == 1:
            images = tf.reduce_mean(images, axis=-1, keepdims=True)
        return images * std + mean

    def fit_channels(images, channels):
        if images.shape[-1] == channels:
            return images
        if images.shape[-1] == 1:
            return tf.tile(images, [1, 1, 1, channels])
        return tf.reduce_mean(images, axis=-1, keepdims=True)

    if extractor.lower() in ("resnet50", "keras:resnet50"):
        try:
            base = tf.keras.applications.ResNet50(include_top=False, weights="imagenet",
                                                  input_shape=(224, 224, 3))
        except Exception as error:  # no network, a broken download
            raise ZooError(
                f"Cannot load the ImageNet ResNet-50 weights ({RESNET50_NOTOP} in ~/.keras/models): "
                f"{error}. Put the file there, or pass --augment-arg extractor=NAME.TAG (a published "
                f"zoo weight set) or a `zoo train` RUN_DIR.") from error
        model = tf.keras.Model(base.input, pick_layer(base, grid, layer))
        model.trainable = False

        def feature_fn(images):
            x = tf.image.resize(fit_channels(to_unit(images), 3), (224, 224)) * 255.0
            return model(tf.keras.applications.resnet50.preprocess_input(x), training=False)

        return feature_fn

    name, weights = split_reference(extractor)  # RUN_DIR, NAME:WEIGHTS or NAME.TAG
    net, spec, shape = load_for_evaluation(name, weights, None)
    model = tf.keras.Model(net.input, pick_layer(net, grid, layer))
    model.trainable = False
    ext_mean = tf.constant(spec.mean, tf.float32)
    ext_std = tf.constant(spec.std, tf.float32)
    size = (int(shape[0]), int(shape[1]))
    print(f"Attentive CutMix extractor: {extractor} ({net.name}, input {tuple(shape)}, "
          f"feature map {tuple(model.output.shape[1:])})", file=sys.stderr)

    def feature_fn(images):
        x = to_unit(images)
        if tuple(x.shape[1:3]) != size:
            x = tf.image.resize(x, size)
        x = (fit_channels(x, len(spec.mean)) - ext_mean) / ext_std
        return model(fit_channels(x, int(shape[-1])), training=False)

    return feature_fn
