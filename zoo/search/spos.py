"""Single Path One-Shot NAS (arXiv 1904.00420): supernet training and evolutionary search.

Registered searches ``spos`` (real-valued ShuffleNetV2 space, constraint on
FLOPs) and ``spos_binary`` (binary 1x1 convs, constraint on OPs = FLOPs +
BOPs / 64); the spaces and networks live in :mod:`zoo.models.spos`.

1. Supernet training (paper §3.2-3.3): every batch trains one path, sampled
   uniformly among the architectures whose cost lies in the band
   ``[290/330, 360/330] x limit`` (the official code trains in 290-360M FLOPs for
   a 330M limit): rejection sampling, at most 500 tries, else an unconstrained
   path, as the official code does. One traced train step serves every path (the
   path is a tensor argument assigned to the choice layers' variables). SGD,
   momentum 0.9, LR 0.5 at batch 1024 (scaled linearly to the batch size) decayed
   linearly to 0, weight decay 4e-5 on conv / dense kernels only, label smoothing
   0.1; weights whose gradient is exactly zero (blocks not on the path) are not
   updated that step, so momentum and decay do not move them (official code).
2. Evolutionary search (§3.4, :func:`zoo.search.engine.evolutionary_search`):
   candidates with cost <= limit; a candidate's score is the supernet path's top-1
   on held-out training images (the last ``val_images`` of the training split,
   never trained on) after BN recalibration on training batches.
3. The random baseline: the median score of ``random_baseline`` random
   architectures under the same limit, scored the same way.

Costs are those of the candidate's stand-alone Keras graph at the search's
input size (``zoo.costs.model_costs``: float MACs = FLOPs, or OPs). They add up
over layers, so each (layer, block, scale) term is profiled once on a one-block
Keras model and a candidate's cost is their sum plus the stem / tail term;
``tests/test_spos.py`` checks the sum against the profile of the whole model.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.costs import model_costs
from zoo.errors import InvalidInputError, ZooError
from zoo.models import spos as S
from zoo.search import SearchConfig, SearchResult, register_search
from zoo.search.engine import (
    SearchSpace, evolutionary_search, median_random_score, plot_search, recalibrate_batchnorm,
    sample_within, top1_accuracy,
)

# SPOS official Supernet/train.py: FLOPs band 290M-360M around the 330M search limit
BAND = (290.0 / 330.0, 360.0 / 330.0)
SAMPLE_TRIES = 500
MAX_SAMPLE = len(S.SCALES) - 1  # official: at most 500 rejection tries per training path
DEFAULTS = {
    "supernet_epochs": 120,  # 150k iterations at batch 1024 on ImageNet (~120 epochs)
    "recalibration_batches": 200,  # official search: 200 train-mode batches
    "lr": 0.5,  # SGD at batch 1024 (official Supernet/train.py), scaled to the batch size
    "momentum": 0.9,
    "weight_decay": 4e-5,
    "label_smoothing": 0.1,
    "optimizer": "sgd",  # "adam": Adam (lr default 2e-3), the zoo's short-run choice
    "width": 1.0,
    "layers": S.NUM_LAYERS,  # choice layers: the paper's 20, or 5 / 10 / 15 for small inputs
    "val_images": 10000,  # held out of the training split to score candidates
    "traced": True,  # one traced train step for every path; false: eager steps
}


# ----------------------------------------------------------------------------- the space


class SPOSSpace(SearchSpace):
    """``layers`` block genes (4 options) then ``layers`` channel-scale genes (8 options)."""

    def __init__(self, width: float = 1.0, binary: bool = False, input_shape=(224, 224, 3),
                 num_classes: int = 1000, layers: int = S.NUM_LAYERS):
        self.width, self.binary = float(width), bool(binary)
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
        self.specs = S.layer_specs(self.width, layers)
        self.layers = n = len(self.specs)
        self.choices = (len(S.BLOCKS),) * n + (len(S.SCALES),) * n
        self.metric = "ops" if binary else "float_macs"
        sizes, (h, w) = [], S._stem_size(self.input_shape[:2])
        for spec in self.specs:
            sizes.append((h, w))
            if spec.stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
        self.sizes = sizes
        self._terms: Dict[Tuple, Any] = {}
        self._fixed: Optional[float] = None

    @property
    def model(self) -> str:
        return "spos_binary" if self.binary else "spos"

    def encode(self, candidate) -> str:
        return S.format_arch(candidate[:self.layers], candidate[self.layers:], self.width)

    def decode(self, arch: str):
        blocks, scales, width = S.parse_arch(arch)
        if len(blocks) != self.layers:
            raise InvalidInputError(f"Architecture {arch!r} has {len(blocks)} choice layers, this "
                                    f"space {self.layers}.")
        if (width or 1.0) != self.width:
            raise InvalidInputError(f"Architecture {arch!r} has width {width or 1.0:g}, this "
                                    f"space {self.width:g}.")
        return tuple(blocks) + tuple(scales)

    def build(self, candidate, **kwargs):
        """The stand-alone Keras model of a candidate at the space's input shape."""
        return S.build_spos(self.encode(candidate), binary=self.binary,
                            input_shape=self.input_shape, num_classes=self.num_classes, **kwargs)

    # -- costs: per (layer, block, scale) terms from one-block Keras graphs -----------------
    def _profile(self, spec: "S.LayerSpec", h: int, w: int, block: int, scale: int) -> float:
        inputs = tf.keras.Input((h, w, spec.inp))
        outputs = S._standalone_block(inputs, spec, block, scale, self.binary, True)
        return float(model_costs(tf.keras.Model(inputs, outputs))[self.metric])

    def term(self, layer: int, block: int, scale: int) -> float:
        """Cost of block ``block`` at scale ``scale`` in layer ``layer``.

        A block's MACs are a polynomial of degree <= 2 in its mid channels (Xception's
        mid -> mid 1x1 conv is the square term), so three profiled widths give every
        other one exactly (rounded to 1/64, the resolution of OPs = FLOPs + BOPs / 64).
        """
        spec = self.specs[layer]
        h, w = self.sizes[layer]
        key = (spec.inp, spec.oup, spec.stride, h, w, block)
        if key not in self._terms:
            mids = [spec.mid(s) for s in (0, 3, MAX_SAMPLE)]
            if len(set(mids)) == 3:
                self._terms[key] = ("poly", mids,
                                    [self._profile(spec, h, w, block, s) for s in (0, 3, MAX_SAMPLE)])
            else:  # tiny widths: some scales share a channel count, profile each one
                self._terms[key] = ("table", None,
                                    [self._profile(spec, h, w, block, s) for s in range(len(S.SCALES))])
        kind, mids, costs = self._terms[key]
        if kind == "table":
            return costs[scale]
        x = spec.mid(scale)
        value = sum(c * np.prod([(x - m) / (mi - m) for m in mids if m != mi])
                    for mi, c in zip(mids, costs))
        return round(float(value) * 64.0) / 64.0

    def fixed_cost(self) -> float:
        """Stem + last conv + classifier: a whole model's cost minus its block terms."""
        if self._fixed is None:
            candidate = (0,) * (2 * self.layers)  # Shuffle3x3 at scale 0.2 everywhere
            whole = float(model_costs(self.build(candidate))[self.metric])
            self._fixed = whole - self._blocks_cost(candidate)
        return self._fixed

    def _blocks_cost(self, candidate) -> float:
        n = self.layers
        return float(sum(self.term(i, candidate[i], candidate[n + i]) for i in range(n)))

    def cost(self, candidate) -> float:
        return self.fixed_cost() + self._blocks_cost(candidate)

    def cost_range(self) -> Tuple[float, float]:
        """The cheapest and the most expensive architecture of the space."""
        n = self.layers
        low = high = self.fixed_cost()
        for i in range(n):
            terms = [self.term(i, b, s) for b in range(len(S.BLOCKS)) for s in range(len(S.SCALES))]
            low, high = low + min(terms), high + max(terms)
        return low, high


