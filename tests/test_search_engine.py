"""The shared evolutionary search engine: constraint, breeding, resume, BN recalibration."""
import json
import sys

import numpy as np
import pytest
import tensorflow as tf

import re

from zoo.errors import InvalidInputError, ZooError
from zoo.models import _arch
from zoo.models import bmes as bm
from zoo.models import metapruning as mp
from zoo.models import spos as S
from zoo.search import SEARCHES, SearchConfig, SearchResult, get_search, oneshot, register_search
from zoo.search import engine
from zoo.search.engine import (
    SearchSpace, evolutionary_search, median_random_score, plot_search, random_candidates,
    recalibrate_batchnorm, sample_within,
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
        method = get_search("toy-search-for-test")
        assert method.description == "A toy method." and method.model == "spos"
        result = method.run(SearchConfig(output=str(tmp_path)))
        assert result.to_dict()["output"] == str(tmp_path)
        assert SearchConfig().population == 50 and SearchConfig().generations == 20
    finally:
        SEARCHES._entries.pop("toy_search_for_test")


def test_random_candidates_are_the_baselines_and_repeat():
    space = ToySpace()
    drawn = random_candidates(space, 25.0, 30, seed=4)
    assert len(set(drawn)) == 30 and all(space.cached_cost(c) <= 25.0 for c in drawn)
    assert random_candidates(space, 25.0, 30, seed=4) == drawn  # the same stream again
    scored = []
    median, scores = median_random_score(space, lambda c: scored.append(c) or toy_score(c), 25.0,
                                         30, seed=4)
    assert scored == drawn and scores == [toy_score(c) for c in drawn]


# ----------------------------------------------------------------------------- arch strings


SYNTAXES = {  # the families' architecture strings, parsed and written by zoo.models._arch
    "engine": dict(),
    "bmes / MetaPruning": dict(width_style="prefix"),
    "SPOS": dict(sep="", parts=2, width_style="suffix"),
}


@pytest.mark.parametrize("syntax, parts, width, text", [
    ("engine", [(0, 3, 12)], None, "0-3-12"),
    ("bmes / MetaPruning", [(1, 2, 4, 128)], 0.25, "0.25x:1-2-4-128"),
    ("bmes / MetaPruning", [(49, 100)], 1.0, "49-100"),  # width 1.0 is not written
    ("SPOS", [(0, 3, 1), (7, 0, 4)], 0.5, "031-704@0.5"),
    ("SPOS", [(0, 3, 1, 2, 2)], None, "03122"),  # blocks only
])
def test_arch_strings_round_trip(syntax, parts, width, text):
    options = SYNTAXES[syntax]
    written = _arch.format_arch(parts, width, **{k: v for k, v in options.items() if k != "parts"})
    assert written == text
    parsed, parsed_width = _arch.parse_arch(written, what="toy architecture", expected="genes",
                                            **options)
    assert parsed == tuple(tuple(p) for p in parts)
    assert parsed_width == (None if width == 1.0 or "width_style" not in options else width)
    # white space around the string does not matter
    assert _arch.parse_arch(f"  {written}\n", what="toy", expected="genes", **options)[0] == parsed


@pytest.mark.parametrize("syntax, text, message", [
    ("engine", "1-a-3", "Bad toy architecture '1-a-3': expected three genes joined by '-'."),
    ("engine", "", "Bad toy architecture '': expected three genes"),
    ("engine", "1--3", "Bad toy architecture '1--3'"),
    ("engine", "0.25x:1-2", "Bad toy architecture '0.25x:1-2'"),  # no width in this syntax
    ("bmes / MetaPruning", "wide:1-2", "Bad architecture 'wide:1-2': the part before ':' is the "
                                       "width, e.g. '0.25x:'."),
    ("bmes / MetaPruning", "0x:1-2", "the part before ':' is the width"),
    ("SPOS", "012-34-56", "Bad toy architecture '012-34-56'"),  # at most 2 parts
    ("SPOS", "01a", "Bad toy architecture '01a'"),
    ("SPOS", "012-", "Bad toy architecture '012-'"),
    ("SPOS", "012@x", "Bad architecture '012@x': the part after '@' is the width, e.g. '@0.25'."),
    ("SPOS", "012@-1", "the part after '@' is the width"),
])
def test_bad_arch_strings_raise_a_clear_error(syntax, text, message):
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        _arch.parse_arch(text, what="toy architecture", expected="three genes joined by '-'",
                         **SYNTAXES[syntax])


def test_width_annotation_and_an_explicit_width():
    assert _arch.split_width("0.25x:1-2", None) == ("1-2", 0.25)
    assert _arch.split_width("0.25x:1-2", 0.25) == ("1-2", 0.25)
    assert _arch.split_width("1-2", None) == ("1-2", 1.0)
    assert _arch.split_width("1-2", 0.5) == ("1-2", 0.5)
    assert _arch.split_width((1, 2), None) == ((1, 2), 1.0)  # genes, not a string
    with pytest.raises(InvalidInputError, match=r"'0\.25x:1-2' is for width 0\.25, but width=0\.5"):
        _arch.split_width("0.25x:1-2", 0.5)
    assert _arch.resolve_width("x@0.5", 0.5, None) == 0.5
    with pytest.raises(InvalidInputError, match="drop one of them"):
        _arch.resolve_width("x@0.5", 0.5, 1.0)
    with pytest.raises(ValueError):  # several parts need one-digit genes
        _arch.parse_arch("1-2", what="toy", expected="genes", parts=2)
    with pytest.raises(ValueError):  # a one-digit gene cannot be written as 12
        _arch.format_arch([(12,)], sep="")


def test_every_family_parses_with_the_shared_parser(monkeypatch):
    """SPOS, bmes, MetaPruning and the engine's default all go through _arch.parse_arch,
    then check their own genes."""
    calls = []
    real = _arch.parse_arch

    def spy(arch, **kwargs):
        calls.append(kwargs["what"])
        return real(arch, **kwargs)

    monkeypatch.setattr(_arch, "parse_arch", spy)
    assert S.parse_arch(S.DEFAULT_ARCH)[:2] == (S.DEFAULT_BLOCKS, S.DEFAULT_SCALES)
    assert bm.parse_arch("-".join(["1"] * 13)) == (1,) * 13
    spec = mp.network_spec("v1")
    assert mp.parse_arch("-".join(["49"] * 13), spec) == (49,) * 13
    assert ToySpace().decode("2-3-4-5-6-7-8-9") == (2, 3, 4, 5, 6, 7, 8, 9)
    assert calls == ["SPOS architecture", "bmes architecture",
                     "MetaPruning MobileNetV1 architecture", "architecture string"]
    # each family's own checks on the parsed genes
    with pytest.raises(InvalidInputError, match="choice layer"):
        S.parse_arch("0123")  # 4 layers
    with pytest.raises(InvalidInputError, match="expected 13"):
        bm.parse_arch("1-1")
    with pytest.raises(InvalidInputError, match="not a width percent"):
        mp.parse_arch("-".join(["50"] * 13), spec)


# ----------------------------------------------------------------------------- one-shot flow


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name, extra", [
    ("spos", {"width": 0.25, "layers": 5}),
    ("bmes", {"width": 0.125}),
    ("metapruning_mobilenet_v1", {"width": 0.125}),
    ("metapruning_mobilenet_v2", {"width": 0.125}),
])
def test_every_weight_sharing_search_runs_the_shared_one_shot_flow(name, extra, monkeypatch,
                                                                   tmp_path, fresh_session):
    """Each method prepares a oneshot.OneShot and hands it to oneshot.run_one_shot (the one
    supernet trainer and search flow); none keeps a trainer or a runner of its own."""
    plans = []

    def spy(config, plan):
        plans.append((config, plan))
        raise _Stop

    monkeypatch.setattr(oneshot, "run_one_shot", spy)
    method = get_search(name)
    config = SearchConfig(output=tmp_path, image_size=16, extra=extra)
    with pytest.raises(_Stop):
        method.run(config)
    ((given, plan),) = plans
    assert given is config and isinstance(plan, oneshot.OneShot)
    assert (plan.method, plan.model) == (method.name, method.model)
    assert plan.supernet.name == method.supernet
    assert tuple(plan.input_shape) == (16, 16, 3)
    assert 0 < plan.max_cost and plan.default_epochs > 0 and plan.default_recalibration > 0
    candidate = plan.space.random(np.random.default_rng(0))
    plan.set_path(candidate)  # selects a path of this supernet
    assert plan.space.decode(plan.space.encode(candidate)) == candidate
    optimizer = plan.make_optimizer(10)
    assert isinstance(optimizer, oneshot.PathOptimizer) == (name == "spos")
    assert not any(tmp_path.iterdir())  # nothing written before the shared flow
    module = sys.modules[type(plan.space).__module__]
    for own in ("train_supernet", "run_one_shot", "search_datasets", "_pipeline"):
        assert not hasattr(module, own), f"{module.__name__}.{own}"


