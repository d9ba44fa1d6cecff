"""The evolutionary architecture search shared by every search method.

A method describes its space with a :class:`SearchSpace` (one integer gene per
decision, a cost per candidate computed from the candidate's Keras graph, an
architecture string per candidate) and a score function (higher is better,
e.g. top-1 % of the supernet path after BN recalibration). The engine follows
SPOS (arXiv 1904.00420, §3.4 and its search code) and MetaPruning (arXiv
1903.10258, §3.3):

* generation 0: ``population`` random candidates within the cost limit
  (rejection sampling; candidates over the limit or already seen are rejected);
* every generation: score the new candidates, keep the ``top_k`` best of all
  scored so far, then breed the next population: ``mutations`` children of a
  random top-k parent with each gene resampled with probability
  ``mutation_prob``, ``crossovers`` children taking each gene from one of two
  random top-k parents, and random candidates for whatever is still missing.

Scores and costs are cached per candidate. ``output/search_log.json`` holds every
generation (population with arch, score, cost; best so far), every scored
candidate and the random generator's state; it is rewritten after each
generation, so a killed search started again with the same settings resumes
after the last finished generation and ends with the same result.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from zoo.errors import InvalidInputError, ZooError
from zoo.layers import batchnorm_layers, recalibrate_batchnorm  # noqa: F401  (re-exported)
from zoo.models import _arch
from zoo.runs import write_json_atomically

Candidate = Tuple[int, ...]
LOG_NAME = "search_log.json"
LOG_VERSION = 1


class SearchSpace:
    """Base class of a search space; a candidate is a tuple of ints, one per gene.

    Subclasses set ``choices`` (how many options each gene has) and implement
    :meth:`cost`; :meth:`encode` / :meth:`decode` default to the genes joined by
    ``-`` (``"0-3-1"``), override them for a friendlier architecture string.
    """

    choices: Sequence[int] = ()

    def random(self, rng: np.random.Generator) -> Candidate:
        """A uniformly random candidate (each gene uniform over its options)."""
        return tuple(int(rng.integers(n)) for n in self.choices)

    def cost(self, candidate: Candidate) -> float:
        """The constraint metric (FLOPs, OPs, params) of the candidate's Keras graph."""
        raise NotImplementedError

    def encode(self, candidate: Candidate) -> str:
        """The architecture string that ``zoo.api.load(model, arch=...)`` accepts."""
        return _arch.format_arch([candidate])

    def decode(self, arch: str) -> Candidate:
        """The candidate of an architecture string; InvalidInputError on a bad one."""
        (candidate,), _ = _arch.parse_arch(arch, what="architecture string",
                                           expected=f"{len(self.choices)} integers joined by '-'")
        if not self.is_valid(candidate):
            raise InvalidInputError(
                f"Bad architecture string {arch!r}: expected {len(self.choices)} genes with "
                f"gene i in [0, choices[i]) for choices {list(self.choices)}.")
        return candidate

    def is_valid(self, candidate) -> bool:
        """Every gene an int in range, and the right number of genes."""
        try:
            genes = tuple(candidate)
        except TypeError:
            return False
        return len(genes) == len(self.choices) and all(
            isinstance(g, (int, np.integer)) and 0 <= int(g) < int(n)
            for g, n in zip(genes, self.choices))

    # -- cached cost (the engine always goes through this) --------------------------------
    def cached_cost(self, candidate: Candidate) -> float:
        cache = self.__dict__.setdefault("_cost_cache", {})
        key = tuple(int(g) for g in candidate)
        if key not in cache:
            cache[key] = float(self.cost(key))
        return cache[key]


def _within(cost: float, max_cost: Optional[float], min_cost: Optional[float]) -> bool:
    return (max_cost is None or cost <= max_cost) and (min_cost is None or cost >= min_cost)


def sample_within(space: SearchSpace, max_cost: Optional[float], rng: np.random.Generator,
                  max_tries: int = 1000, *, min_cost: Optional[float] = None,
                  exclude=()) -> Candidate:
    """A random candidate with ``min_cost <= cost <= max_cost`` (rejection sampling).

    ``exclude``: candidates not to return (already seen). Raises ZooError when
    ``max_tries`` random candidates all fail.
    """
    lowest = math.inf
    for _ in range(max(1, int(max_tries))):
        candidate = space.random(rng)
        if candidate in exclude:
            continue
        cost = space.cached_cost(candidate)
        lowest = min(lowest, cost)
        if _within(cost, max_cost, min_cost):
            return candidate
    band = f"<= {max_cost:.4g}" if min_cost is None else f"in [{min_cost:.4g}, {max_cost:.4g}]"
    raise ZooError(
        f"No new architecture with cost {band} in {max_tries} random tries (lowest cost seen: "
        f"{lowest:.4g}). Raise the limit (--max-ops) or lower the population.")