# ----------------------------------------------------------------------------- data


def _pipeline(spec, input_shape, start: int, count: int, batch_size: int, training: bool,
              seed: int = 0):
    ds = zdata.load_split(spec, "train").skip(start).take(count).cache()
    if training:
        ds = ds.shuffle(min(count, 10_000), seed=seed, reshuffle_each_iteration=True)

    def prep(image, label):
        return zdata.preprocess(image, spec, input_shape, training), label

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- supernet training


class _PathOptimizer:
    """SGD with momentum (PyTorch form) or Adam, updating only the weights on the path.

    A weight whose gradient is exactly zero this step (a block not on the sampled
    path) keeps its value and its optimizer slots. Weight decay (coupled, ``wd * w``
    added to the gradient) applies to kernels (>= 2-D) only.
    """

    def __init__(self, variables, kind: str, momentum: float, weight_decay: float):
        if kind not in ("sgd", "adam"):
            raise InvalidInputError(f"optimizer must be 'sgd' or 'adam', got {kind!r}.")
        self.kind, self.momentum, self.weight_decay = kind, float(momentum), float(weight_decay)
        self.variables = variables
        self.slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.slots2 = ([tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
                       if kind == "adam" else [])
        self.steps = tf.Variable(0.0, trainable=False)

    def apply(self, grads, lr):
        self.steps.assign_add(1.0)
        for i, (var, grad) in enumerate(zip(self.variables, grads)):
            if grad is None:
                continue
            if isinstance(grad, tf.IndexedSlices):
                grad = tf.convert_to_tensor(grad)
            used = tf.cast(tf.reduce_any(tf.not_equal(grad, 0.0)), var.dtype)
            if self.weight_decay and len(var.shape) >= 2:
                grad = grad + self.weight_decay * var
            if self.kind == "sgd":
                buf = self.momentum * self.slots[i] + grad
                self.slots[i].assign(used * buf + (1.0 - used) * self.slots[i])
                update = lr * buf
            else:
                b1, b2, eps = 0.9, 0.999, 1e-7
                m = b1 * self.slots[i] + (1 - b1) * grad
                v = b2 * self.slots2[i] + (1 - b2) * tf.square(grad)
                self.slots[i].assign(used * m + (1.0 - used) * self.slots[i])
                self.slots2[i].assign(used * v + (1.0 - used) * self.slots2[i])
                t = self.steps
                update = lr * (m / (1 - b1 ** t)) / (tf.sqrt(v / (1 - b2 ** t)) + eps)
            var.assign_sub(used * update)
            if getattr(var, "constraint", None) is not None:
                var.assign(var.constraint(var))


def make_path_sampler(space: SPOSSpace, low: float, high: float, seed: int):
    """Uniform paths with ``low <= cost <= high`` (rejection, <= 500 tries, else any path)."""
    rng = np.random.default_rng([int(seed), 1904])

    def sample():
        try:
            candidate = sample_within(space, high, rng, SAMPLE_TRIES, min_cost=low)
        except ZooError:
            candidate = space.random(rng)
        n = space.layers
        return S.path_array(candidate[:n], candidate[n:])

    return sample


def train_supernet(supernet, dataset, epochs: int, sampler, *, steps_per_epoch: int,
                   lr: float, optimizer: str = "sgd", momentum: float = 0.9,
                   weight_decay: float = 4e-5, label_smoothing: float = 0.1, start_epoch: int = 0,
                   on_epoch=None, verbose: bool = True, traced: bool = True
                   ) -> List[Dict[str, float]]:
    """Train ``supernet`` one sampled path per batch; LR decays linearly to 0 over all epochs.

    ``traced``: one ``tf.function`` step serves every path (the path is a tensor
    argument); its single trace holds all 4 x 20 blocks and their gradients, which
    takes minutes on a small CPU. ``traced=False`` runs the same step eagerly: only the
    sampled blocks execute, nothing is traced (faster for short CPU runs).
    Returns one record per epoch (loss, accuracy, seconds). ``on_epoch(epoch, record)``
    runs after each epoch (the search saves the weights there, to resume).
    """
    from zoo.training.loop import SparseCrossentropy

    variables = supernet.trainable_variables
    opt = _PathOptimizer(variables, optimizer, momentum, weight_decay)
    loss_fn = SparseCrossentropy(label_smoothing)
    total_steps = max(1, epochs * steps_per_epoch)

    def step(x, y, path, rate):
        S.assign_path(supernet, path)
        with tf.GradientTape() as tape:
            probs = supernet(x, training=True)
            loss = loss_fn(y, probs)
        opt.apply(tape.gradient(loss, variables), rate)
        hits = tf.equal(tf.argmax(probs, -1), tf.cast(tf.reshape(y, [-1]), tf.int64))
        return loss, tf.reduce_mean(tf.cast(hits, tf.float32))

    if traced:
        step = tf.function(step)
    supernet._zoo_train_step = step  # one trace serves every path (tests check it)
    history = []
    global_step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        start, losses, accs = time.time(), [], []
        for x, y in dataset:
            rate = lr * max(0.0, 1.0 - global_step / total_steps)
            loss, acc = step(x, y, tf.constant(sampler()), tf.constant(rate, tf.float32))
            losses.append(float(loss))
            accs.append(float(acc))
            global_step += 1
            if verbose and sys.stderr.isatty():
                sys.stderr.write(f"\rsupernet epoch {epoch + 1}/{epochs} step {len(losses)}/"
                                 f"{steps_per_epoch} loss {np.mean(losses):.4f}   ")
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                  "accuracy": 100.0 * float(np.mean(accs)), "seconds": round(time.time() - start, 1)}
        history.append(record)
        if verbose:
            if sys.stderr.isatty():
                sys.stderr.write("\n")
            print(f"supernet epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}, train "
                  f"accuracy of the sampled paths {record['accuracy']:.2f}%, "
                  f"{record['seconds']:.0f}s", file=sys.stderr)
        if on_epoch is not None:
            on_epoch(epoch, record)
    return history


