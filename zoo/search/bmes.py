"""Binary MobileNet group-conv search (CVPR 2020, arXiv 2005.06305): supernet + evolution.

Step 1 trains ``bmes_supernet`` with a new uniformly random group count for
every searched 3x3 conv at every step (the paper's "random group combinations
at each conv layer"); step 2 runs the shared evolutionary search
(:mod:`zoo.search.engine`) under an OPs limit, scoring each candidate with the
supernet's weights after BN recalibration; step 3, retraining the searched
network from scratch, is ``zoo train bmes --arch STRING``.

This module also holds the one-shot flow both of this package's weight-sharing
methods use (bmes and MetaPruning): held-out scoring data, supernet training
with a per-step random path, scoring, the random baseline, plots and result.

Settings (``zoo search bmes --set KEY=VALUE``): ``width`` (network width,
default 1.0 = ReActNet-A's), ``lr`` (Adam, default 1.25e-3, ReActNet's code
for its binary MobileNet; the paper's is not known), ``eval_batch_size``.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from zoo.errors import InvalidInputError, ZooError
from zoo.models import bmes as bm
from zoo.search import SearchConfig, SearchResult, register_search
from zoo.search.engine import (SearchSpace, evolutionary_search, median_random_score, plot_search,
                               recalibrate_batchnorm, top1_accuracy)

HOLDOUT = 10_000  # training images held out to score candidates (MetaPruning's "sub-val" idea)
EVAL_BATCH = 250


# ----------------------------------------------------------------------------- the space


class BmesSpace(SearchSpace):
    """One gene per block: the index of its 3x3 conv's group count in
    :func:`zoo.models.bmes.group_choices`. Cost: OPs (FLOPs + BOPs / 64) of the
    stand-alone ``bmes`` network at the search's input size.

    Every layer but the searched 3x3 convs is the same for all candidates, so
    the OPs are measured once with :func:`zoo.costs.model_costs` on the Keras
    graph of the all-depthwise network, and a candidate's OPs are that plus,
    per searched conv, ``(pixels * 9 * C * C / g - pixels * 9 * C) / 64``
    (``tests/test_bmes.py`` checks the sum against ``model_costs`` of the
    candidate's own graph)."""

    def __init__(self, width: float = 1.0, input_shape=(224, 224, 3), num_classes: int = 1000):
        from zoo.costs import model_costs

        self.width = float(width)
        self.channels = bm.layer_channels(width)
        self.options = [bm.group_choices(c) for c in self.channels]
        self.choices = tuple(len(o) for o in self.options)
        depthwise = tuple(len(o) - 1 for o in self.options)
        import tensorflow as tf

        model = bm.bmes(arch=self.encode(depthwise), width=width, input_shape=tuple(input_shape),
                        num_classes=num_classes)
        self.pixels = []
        for index in range(bm.NUM_BLOCKS):
            shape = model.get_layer(f"block{index + 1}_conv3x3").output_shape
            self.pixels.append(int(shape[1]) * int(shape[2]))
        self.base_ops = model_costs(model)["ops"] - sum(
            self.layer_bops(i, self.channels[i]) for i in range(bm.NUM_BLOCKS)) / 64.0
        del model
        tf.keras.backend.clear_session()

    def layer_bops(self, index: int, groups: int) -> int:
        c = self.channels[index]
        return self.pixels[index] * 9 * c * (c // groups)

    def groups(self, candidate) -> Tuple[int, ...]:
        return tuple(o[int(g)] for o, g in zip(self.options, candidate))

    def cost(self, candidate) -> float:
        groups = self.groups(candidate)
        return self.base_ops + sum(self.layer_bops(i, g) for i, g in enumerate(groups)) / 64.0

    def encode(self, candidate) -> str:
        return bm.encode_arch(self.groups(candidate), self.width)

    def decode(self, arch: str):
        body, _ = bm.split_width(arch, self.width)
        groups = bm.parse_arch(body, self.width)
        return tuple(o.index(g) for o, g in zip(self.options, groups))


# ----------------------------------------------------------------------------- shared flow


def setting(config: SearchConfig, key: str, default, kind=float):
    """A method setting from ``--set KEY=VALUE`` (``config.extra``), converted to ``kind``."""
    if key not in config.extra:
        return default
    value = config.extra[key]
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"--set {key}={value!r}: expected a {kind.__name__}.") from None


def check_settings(config: SearchConfig, known: Sequence[str]) -> None:
    unknown = sorted(set(config.extra) - set(known))
    if unknown:
        raise InvalidInputError(
            f"Unknown search setting(s) {', '.join(unknown)}; this method takes: {', '.join(known)}.")


def search_datasets(spec, input_shape, batch_size: int, limit: Optional[int],
                    eval_limit: Optional[int], recalibration_batches: int, seed: int):
    """(train, recalibration, score) pipelines from the training split only.

    The last ``eval_limit`` (default 10,000) training images are held out to score
    candidates; supernet training and BN recalibration use the first ``limit`` of
    the rest. Recalibration takes fixed, unaugmented batches so scores repeat."""
    import tensorflow as tf

    from zoo import data as zdata

    total = zdata.num_examples(spec, "train")
    holdout = int(eval_limit) if eval_limit else min(HOLDOUT, total // 6)
    if holdout < 1 or holdout >= total:
        raise InvalidInputError(f"--eval-limit must be in [1, {total - 1}], got {eval_limit}.")
    train_count = total - holdout if not limit else min(int(limit), total - holdout)
    raw = zdata.load_split(spec, "train")

    def prep(training):
        return lambda image, label: (zdata.preprocess(image, spec, input_shape, training), label)

    train_raw = raw.take(train_count).cache()
    train = (train_raw.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
             .map(prep(True), num_parallel_calls=tf.data.AUTOTUNE)
             .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    recal = (train_raw.take(recalibration_batches * batch_size)
             .map(prep(False), num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).cache())
    score = (raw.skip(total - holdout).take(holdout).cache()
             .map(prep(False), num_parallel_calls=tf.data.AUTOTUNE).batch(EVAL_BATCH).cache())
    return train, recal, score, train_count, holdout


def train_supernet(model, train_ds, epochs: int, steps_per_epoch: int, set_random_path: Callable,
                   optimizer, label_smoothing: float = 0.0, verbose: Optional[int] = None):
    """Keras fit where a callback draws a new random path before every training step."""
    import tensorflow as tf

    from zoo.training.loop import SparseCrossentropy, fit_verbosity, progress_callbacks

    class RandomPath(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            set_random_path()

    model.compile(optimizer=optimizer, loss=SparseCrossentropy(label_smoothing),
                  metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  steps_per_execution=1)
    verbose = fit_verbosity(verbose)
    with contextlib.redirect_stdout(sys.stderr):
        history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                            callbacks=[RandomPath(), tf.keras.callbacks.TerminateOnNaN(),
                                       *progress_callbacks("supernet", steps_per_epoch, verbose)],
                            verbose=verbose)
    losses = history.history.get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        raise ZooError("Supernet training diverged (loss is NaN/inf); lower the learning rate "
                       "with --set lr=...")
    return history.history


def run_one_shot(config: SearchConfig, *, method: str, model_entry: str, supernet, space: SearchSpace,
                 set_path: Callable[[Sequence[int]], None], random_path: Callable,
                 make_optimizer: Callable[[int], Any], default_epochs: int, max_cost: float,
                 default_recalibration: int, input_shape, spec, cost_name: str,
                 label_smoothing: float = 0.0, extra: Optional[Dict[str, Any]] = None) -> SearchResult:
    """Train ``supernet`` (or reload it from the run directory), search, score the
    random baseline, plot, and write ``result.json``."""
    import tensorflow as tf

    output = Path(config.output) if config.output else Path("runs") / (
        f"search-{method}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ZooError(f"Cannot create the output directory {output}: {error}. "
                       f"Choose another --output.") from error
    epochs = default_epochs if config.supernet_epochs is None else int(config.supernet_epochs)
    if epochs < 0:
        raise InvalidInputError(f"--supernet-epochs must be >= 0, got {epochs}.")
    recal_batches = (default_recalibration if config.recalibration_batches is None
                     else int(config.recalibration_batches))
    train_ds, recal_ds, score_ds, train_count, holdout = search_datasets(
        spec, input_shape, config.batch_size, config.limit, config.eval_limit, recal_batches,
        config.seed)
    tf.keras.utils.set_random_seed(config.seed)
    started = time.time()

    weights_path = output / "supernet.h5"
    if weights_path.exists():
        print(f"[{method}] reusing the trained supernet {weights_path}", file=sys.stderr)
        supernet.load_weights(str(weights_path))
    elif epochs > 0:
        steps = math.ceil(train_count / config.batch_size)
        print(f"[{method}] step 1: supernet training, {epochs} epochs x {steps} steps on "
              f"{train_count} images {tuple(input_shape)}, a random path per step", file=sys.stderr)
        path_rng = np.random.default_rng([config.seed, 17])
        train_supernet(supernet, train_ds, epochs, steps, lambda: set_path(random_path(path_rng)),
                       make_optimizer(epochs * steps), label_smoothing)
        supernet.save_weights(str(weights_path))
    supernet_seconds = time.time() - started

    memo: Dict[Tuple[int, ...], float] = {}

    def score(candidate) -> float:
        key = tuple(int(g) for g in candidate)
        if key not in memo:
            set_path(key)
            recalibrate_batchnorm(supernet, recal_ds, recal_batches)
            memo[key] = top1_accuracy(supernet, score_ds)
        return memo[key]

    print(f"[{method}] step 2: evolutionary search under {cost_name} <= {max_cost:.4g}, scored on "
          f"{holdout} held-out training images after BN recalibration on {recal_batches} batches",
          file=sys.stderr)
    search_start = time.time()
    found = evolutionary_search(
        space, score, max_cost, population=config.population, generations=config.generations,
        top_k=config.top_k, mutations=config.mutations, crossovers=config.crossovers,
        mutation_prob=config.mutation_prob, seed=config.seed, output=output)
    random_pairs = []

    def recorded(candidate):
        value = score(candidate)
        random_pairs.append((value, space.cached_cost(candidate)))
        return value

    median, random_scores = median_random_score(space, recorded, max_cost, config.random_baseline,
                                                config.seed)
    search_seconds = time.time() - search_start
    plots = plot_search(output, found["history"], found["evaluated"], max_cost,
                        random_scores=random_pairs, cost_label=cost_name)
    result = SearchResult(
        method=method, arch=found["best_arch"], score=float(found["best_score"]),
        cost=float(found["best_cost"]), max_cost=float(max_cost), random_median_score=median,
        random_scores=[float(s) for s in random_scores], output=output,
        extra={"model": model_entry, "cost_metric": cost_name, "input_shape": list(input_shape),
               "supernet_epochs": epochs, "supernet_seconds": round(supernet_seconds, 1),
               "search_seconds": round(search_seconds, 1), "scored_candidates": len(memo),
               "score": f"top-1 % on {holdout} held-out training images (supernet weights, "
                        f"BN recalibrated)",
               "plots": [str(p) for p in plots], **(extra or {})})
    (output / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    print(f"[{method}] best {result.arch}: {result.score:.2f}% at {cost_name} {result.cost:.4g} "
          f"(limit {max_cost:.4g}); median of {len(random_scores)} random architectures under the "
          f"limit: {median:.2f}%", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------- the method

BMES_SETTINGS = ("width", "lr")
DEFAULT_SUPERNET_EPOCHS = 10  # the paper's supernet schedule is not known; a short default
DEFAULT_RECALIBRATION = 20  # batches (SPOS's code recalibrates on 20k images; 20 x 128 here)


def default_max_ops(space: BmesSpace) -> float:
    """Halfway between the cheapest (all depthwise) and dearest (all full) candidate."""
    cheapest = space.cost(tuple(n - 1 for n in space.choices))
    dearest = space.cost((0,) * len(space.choices))
    return cheapest + 0.5 * (dearest - cheapest)


@register_search("bmes", model="bmes", supernet="bmes_supernet", paper="arXiv 2005.06305",
                 description="Binary MobileNet: evolutionary search of the group count of each "
                             "binary 3x3 conv under an OPs limit (one-shot supernet).")
def run(config: SearchConfig) -> SearchResult:
    """Binary MobileNet group-conv search: supernet training + evolution under an OPs limit."""
    import tensorflow as tf

    from zoo import data as zdata
    from zoo.api import get_entry, load
    from zoo.training.optimizers import StageSchedule, get_optimizer

    check_settings(config, BMES_SETTINGS)
    width = setting(config, "width", 1.0)
    lr = setting(config, "lr", 1.25e-3)  # ReActNet's official MobileNet run.sh (Adam)
    spec = zdata.get_dataset(config.dataset)
    input_shape = zdata.input_shape_for(spec, get_entry("bmes_supernet"), config.image_size)
    space = BmesSpace(width, input_shape, spec.num_classes)
    max_cost = float(config.max_ops) if config.max_ops is not None else default_max_ops(space)
    lowest = space.cost(tuple(n - 1 for n in space.choices))
    if max_cost < lowest:
        raise InvalidInputError(
            f"--max-ops {max_cost:.4g} is below the cheapest bmes network at width {width} and "
            f"input {tuple(input_shape)} ({lowest:.4g} OPs, all depthwise); raise it.")
    supernet = load("bmes_supernet", width=width, input_shape=input_shape,
                    num_classes=spec.num_classes)
    layers = bm.choice_layers(supernet)

    def set_path(candidate):
        for layer, gene in zip(layers, candidate):
            layer.choice.assign(int(gene))

    def make_optimizer(total_steps):
        return get_optimizer("adam", StageSchedule(lr, total_steps, "linear"))

    return run_one_shot(
        config, method="bmes", model_entry="bmes", supernet=supernet, space=space,
        set_path=set_path, random_path=space.random, make_optimizer=make_optimizer,
        default_epochs=DEFAULT_SUPERNET_EPOCHS, max_cost=max_cost,
        default_recalibration=DEFAULT_RECALIBRATION, input_shape=input_shape, spec=spec,
        cost_name="OPs", extra={"width": width})
