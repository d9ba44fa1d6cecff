"""The one-shot flow of every weight-sharing search (SPOS, bmes, MetaPruning).

:func:`run_one_shot` takes a method's :class:`OneShot` (its space, supernet, how
a path is selected, its optimizer and limit) and runs the steps they share:

1. held-out scoring data from the training split (:func:`search_datasets`);
2. supernet training with a new random path every step (:func:`train_supernet`),
   or the trained supernet of the run directory reused;
3. the shared evolutionary search (:func:`zoo.search.engine.evolutionary_search`)
   under the cost limit, each candidate scored with the supernet's weights after
   BN recalibration;
4. the random baseline (median score of random architectures under the limit),
   the plots and ``result.json``.

Where the methods differ the :class:`OneShot` fields say how; their defaults are
bmes' and MetaPruning's, SPOS sets the rest (a path optimizer that moves only the
weights on the path, per-epoch resumable supernet training, its own result keys).
Also here: the helpers every method reads its settings with (:func:`setting`,
:func:`check_settings`, :func:`supernet_epochs`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from zoo.errors import InvalidInputError, ZooError
from zoo.search import SearchConfig, SearchResult
from zoo.search.engine import (Candidate, SearchSpace, evolutionary_search, median_random_score,
                               plot_search, random_candidates, recalibrate_batchnorm,
                               top1_accuracy)
from zoo.settings import EVAL_BATCH_SIZE

HOLDOUT = 10_000  # training images held out to score candidates (MetaPruning's "sub-val" idea)
SHUFFLE_BUFFER = 10_000
PATH_SEED = 17  # the training paths' random stream: np.random.default_rng([seed, PATH_SEED])


# ----------------------------------------------------------------------------- settings


def setting(config: SearchConfig, key: str, default, kind=float):
    """A method setting from ``--set KEY=VALUE`` (``config.extra``), converted to ``kind``."""
    if key not in config.extra:
        return default
    value = config.extra[key]
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"--set {key}={value!r}: expected a {kind.__name__}.") from None


def check_settings(config: SearchConfig, known: Sequence[str], label: str = "search") -> None:
    """InvalidInputError naming the ``--set`` keys that are not in ``known``."""
    unknown = sorted(set(config.extra) - set(known))
    if unknown:
        raise InvalidInputError(
            f"Unknown {label} setting(s) {', '.join(unknown)}; this method takes: "
            f"{', '.join(known)}.")


def supernet_epochs(config: SearchConfig, default: int) -> int:
    """``--supernet-epochs`` (the method's ``default`` when not given), at least 0."""
    epochs = default if config.supernet_epochs is None else int(config.supernet_epochs)
    if epochs < 0:
        raise InvalidInputError(f"--supernet-epochs must be >= 0, got {epochs}.")
    return epochs


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class SearchData:
    """The pipelines of a search, all from the training split."""

    train: Any  # shuffled, augmented batches of the first `train_count` images
    recalibration: Any  # the first `recalibration_batches` of them, fixed and unaugmented
    score: Any  # held-out images that score a candidate
    train_count: int
    score_count: int
    recalibration_batches: int
    steps_per_epoch: int


def _holdout(total: int, eval_limit: Optional[int], val_images: Optional[int]) -> Tuple[int, int]:
    """(training images held out at the end of the split, how many of them score)."""
    if val_images is None:  # --eval-limit images held out (default 10,000 or a sixth), all scored
        held = int(eval_limit) if eval_limit else min(HOLDOUT, total // 6)
        if held < 1 or held >= total:
            raise InvalidInputError(f"--eval-limit must be in [1, {total - 1}], got {eval_limit}.")
        return held, held
    # SPOS: `val_images` held out (at most a fifth), the first --eval-limit of them scored
    held = min(int(val_images), total // 5)
    return held, min(held, int(eval_limit)) if eval_limit else held


def search_datasets(spec, input_shape, config: SearchConfig, default_recalibration: int,
                    val_images: Optional[int] = None) -> SearchData:
    """Training, recalibration and scoring pipelines from the training split only.

    The last images of the split are held out to score candidates: ``--eval-limit``
    of them (default ``min(10,000, a sixth)``), or with ``val_images`` that many (at
    most a fifth) of which the first ``--eval-limit`` score. Supernet training uses
    the first ``--limit`` of the rest; BN recalibration takes fixed, unaugmented
    batches of the same images (``--recalibration-batches``, at most one epoch's)
    so that scores repeat."""
    from zoo import data as zdata

    total = zdata.num_examples(spec, "train")
    held, scored = _holdout(total, config.eval_limit, val_images)
    train_count = total - held if not config.limit else min(int(config.limit), total - held)
    batch = int(config.batch_size)
    steps = math.ceil(train_count / batch)
    recal = (default_recalibration if config.recalibration_batches is None
             else int(config.recalibration_batches))
    if recal < 1:
        raise InvalidInputError(f"--recalibration-batches must be >= 1, got {recal}.")
    recal = min(recal, steps)
    raw = zdata.load_split(spec, "train")

    def prep(training):
        return lambda image, label: (zdata.preprocess(image, spec, input_shape, training), label)

    train_raw = raw.take(train_count).cache()
    train = (train_raw.shuffle(min(train_count, SHUFFLE_BUFFER), seed=config.seed,
                               reshuffle_each_iteration=True)
             .map(prep(True), num_parallel_calls=tf.data.AUTOTUNE)
             .batch(batch).prefetch(tf.data.AUTOTUNE))
    recalibration = (train_raw.take(recal * batch)
                     .map(prep(False), num_parallel_calls=tf.data.AUTOTUNE).batch(batch).cache())
    score = (raw.skip(total - held).take(scored).cache()
             .map(prep(False), num_parallel_calls=tf.data.AUTOTUNE).batch(EVAL_BATCH_SIZE).cache())
    return SearchData(train, recalibration, score, train_count, scored, recal, steps)


# ----------------------------------------------------------------------------- supernet training


class PathOptimizer:
    """SGD with momentum (PyTorch form) or Adam that updates only the weights on the path
    (SPOS), its learning rate ``lr`` decayed linearly to 0 over ``total_steps``.

    A weight whose gradient is exactly zero this step (a block not on the sampled
    path) keeps its value and its optimizer slots. Weight decay (coupled, ``wd * w``
    added to the gradient) applies to kernels (>= 2-D) only.
    """

    def __init__(self, variables, kind: str, lr: float, total_steps: int, momentum: float = 0.9,
                 weight_decay: float = 0.0):
        if kind not in ("sgd", "adam"):
            raise InvalidInputError(f"optimizer must be 'sgd' or 'adam', got {kind!r}.")
        self.kind, self.momentum, self.weight_decay = kind, float(momentum), float(weight_decay)
        self.lr, self.total_steps = float(lr), max(1, int(total_steps))
        self.variables = variables
        self.slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.slots2 = ([tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
                       if kind == "adam" else [])
        self.steps = tf.Variable(0.0, trainable=False)

    def rate(self, step: int) -> float:
        """The learning rate of global step ``step``."""
        return self.lr * max(0.0, 1.0 - step / self.total_steps)

    def apply(self, grads, rate):
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
                update = rate * buf
            else:
                b1, b2, eps = 0.9, 0.999, 1e-7
                m = b1 * self.slots[i] + (1 - b1) * grad
                v = b2 * self.slots2[i] + (1 - b2) * tf.square(grad)
                self.slots[i].assign(used * m + (1.0 - used) * self.slots[i])
                self.slots2[i].assign(used * v + (1.0 - used) * self.slots2[i])
                t = self.steps
                update = rate * (m / (1 - b1 ** t)) / (tf.sqrt(v / (1 - b2 ** t)) + eps)
            var.assign_sub(used * update)
            if getattr(var, "constraint", None) is not None:
                var.assign(var.constraint(var))


class _KerasUpdate:
    """A Keras optimizer behind :class:`PathOptimizer`'s interface: every weight with a
    gradient moves, the optimizer's own schedule sets the learning rate."""

    def __init__(self, optimizer, variables):
        self.optimizer, self.variables = optimizer, variables

    def rate(self, step: int) -> float:
        return 0.0  # unused

    def apply(self, grads, rate):
        self.optimizer.apply_gradients(zip(grads, self.variables))


class EpochLines(tf.keras.callbacks.Callback):
    """SPOS's progress on stderr: on a terminal a step line redrawn in place, then one line
    per epoch (loss and train accuracy of the sampled paths, seconds)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch, time.time()

    def on_train_batch_end(self, batch, logs=None):
        if sys.stderr.isatty():
            sys.stderr.write(f"\rsupernet epoch {self.epoch + 1}/{self.params['epochs']} step "
                             f"{batch + 1}/{self.params['steps']} loss {logs['loss']:.4f}   ")

    def on_epoch_end(self, epoch, logs=None):
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        print(f"supernet epoch {epoch + 1}/{self.params['epochs']}: loss {logs['loss']:.4f}, "
              f"train accuracy of the sampled paths {100.0 * logs['accuracy']:.2f}%, "
              f"{time.time() - self.start:.0f}s", file=sys.stderr)


def train_supernet(supernet, dataset, epochs: int, next_path: Callable[[], None], *,
                   steps_per_epoch: int, optimizer, label_smoothing: float = 0.0,
                   start_epoch: int = 0, on_epoch: Optional[Callable] = None,
                   callbacks: Sequence = (), verbose: int = 0, traced: bool = True
                   ) -> List[Dict[str, float]]:
    """Train ``supernet`` on ``dataset`` with a new random path every step.

    ``next_path()`` draws and selects the path before each step. ``optimizer``: a
    :class:`PathOptimizer` (only the weights on the path move) or a Keras optimizer.
    The loss is cross-entropy with ``label_smoothing``. ``callbacks`` are Keras
    callbacks driven as ``fit`` drives them (``verbose``: Keras' progress bar, 0 none,
    1 bar, 2 a line per epoch); a NaN/inf loss stops training and raises ZooError.
    ``traced``: one ``tf.function`` step serves every path (the path lives in the
    supernet's variables); ``False`` runs the steps eagerly (no trace of every block,
    faster for short CPU runs). ``on_epoch(epoch, record)`` runs after each epoch
    (e.g. to save the weights and resume later from ``start_epoch``). Returns one
    record per epoch: loss and accuracy (%) averaged over its steps, seconds.
    """
    from zoo.training.losses import SparseCrossentropy

    variables = supernet.trainable_variables
    update = optimizer if isinstance(optimizer, PathOptimizer) else _KerasUpdate(optimizer,
                                                                                 variables)
    loss_fn = SparseCrossentropy(label_smoothing)

    def step(x, y, rate):
        with tf.GradientTape() as tape:
            probs = supernet(x, training=True)
            loss = loss_fn(y, probs)
        update.apply(tape.gradient(loss, variables), rate)
        hits = tf.equal(tf.argmax(probs, -1), tf.cast(tf.reshape(y, [-1]), tf.int64))
        return loss, tf.reduce_mean(tf.cast(hits, tf.float32))

    if traced:
        step = tf.function(step, reduce_retracing=True)
    progress = tf.keras.callbacks.CallbackList(
        [tf.keras.callbacks.TerminateOnNaN(), *callbacks], add_progbar=verbose != 0,
        model=supernet, verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    supernet.stop_training = False
    history: List[Dict[str, float]] = []
    global_step = start_epoch * steps_per_epoch
    with contextlib.redirect_stdout(sys.stderr):  # Keras' progress bar prints to stdout
        progress.on_train_begin()
        for epoch in range(start_epoch, epochs):
            progress.on_epoch_begin(epoch)
            start, losses, accs = time.time(), [], []
            for x, y in dataset:
                progress.on_train_batch_begin(len(losses))
                next_path()
                loss, acc = step(x, y, tf.constant(update.rate(global_step), tf.float32))
                losses.append(float(loss))
                accs.append(float(acc))
                global_step += 1
                logs = {"loss": sum(losses) / len(losses), "accuracy": sum(accs) / len(accs)}
                progress.on_train_batch_end(len(losses) - 1, logs)
                if supernet.stop_training:
                    break
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                      "accuracy": 100.0 * float(np.mean(accs)),
                      "seconds": round(time.time() - start, 1)}
            if not math.isfinite(record["loss"]):
                raise ZooError("Supernet training diverged (loss is NaN/inf); lower the learning "
                               "rate with --set lr=...")
            history.append(record)
            progress.on_epoch_end(epoch, {"loss": record["loss"],
                                          "accuracy": record["accuracy"] / 100.0})
            if on_epoch is not None:
                on_epoch(epoch, record)
        progress.on_train_end()
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


# ----------------------------------------------------------------------------- the flow


@dataclasses.dataclass
class OneShot:
    """A one-shot search as :func:`run_one_shot` runs it.

    The fields after ``extra`` are where the methods differ; their defaults are bmes'
    and MetaPruning's."""

    method: str  # the registered search (log prefix, result.method)
    model: str  # the entry that builds a searched architecture
    space: SearchSpace
    supernet: Any  # the Keras supernet
    set_path: Callable[[Candidate], None]  # select a candidate's path in the supernet
    make_optimizer: Callable[[int], Any]  # total steps -> PathOptimizer or Keras optimizer
    spec: Any  # the dataset (zoo.data.DatasetSpec)
    input_shape: Tuple[int, ...]
    max_cost: float
    cost_label: str  # the constraint metric in messages, plots and result ("OPs", "FLOPs")
    default_epochs: int  # supernet epochs without --supernet-epochs
    default_recalibration: int  # BN recalibration batches without --recalibration-batches
    label_smoothing: float = 0.0
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)  # added to result.extra
    # training paths: a candidate per step; None: uniform over the space, np.random
    # .default_rng([seed, PATH_SEED])
    sample_path: Optional[Callable[[], Candidate]] = None
    run_name: Optional[str] = None  # run directory runs/<run_name>-<time>; None: search-<method>
    val_images: Optional[int] = None  # held-out images (see search_datasets); None: --eval-limit
    # settings a resumed run must share: supernet_log.json keeps the trained epochs (the
    # weights saved after each) and random_baseline.json the baseline, so a killed search
    # resumes; None: only the finished supernet's weights are kept (and reused)
    resumable: Optional[Dict[str, Any]] = None
    progress: str = "keras"  # "keras": fit's progress bar / lines; "epochs": EpochLines
    traced: bool = True  # see train_supernet
    score_label: str = "top-1 (%)"
    # the run's facts -> result.extra; None: standard_extra
    result_extra: Optional[Callable[["OneShot", Dict[str, Any]], Dict[str, Any]]] = None
    result_indent: int = 2  # of result.json


def standard_extra(plan: OneShot, facts: Dict[str, Any]) -> Dict[str, Any]:
    """bmes' and MetaPruning's result.extra: the entry, the cost metric, the timings, how
    many candidates were scored and on what, the plots, then ``plan.extra``."""
    return {"model": plan.model, "cost_metric": plan.cost_label,
            "input_shape": facts["input_shape"], "supernet_epochs": facts["supernet_epochs"],
            "supernet_seconds": round(facts["supernet_seconds"], 1),
            "search_seconds": round(facts["search_seconds"] + facts["baseline_seconds"], 1),
            "scored_candidates": facts["scored_candidates"],
            "score": f"top-1 % on {facts['score_images']} held-out training images (supernet "
                     f"weights, BN recalibrated)",
            "plots": facts["plots"], **plan.extra}


def _output_dir(config: SearchConfig, plan: OneShot) -> Path:
    name = plan.run_name or f"search-{plan.method}"
    output = Path(config.output) if config.output else Path("runs") / (
        f"{name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ZooError(f"Cannot create the output directory {output}: {error}. "
                       f"Choose another --output.") from error
    return output


def _progress_callbacks(plan: OneShot, steps: int) -> Tuple[List[Any], int]:
    """(Keras callbacks, Keras verbosity) of the supernet training's progress."""
    if plan.progress == "epochs":
        return [EpochLines()], 0
    from zoo.training.callbacks import fit_verbosity, progress_callbacks

    verbose = fit_verbosity(None)
    return progress_callbacks("supernet", steps, verbose), verbose


def _supernet(config: SearchConfig, plan: OneShot, output: Path, data: SearchData,
              epochs: int) -> None:
    """Train the supernet, or resume / reuse the one in ``output``."""
    weights_path, state_path = output / "supernet.h5", output / "supernet_log.json"
    state: Dict[str, Any] = {"history": []}
    done = 0
    if plan.resumable is not None:
        if state_path.exists():
            state = json.loads(state_path.read_text())
        wanted = {"epochs": epochs, **plan.resumable}
        if any(state.get(key) not in (None, value) for key, value in wanted.items()):
            raise ZooError(f"{output} holds a supernet trained with other settings; use another "
                           f"--output.")
        done = len(state["history"])
        if done:
            plan.supernet.load_weights(str(weights_path))
            print(f"Resuming: the supernet in {weights_path} has {done}/{epochs} epochs.",
                  file=sys.stderr)
    elif weights_path.exists():
        print(f"[{plan.method}] reusing the trained supernet {weights_path}", file=sys.stderr)
        plan.supernet.load_weights(str(weights_path))
        done = epochs

    def save(epoch, record):
        plan.supernet.save_weights(str(weights_path))
        state["history"].append(record)
        state.update(epochs=epochs, **plan.resumable)
        state_path.write_text(json.dumps(state, indent=1))

    if done < epochs:
        steps = data.steps_per_epoch
        print(f"[{plan.method}] step 1: supernet training, {epochs} epochs x {steps} steps on "
              f"{data.train_count} images {tuple(plan.input_shape)}, a random path per step",
              file=sys.stderr)
        sample = plan.sample_path
        if sample is None:
            rng = np.random.default_rng([config.seed, PATH_SEED])
            sample = lambda: plan.space.random(rng)  # noqa: E731
        callbacks, verbose = _progress_callbacks(plan, steps)
        train_supernet(plan.supernet, data.train, epochs, lambda: plan.set_path(sample()),
                       steps_per_epoch=steps, optimizer=plan.make_optimizer(epochs * steps),
                       label_smoothing=plan.label_smoothing, start_epoch=done,
                       on_epoch=save if plan.resumable is not None else None,
                       callbacks=callbacks, verbose=verbose, traced=plan.traced)
        if plan.resumable is None:
            plan.supernet.save_weights(str(weights_path))
    if state["history"]:
        _plot_supernet(output / "supernet_curves.png", state["history"])


def _random_baseline(config: SearchConfig, plan: OneShot, output: Path, score) -> Dict[str, Any]:
    """``{"n", "median", "scores"}`` of ``config.random_baseline`` random architectures
    under the limit (kept in random_baseline.json when the plan is resumable)."""
    path = output / "random_baseline.json"
    if plan.resumable is not None and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("n") == config.random_baseline:
            return saved
    median, scores = median_random_score(plan.space, score, plan.max_cost,
                                         config.random_baseline, config.seed)
    baseline = {"n": config.random_baseline, "median": median, "scores": scores}
    if plan.resumable is not None:
        path.write_text(json.dumps(baseline, indent=1))
    return baseline


def run_one_shot(config: SearchConfig, plan: OneShot) -> SearchResult:
    """Train ``plan.supernet`` (or resume / reuse it from the run directory), search under
    ``plan.max_cost``, score the random baseline, plot, and write ``result.json``."""
    output = _output_dir(config, plan)
    epochs = supernet_epochs(config, plan.default_epochs)
    data = search_datasets(plan.spec, plan.input_shape, config, plan.default_recalibration,
                           plan.val_images)
    tf.keras.utils.set_random_seed(config.seed)
    started = time.time()
    _supernet(config, plan, output, data, epochs)
    supernet_seconds = time.time() - started

    space, max_cost, method = plan.space, plan.max_cost, plan.method
    memo: Dict[Tuple[int, ...], float] = {}

    def score(candidate) -> float:
        key = tuple(int(g) for g in candidate)
        if key not in memo:
            plan.set_path(key)
            recalibrate_batchnorm(plan.supernet, data.recalibration, data.recalibration_batches)
            memo[key] = top1_accuracy(plan.supernet, data.score)
        return memo[key]

    print(f"[{method}] step 2: evolutionary search under {plan.cost_label} <= {max_cost:.4g}, "
          f"scored on {data.score_count} held-out training images after BN recalibration on "
          f"{data.recalibration_batches} batches", file=sys.stderr)
    search_start = time.time()
    found = evolutionary_search(
        space, score, max_cost, population=config.population, generations=config.generations,
        top_k=config.top_k, mutations=config.mutations, crossovers=config.crossovers,
        mutation_prob=config.mutation_prob, seed=config.seed, output=output)
    search_seconds = time.time() - search_start
    for arch, (value, _) in found["evaluated"].items():  # scored before a resume: not again
        memo.setdefault(space.decode(arch), value)
    baseline = _random_baseline(config, plan, output, score)
    # the baseline's candidates, drawn again from its random stream, for the plot
    sampled = random_candidates(space, max_cost, len(baseline["scores"]), config.seed)
    random_points = [(s, space.cached_cost(c)) for s, c in zip(baseline["scores"], sampled)]
    baseline_seconds = time.time() - search_start - search_seconds
    plots = plot_search(output, found["history"], found["evaluated"], max_cost,
                        random_scores=random_points, score_label=plan.score_label,
                        cost_label=plan.cost_label)
    facts = {"input_shape": list(plan.input_shape), "supernet_epochs": epochs,
             "supernet_seconds": supernet_seconds, "search_seconds": search_seconds,
             "baseline_seconds": baseline_seconds, "scored_candidates": len(memo),
             "evaluated": len(found["evaluated"]), "train_images": data.train_count,
             "score_images": data.score_count,
             "recalibration_batches": data.recalibration_batches,
             "plots": [str(p) for p in plots]}
    result = SearchResult(
        method=method, arch=found["best_arch"], score=float(found["best_score"]),
        cost=float(found["best_cost"]), max_cost=float(max_cost),
        random_median_score=float(baseline["median"]),
        random_scores=[float(s) for s in baseline["scores"]], output=output,
        extra=(plan.result_extra or standard_extra)(plan, facts))
    (output / "result.json").write_text(json.dumps(result.to_dict(), indent=plan.result_indent))
    print(f"[{method}] best {result.arch}: {result.score:.2f}% at {plan.cost_label} "
          f"{result.cost:.4g} (limit {max_cost:.4g}); median of {len(result.random_scores)} "
          f"random architectures under the limit: {result.random_median_score:.2f}%",
          file=sys.stderr)
    return result


__all__ = [
    "HOLDOUT", "SHUFFLE_BUFFER", "PATH_SEED", "setting", "check_settings",
    "supernet_epochs", "SearchData", "search_datasets", "PathOptimizer", "EpochLines",
    "train_supernet", "OneShot", "standard_extra", "run_one_shot",
]
