"""The shared evolutionary search engine: constraint, breeding, resume, BN recalibration."""
import json

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import InvalidInputError, ZooError
from zoo.search import SEARCHES, SearchConfig, SearchResult, register_search
from zoo.search import engine
from zoo.search.engine import (
    SearchSpace, evolutionary_search, median_random_score, plot_search, recalibrate_batchnorm,
    sample_within,
)


class ToySpace(SearchSpace):
    """8 genes with 3..10 options; cost = sum of genes (a hand-checkable constraint)."""

    choices = (3, 4, 5, 6, 7, 8, 9, 10)

    def __init__(self):
        self.cost_calls = 0

    def cost(self, candidate):
        self.cost_calls += 1
        return float(sum(candidate))


def toy_score(candidate):
    # prefers large genes in odd positions and small ones in even positions
    return float(sum(g if i % 2 else -0.5 * g for i, g in enumerate(candidate)))


SMALL = dict(population=12, generations=5, top_k=4, mutations=5, crossovers=5, seed=3,
             progress=False)


def test_sample_within_respects_the_band_and_raises_when_impossible():
    space = ToySpace()
    rng = np.random.default_rng(0)
    costs = [space.cached_cost(sample_within(space, 20, rng, 1000, min_cost=15)) for _ in range(200)]
    assert min(costs) >= 15 and max(costs) <= 20
    with pytest.raises(ZooError, match="No new architecture"):
        sample_within(space, -1, rng, 50)


def test_cost_is_cached_per_candidate():
    space = ToySpace()
    assert space.cached_cost((1, 2, 3, 4, 5, 6, 7, 8)) == 36.0
    assert space.cached_cost((1, 2, 3, 4, 5, 6, 7, 8)) == 36.0
    assert space.cost_calls == 1


def test_every_candidate_of_every_generation_respects_the_limit(tmp_path):
    space = ToySpace()
    result = evolutionary_search(space, toy_score, 25.0, min_cost=10.0, output=tmp_path, **SMALL)
    assert len(result["history"]) == 5
    archs = []
    for generation in result["history"]:
        assert len(generation["population"]) == 12
        for member in generation["population"]:
            genes = space.decode(member["arch"])
            assert space.is_valid(genes)
            assert 10.0 <= member["cost"] <= 25.0 and member["cost"] == sum(genes)
            assert member["score"] == toy_score(genes)
            archs.append(member["arch"])
    assert len(archs) == len(set(archs)), "a candidate was scored twice"
    assert set(archs) == set(result["evaluated"])
    # best = the highest score ever evaluated, and the search beats random sampling
    assert result["best_score"] == max(s for s, _ in result["evaluated"].values())
    median, scores = median_random_score(space, toy_score, 25.0, 30, seed=0, min_cost=10.0)
    assert median == np.median(scores) and len(scores) == 30
    assert result["best_score"] > median


def test_mutation_and_crossover_keep_genes_in_range():
    space = ToySpace()
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = space.random(rng), space.random(rng)
        mutated = engine._mutate(space, a, 0.5, rng)
        crossed = engine._crossover(a, b, rng)
        assert space.is_valid(mutated) and space.is_valid(crossed)
        assert all(c in (x, y) for c, x, y in zip(crossed, a, b))
    # probability 0 changes nothing, probability 1 resamples every gene (some must change)
    a = space.random(rng)
    assert engine._mutate(space, a, 0.0, rng) == a
    changed = sum(engine._mutate(space, a, 1.0, rng) != a for _ in range(20))
    assert changed >= 19
    # mutation rate 0.1 changes about 10% of the genes
    flips = np.mean([[x != y for x, y in zip(a, engine._mutate(space, a, 0.1, rng))]
                     for _ in range(2000)])
    expected = np.mean([0.1 * (1 - 1 / n) for n in space.choices])
    assert abs(flips - expected) < 0.015


def test_is_valid_and_decode_reject_out_of_range_genes():
    space = ToySpace()
    assert not space.is_valid((3, 0, 0, 0, 0, 0, 0, 0))  # gene 0 has 3 options
    assert not space.is_valid((0, 0, 0))
    assert space.decode("2-3-4-5-6-7-8-9") == (2, 3, 4, 5, 6, 7, 8, 9)
    for bad in ("2-3-4", "a-b", "3-0-0-0-0-0-0-0", ""):
        with pytest.raises(InvalidInputError):
            space.decode(bad)