def _mutate(space, parent, prob, rng) -> Candidate:
    child = list(parent)
    for i, n in enumerate(space.choices):
        if rng.random() < prob:
            child[i] = int(rng.integers(n))
    return tuple(child)


def _crossover(parent_a, parent_b, rng) -> Candidate:
    return tuple(int(a if rng.random() < 0.5 else b) for a, b in zip(parent_a, parent_b))


def _breed(space, top, count, make_child, max_cost, min_cost, seen, max_tries, rng):
    children = []
    if not top:
        return children
    for _ in range(max_tries):
        if len(children) >= count:
            break
        child = make_child(top, rng)
        if child in seen or not space.is_valid(child):
            continue
        if not _within(space.cached_cost(child), max_cost, min_cost):
            continue
        seen.add(child)
        children.append(child)
    return children


class _Progress:
    """One line on stderr, redrawn on a terminal, one line per generation otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.start = time.time()

    def update(self, generation, generations, done, total, best):
        if not self.tty:
            return
        width = 20
        filled = int(width * done / max(1, total))
        best_text = "-" if best is None else f"{best:.2f}"
        sys.stderr.write(f"\rgeneration {generation + 1}/{generations} [{'#' * filled}"
                         f"{'.' * (width - filled)}] {done}/{total} best {best_text}   ")
        sys.stderr.flush()

    def generation_done(self, generation, generations, best, mean, cost):
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\n")
        print(f"generation {generation + 1}/{generations}: best {best:.2f} (cost {cost:.4g}), "
              f"population mean {mean:.2f}, {time.time() - self.start:.0f}s", file=sys.stderr)


def _settings(space, max_cost, min_cost, population, generations, top_k, mutations, crossovers,
              mutation_prob, seed):
    return {"choices": [int(n) for n in space.choices], "max_cost": max_cost, "min_cost": min_cost,
            "population": population, "generations": generations, "top_k": top_k,
            "mutations": mutations, "crossovers": crossovers, "mutation_prob": mutation_prob,
            "seed": seed}


def _record(space, candidate, evaluated):
    arch = space.encode(candidate)
    score, cost = evaluated[arch]
    return {"arch": arch, "genes": list(candidate), "score": score, "cost": cost}


def evolutionary_search(
    space: SearchSpace,
    score_fn: Callable[[Candidate], float],
    max_cost: Optional[float],
    *,
    population: int = 50,
    generations: int = 20,
    top_k: int = 10,
    mutations: int = 25,
    crossovers: int = 25,
    mutation_prob: float = 0.1,
    seed: int = 0,
    output=None,
    max_tries: Optional[int] = None,
    progress: bool = True,
    min_cost: Optional[float] = None,
    on_generation: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Evolutionary search for the candidate with the highest ``score_fn`` under the limit.

    Defaults are SPOS's (arXiv 1904.00420, §3.4): population 50, 20 generations,
    top-10 parents, 25 mutations (each gene resampled with probability 0.1) and 25
    crossovers per generation. ``max_tries`` bounds the rejection sampling of each
    kind of child (default: 10x the number wanted, as SPOS's code does) and of each
    random candidate (default 1000). With ``output``, ``search_log.json`` there is
    written after each generation and a search with the same settings resumes from it.

    Returns ``best`` (candidate), ``best_arch``, ``best_score``, ``best_cost``,
    ``history`` (one record per generation) and ``evaluated`` (arch -> (score, cost)).
    """
    if population < 1 or generations < 1 or top_k < 1:
        raise InvalidInputError("population, generations and top_k must be positive.")
    if not 0.0 <= mutation_prob <= 1.0:
        raise InvalidInputError(f"mutation_prob must be in [0, 1], got {mutation_prob}.")
    if mutations + crossovers > population:
        raise InvalidInputError(
            f"mutations + crossovers ({mutations} + {crossovers}) exceed the population "
            f"({population}).")
    random_tries = max_tries or 1000
    settings = _settings(space, max_cost, min_cost, population, generations, top_k, mutations,
                         crossovers, mutation_prob, seed)
    rng = np.random.default_rng(seed)
    evaluated: Dict[str, Tuple[float, float]] = {}
    history: List[Dict[str, Any]] = []
    top: List[Candidate] = []
    log_path = None
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        log_path = output / LOG_NAME
        if log_path.exists():
            log = json.loads(log_path.read_text())
            if log.get("version") != LOG_VERSION or log.get("settings") != json.loads(
                    json.dumps(settings)):
                raise ZooError(
                    f"{log_path} belongs to a search with other settings; use another --output "
                    f"or delete it to start over.")
            evaluated = {arch: tuple(v) for arch, v in log["evaluated"].items()}
            history = log["generations"]
            top = [space.decode(arch) for arch in log["state"]["top"]]
            rng.bit_generator.state = log["state"]["rng"]
            if history:
                print(f"Resuming the search from {log_path} after generation {len(history)}.",
                      file=sys.stderr)

    bar = _Progress(progress)
    seen = {space.decode(arch) for arch in evaluated}
    for generation in range(len(history), generations):
        if generation == 0:
            candidates = []
            for _ in range(population):
                child = sample_within(space, max_cost, rng, random_tries, min_cost=min_cost,
                                      exclude=seen)
                seen.add(child)
                candidates.append(child)
        else:
            tries = max_tries or 10 * max(mutations, crossovers, 1)
            mutated = _breed(space, top, mutations,
                             lambda t, r: _mutate(space, t[int(r.integers(len(t)))],
                                                  mutation_prob, r),
                             max_cost, min_cost, seen, tries, rng)
            crossed = _breed(space, top, crossovers,
                             lambda t, r: _crossover(t[int(r.integers(len(t)))],
                                                     t[int(r.integers(len(t)))], r),
                             max_cost, min_cost, seen, tries, rng)
            candidates = mutated + crossed
            while len(candidates) < population:
                child = sample_within(space, max_cost, rng, random_tries, min_cost=min_cost,
                                      exclude=seen)
                seen.add(child)
                candidates.append(child)

        best_so_far = evaluated[space.encode(top[0])][0] if top else None
        for done, candidate in enumerate(candidates):
            arch = space.encode(candidate)
            if arch not in evaluated:
                evaluated[arch] = (float(score_fn(candidate)), space.cached_cost(candidate))
                score = evaluated[arch][0]
                best_so_far = score if best_so_far is None else max(best_so_far, score)
            bar.update(generation, generations, done + 1, len(candidates), best_so_far)

        pool = {c: evaluated[space.encode(c)][0] for c in list(top) + candidates}
        # best first; ties broken by the order seen (dicts keep insertion order)
        top = sorted(pool, key=lambda c: -pool[c])[:top_k]
        scores = [evaluated[space.encode(c)][0] for c in candidates]
        record = {
            "generation": generation,
            "population": [_record(space, c, evaluated) for c in candidates],
            "best": _record(space, top[0], evaluated),
            "top": [space.encode(c) for c in top],
            "mean_score": float(np.mean(scores)),
            "max_score": float(np.max(scores)),
            "seconds": round(time.time() - bar.start, 2),
        }
        history.append(record)
        bar.generation_done(generation, generations, record["best"]["score"],
                            record["mean_score"], record["best"]["cost"])
        if log_path is not None:
            write_json_atomically(log_path, {
                "version": LOG_VERSION, "settings": settings, "generations": history,
                "evaluated": {a: list(v) for a, v in evaluated.items()},
                "state": {"top": [space.encode(c) for c in top], "rng": rng.bit_generator.state},
                "finished": generation + 1 == generations,
            })
        if on_generation is not None:
            on_generation(record)

    best = top[0]
    best_arch = space.encode(best)
    return {"best": best, "best_arch": best_arch, "best_score": evaluated[best_arch][0],
            "best_cost": evaluated[best_arch][1], "history": history, "evaluated": evaluated}