def _plot_supernet(path: Path, history: List[Dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [r["epoch"] for r in history]
    ax[0].plot(epochs, [r["loss"] for r in history], "o-")
    ax[0].set_title("supernet loss (sampled paths)")
    ax[1].plot(epochs, [r["accuracy"] for r in history], "o-")
    ax[1].set_title("train top-1 (%) of the sampled paths")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- the search


def _setting(config: SearchConfig, key: str):
    return config.extra.get(key, DEFAULTS[key])


def run_spos(config: SearchConfig, binary: bool = False) -> SearchResult:
    method = "spos_binary" if binary else "spos"
    known = set(DEFAULTS) | {"band"}
    unknown = set(config.extra) - known
    if unknown:
        raise InvalidInputError(f"Unknown {method} setting(s) {sorted(unknown)}; known: "
                                f"{sorted(known)}.")
    output = Path(config.output) if config.output is not None else Path("runs") / (
        f"{method}-search-{time.strftime('%Y%m%d-%H%M%S')}")
    output.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(config.seed)

    spec = zdata.get_dataset(config.dataset)
    from zoo.api import get_entry

    input_shape = zdata.input_shape_for(spec, get_entry(method), config.image_size)
    width = float(_setting(config, "width"))
    layers = int(_setting(config, "layers"))
    space = SPOSSpace(width, binary, input_shape, spec.num_classes, layers)
    max_cost = config.max_ops
    if max_cost is None:
        # default: the cost of the paper's searched network at this width (20 layers), or of
        # the plain ShuffleNetV2 (Shuffle3x3 at scale 1.0 everywhere) in a shallower space
        if layers == S.NUM_LAYERS:
            default = S.DEFAULT_BLOCKS + S.DEFAULT_SCALES
        else:
            default = (0,) * layers + (S.DEFAULT_SCALE_INDEX,) * layers
        max_cost = space.cost(default)
    max_cost = float(max_cost)
    band = config.extra.get("band", BAND)
    low, high = float(band[0]) * max_cost, float(band[1]) * max_cost
    cheapest, dearest = space.cost_range()
    if max_cost < cheapest:
        raise InvalidInputError(
            f"--max-ops {max_cost:.4g} is below the cheapest {method} architecture at width "
            f"{width:g} and input {input_shape[:2]} ({cheapest:.4g}); its range is "
            f"{cheapest:.4g} .. {dearest:.4g}.")
    print(f"{method}: {space.metric} of the space {cheapest:.4g} .. {dearest:.4g}, limit "
          f"{max_cost:.4g}, supernet paths in [{low:.4g}, {high:.4g}]", file=sys.stderr)

    # data: the supernet trains on the first images of the training split, candidates are
    # scored on the last `val_images` (never trained on)
    n_train_split = zdata.num_examples(spec, "train")
    n_val = min(int(_setting(config, "val_images")), n_train_split // 5)
    n_fit = n_train_split - n_val
    if config.limit:
        n_fit = min(n_fit, int(config.limit))
    n_eval = min(n_val, int(config.eval_limit)) if config.eval_limit else n_val
    batch = int(config.batch_size)
    train_ds = _pipeline(spec, input_shape, 0, n_fit, batch, True, config.seed)
    recal_ds = _pipeline(spec, input_shape, 0, n_fit, batch, False)
    val_ds = _pipeline(spec, input_shape, n_train_split - n_val, n_eval, 250, False)
    steps_per_epoch = math.ceil(n_fit / batch)
    recal_batches = int(config.recalibration_batches or DEFAULTS["recalibration_batches"])
    recal_batches = min(recal_batches, steps_per_epoch)

    supernet = S.build_supernet(width=width, binary=binary, input_shape=input_shape,
                                num_classes=spec.num_classes, layers=layers)
    epochs = int(config.supernet_epochs if config.supernet_epochs is not None
                 else DEFAULTS["supernet_epochs"])
    weights_path, state_path = output / "supernet.h5", output / "supernet_log.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"history": []}
    if (state.get("epochs") not in (None, epochs) or state.get("width") not in (None, width)
            or (state["history"] and state.get("layers", S.NUM_LAYERS) != layers)):
        raise ZooError(f"{output} holds a supernet trained with other settings; use another "
                       f"--output.")
    done = len(state["history"])
    if done:
        supernet.load_weights(str(weights_path))
        print(f"Resuming: the supernet in {weights_path} has {done}/{epochs} epochs.",
              file=sys.stderr)
    optimizer = str(_setting(config, "optimizer"))
    lr = config.extra.get("lr", DEFAULTS["lr"] * batch / 1024 if optimizer == "sgd" else 2e-3)

    def save(epoch, record):
        supernet.save_weights(str(weights_path))
        state["history"].append(record)
        state.update(epochs=epochs, width=width, layers=layers)
        state_path.write_text(json.dumps(state, indent=1))

    started = time.time()
    if done < epochs:
        train_supernet(
            supernet, train_ds, epochs, make_path_sampler(space, low, high, config.seed),
            steps_per_epoch=steps_per_epoch, lr=float(lr), optimizer=optimizer,
            momentum=float(_setting(config, "momentum")),
            weight_decay=float(_setting(config, "weight_decay")),
            label_smoothing=float(_setting(config, "label_smoothing")), start_epoch=done,
            on_epoch=save, traced=bool(_setting(config, "traced")))
    if state["history"]:
        _plot_supernet(output / "supernet_curves.png", state["history"])
    supernet_seconds = time.time() - started

    def score(candidate) -> float:
        n = space.layers
        S.set_path(supernet, candidate[:n], candidate[n:])
        recalibrate_batchnorm(supernet, recal_ds, recal_batches)
        return top1_accuracy(supernet, val_ds)

    started = time.time()
    found = evolutionary_search(
        space, score, max_cost, population=config.population, generations=config.generations,
        top_k=config.top_k, mutations=config.mutations, crossovers=config.crossovers,
        mutation_prob=config.mutation_prob, seed=config.seed, output=output)
    search_seconds = time.time() - started
    cache = dict(found["evaluated"])
    baseline_path = output / "random_baseline.json"
    if baseline_path.exists() and json.loads(baseline_path.read_text()).get("n") == \
            config.random_baseline:
        baseline = json.loads(baseline_path.read_text())
    else:
        median, scores = median_random_score(space, score, max_cost, config.random_baseline,
                                             config.seed, cache=cache)
        baseline = {"n": config.random_baseline, "median": median, "scores": scores}
        baseline_path.write_text(json.dumps(baseline, indent=1))
    rng = np.random.default_rng([int(config.seed), 7919])
    random_points = []
    seen = set()
    for s in baseline["scores"]:  # same stream as median_random_score: the same candidates
        candidate = sample_within(space, max_cost, rng, 1000, exclude=seen)
        seen.add(candidate)
        random_points.append((s, space.cached_cost(candidate)))
    plot_search(output, found["history"], found["evaluated"], max_cost,
                random_scores=random_points, score_label="supernet top-1 (%), held-out",
                cost_label="OPs" if binary else "FLOPs (MACs)")
    result = SearchResult(
        method=method, arch=found["best_arch"], score=found["best_score"],
        cost=found["best_cost"], max_cost=max_cost, random_median_score=baseline["median"],
        random_scores=baseline["scores"], output=output,
        extra={"metric": space.metric, "model": space.model, "width": width, "layers": layers,
               "input_shape": list(input_shape), "supernet_epochs": epochs,
               "supernet_seconds": round(supernet_seconds, 1),
               "search_seconds": round(search_seconds, 1),
               "evaluated": len(found["evaluated"]), "train_images": n_fit,
               "score_images": n_eval, "recalibration_batches": recal_batches,
               "band": [low, high]})
    (output / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result


@register_search("spos", model="spos", supernet="spos_supernet",
                 paper="arXiv 1904.00420 (Single Path One-Shot NAS, ECCV 2020)",
                 description="SPOS: ShuffleNetV2 block + channel search under a FLOPs limit")
def search_spos(config: SearchConfig) -> SearchResult:
    """SPOS: ShuffleNetV2 block + channel search under a FLOPs limit."""
    return run_spos(config, binary=False)


@register_search("spos_binary", model="spos_binary", supernet="spos_binary_supernet",
                 paper="arXiv 1904.00420 (SPOS) with binary 1x1 convs",
                 description="SPOS with binary 1x1 convs (RSign / RPReLU) under an OPs limit")
def search_spos_binary(config: SearchConfig) -> SearchResult:
    """SPOS with binary 1x1 convs under an OPs limit."""
    return run_spos(config, binary=True)