def test_one_shot_settings_helpers():
    config = SearchConfig(extra={"width": "0.5", "lr": "fast"})
    assert oneshot.setting(config, "width", 1.0) == 0.5
    assert oneshot.setting(config, "layers", 20, int) == 20
    with pytest.raises(InvalidInputError, match=r"--set lr='fast': expected a float"):
        oneshot.setting(config, "lr", 0.1)
    oneshot.check_settings(config, ("width", "lr"))
    with pytest.raises(InvalidInputError, match="Unknown spos setting.*widht; this method takes: "
                                                "lr, width"):
        oneshot.check_settings(SearchConfig(extra={"widht": 1}), ("lr", "width"), label="spos")
    assert oneshot.supernet_epochs(SearchConfig(), 7) == 7
    assert oneshot.supernet_epochs(SearchConfig(supernet_epochs=0), 7) == 0
    with pytest.raises(InvalidInputError, match="--supernet-epochs -1: .* >= 0"):
        oneshot.supernet_epochs(SearchConfig(supernet_epochs=-1), 7)


def test_search_datasets_hold_out_the_end_of_the_training_split():
    from zoo import data as zdata

    spec = zdata.get_dataset("fashion_mnist")  # 60,000 training images

    def counts(val_images=None, **settings):
        data = oneshot.search_datasets(spec, (16, 16, 3), SearchConfig(**settings), 20, val_images)
        return data.train_count, data.score_count, data.recalibration_batches

    # bmes / MetaPruning: --eval-limit images held out (default 10,000), all of them scored
    assert counts() == (50_000, 10_000, 20)
    assert counts(eval_limit=128, limit=256, batch_size=64) == (256, 128, 4)  # <= one epoch
    with pytest.raises(InvalidInputError, match=r"--eval-limit must be in \[1, 59999\]"):
        counts(eval_limit=60_000)
    # SPOS: val_images held out (at most a fifth), the first --eval-limit of them scored
    assert counts(val_images=10_000, eval_limit=128) == (50_000, 128, 20)
    assert counts(val_images=30_000) == (48_000, 12_000, 20)
    assert counts(recalibration_batches=3) == (50_000, 10_000, 3)
    with pytest.raises(InvalidInputError, match="--recalibration-batches must be >= 1"):
        counts(recalibration_batches=0)
    data = oneshot.search_datasets(spec, (16, 16, 3), SearchConfig(limit=100, eval_limit=50,
                                                                   batch_size=32), 2)
    images, labels = next(iter(data.score))
    assert images.shape == (50, 16, 16, 3) and data.steps_per_epoch == 4
    assert sum(int(x.shape[0]) for x, _ in data.train) == 100
    assert sum(int(x.shape[0]) for x, _ in data.recalibration) == 64  # 2 batches of 32