def random_candidates(space: SearchSpace, max_cost: Optional[float], n: int, seed: int, *,
                      min_cost: Optional[float] = None, max_tries: int = 1000) -> List[Candidate]:
    """``n`` distinct random candidates within the limit: the random baseline's, from its
    own stream (the search's stays intact), so the same ``seed`` draws them again."""
    rng = np.random.default_rng([int(seed), 7919])
    seen, drawn = set(), []
    for _ in range(int(n)):
        candidate = sample_within(space, max_cost, rng, max_tries, min_cost=min_cost, exclude=seen)
        seen.add(candidate)
        drawn.append(candidate)
    return drawn


def median_random_score(space: SearchSpace, score_fn: Callable[[Candidate], float],
                        max_cost: Optional[float], n: int, seed: int, *,
                        min_cost: Optional[float] = None, max_tries: int = 1000,
                        cache: Optional[Dict[str, Tuple[float, float]]] = None):
    """Median score of ``n`` distinct random candidates within the limit, and their scores.

    The baseline a searched architecture has to beat. ``cache`` (arch -> (score,
    cost), e.g. the search's ``evaluated``) avoids scoring a candidate twice.
    """
    scores = []
    for candidate in random_candidates(space, max_cost, n, seed, min_cost=min_cost,
                                       max_tries=max_tries):
        arch = space.encode(candidate)
        if cache is not None and arch in cache:
            scores.append(float(cache[arch][0]))
        else:
            scores.append(float(score_fn(candidate)))
            if cache is not None:
                cache[arch] = (scores[-1], space.cached_cost(candidate))
    if not scores:
        raise InvalidInputError("median_random_score needs n >= 1.")
    return float(np.median(scores)), scores