def test_resume_from_the_log_gives_the_same_result(tmp_path):
    full = evolutionary_search(ToySpace(), toy_score, 25.0, output=tmp_path / "full", **SMALL)

    class Killed(Exception):
        pass

    def kill_after_two(record):
        if record["generation"] == 1:
            raise Killed

    with pytest.raises(Killed):
        evolutionary_search(ToySpace(), toy_score, 25.0, output=tmp_path / "part",
                            on_generation=kill_after_two, **SMALL)
    log = json.loads((tmp_path / "part" / "search_log.json").read_text())
    assert len(log["generations"]) == 2 and not log["finished"]

    scored = []
    resumed = evolutionary_search(ToySpace(), lambda c: scored.append(c) or toy_score(c), 25.0,
                                  output=tmp_path / "part", **SMALL)
    assert resumed["best_arch"] == full["best_arch"]
    def timeless(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert timeless(resumed["history"]) == timeless(full["history"])
    assert resumed["evaluated"] == full["evaluated"]
    # the resumed run scored only generations 3..5
    assert len(scored) == sum(len(h["population"]) for h in full["history"][2:])
    # other settings refuse to resume from that log
    with pytest.raises(ZooError, match="other settings"):
        evolutionary_search(ToySpace(), toy_score, 30.0, output=tmp_path / "part", **SMALL)


def test_plot_search_writes_both_pngs(tmp_path):
    space = ToySpace()
    result = evolutionary_search(space, toy_score, 25.0, **{**SMALL, "generations": 2})
    paths = plot_search(tmp_path, result["history"], result["evaluated"], 25.0,
                        random_scores=[(1.0, 20.0)])
    assert [p.name for p in paths] == ["search_progress.png", "search_cloud.png"]
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_recalibration_sets_moving_stats_to_the_average_batch_statistics(fresh_session):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(3, 8, 4, 4, 2)).astype(np.float32)
    inputs = tf.keras.Input((4, 4, 2))
    first = tf.keras.layers.BatchNormalization(center=False, scale=False)
    conv = tf.keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer="ones")
    second = tf.keras.layers.BatchNormalization()
    model = tf.keras.Model(inputs, second(conv(first(inputs))))
    first.moving_mean.assign([5.0, -5.0])
    first.moving_variance.assign([9.0, 0.1])
    recalibrate_batchnorm(model, tf.data.Dataset.from_tensor_slices((x, np.zeros((3, 8)))), 3)

    flat = x.reshape(3, -1, 2)
    # per batch mean / unbiased variance (what Keras' training mode feeds the moving
    # averages), averaged over the 3 batches
    np.testing.assert_allclose(first.moving_mean.numpy(), flat.mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(), flat.var(1, ddof=1).mean(0), rtol=1e-4)
    # the second BN sees the first one's batch-normalised output summed over 2 channels
    eps = first.epsilon
    normed = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + eps)
    summed = normed.sum(-1)
    np.testing.assert_allclose(second.moving_mean.numpy(), np.full(3, summed.mean(1).mean(0)),
                               atol=1e-5)
    np.testing.assert_allclose(second.moving_variance.numpy(),
                               np.full(3, summed.var(1, ddof=1).mean(0)), rtol=1e-4)
    assert first.momentum == 0.99  # restored


def test_registry_and_config(tmp_path):
    @register_search("toy_search_for_test", model="spos", supernet="spos_supernet",
                     paper="none")
    def run(config):
        """A toy method."""
        return SearchResult("toy_search_for_test", "0", 1.0, 1.0, 2.0, 0.5, [0.5], config.output)

    try:
        method = zoo.search.get_search("toy-search-for-test")
        assert method.description == "A toy method." and method.model == "spos"
        result = method.run(SearchConfig(output=str(tmp_path)))
        assert result.to_dict()["output"] == str(tmp_path)
        assert SearchConfig().population == 50 and SearchConfig().generations == 20
    finally:
        SEARCHES._entries.pop("toy_search_for_test")