# ----------------------------------------------------------------------------- BN recalibration


# batchnorm_layers and recalibrate_batchnorm live in zoo.layers (the training loop's final
# BN-statistics pass uses them too); imported above.


def top1_accuracy(model, dataset, call: Optional[Callable] = None) -> float:
    """Top-1 accuracy (%) of ``model`` (inference mode) on ``(images, labels)`` batches.

    The prediction function is traced once per model (``call`` replaces
    ``model(x, training=False)``, e.g. for a supernet with extra inputs).
    """
    import tensorflow as tf

    step = None if call is not None else getattr(model, "_zoo_predict_step", None)
    if step is None:
        fn = call or (lambda x: model(x, training=False))
        step = tf.function(lambda x, y: tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(fn(x), axis=-1, output_type=tf.int64),
                     tf.cast(tf.reshape(y, [-1]), tf.int64)), tf.int64)))
        if call is None:
            model._zoo_predict_step = step
    correct = total = 0
    for images, labels in dataset:
        correct += int(step(images, labels))
        total += int(labels.shape[0])
    if total == 0:
        raise InvalidInputError("Cannot score a candidate on an empty dataset.")
    return 100.0 * correct / total


# ----------------------------------------------------------------------------- plots


def _save_axes(plt, fig, ax, xlabel: str, ylabel: str, path: Path) -> Path:
    """Label, grid and legend one plot, write it as a PNG and close the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_search(output_dir, history: List[Dict[str, Any]], evaluated: Dict[str, Tuple[float, float]],
                max_cost: Optional[float], *, random_scores: Optional[Sequence[Tuple[float, float]]] = None,
                score_label: str = "top-1 (%)", cost_label: str = "cost") -> List[Path]:
    """``search_progress.png`` (best so far and population mean per generation) and
    ``search_cloud.png`` (score vs cost of every scored candidate, the limit, the
    best one, and the random baseline when given as (score, cost) pairs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    gens = [h["generation"] + 1 for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(gens, [h["best"]["score"] for h in history], "o-", label="best so far")
    ax.plot(gens, [h["mean_score"] for h in history], "s--", label="population mean")
    paths.append(_save_axes(plt, fig, ax, "generation", score_label, output_dir / "search_progress.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    if evaluated:
        scores, costs = zip(*evaluated.values())
        ax.scatter(costs, scores, s=10, alpha=0.5, label="evaluated")
    if random_scores:
        r_scores, r_costs = zip(*random_scores)
        ax.scatter(r_costs, r_scores, s=14, marker="x", color="gray", label="random")
    if history:
        best = history[-1]["best"]
        ax.scatter([best["cost"]], [best["score"]], s=80, marker="*", color="red", label="best")
    if max_cost is not None:
        ax.axvline(max_cost, color="black", linestyle=":", label="limit")
    paths.append(_save_axes(plt, fig, ax, cost_label, score_label, output_dir / "search_cloud.png"))
    return paths


__all__ = [
    "SearchSpace", "evolutionary_search", "sample_within", "random_candidates",
    "recalibrate_batchnorm",
    "median_random_score", "plot_search", "batchnorm_layers", "top1_accuracy",
]
