"""Binary MobileNet group-conv search: group masks, supernet = stand-alone net, OPs, space."""
import json

import numpy as np
import pytest

import larq as lq
import tensorflow as tf

from zoo.api import load
from zoo.costs import model_costs
from zoo.errors import InvalidInputError
from zoo.models import bmes as bm
from zoo.search import SearchConfig, get_search, oneshot
from zoo.search.bmes import BmesSpace
from zoo.search.engine import sample_within

SHAPE = (16, 16, 3)
WIDTH = 0.125  # widths 4, 8, 16, 16, 32, 32, 64 x 6, 128, 128


@pytest.fixture(autouse=True)
def _fresh(fresh_session):
    """A clean Keras session and seed for every test (conftest.fresh_session)."""


@pytest.fixture(scope="module")
def space():
    """The search space at width 0.125 on 16x16 inputs (its OPs base measured once)."""
    return BmesSpace(WIDTH, SHAPE, 10)


def test_group_choices_and_widths():
    assert bm.group_choices(64) == (1, 2, 4, 8, 16, 32, 64)
    assert bm.group_choices(24) == (1, 2, 4, 8, 24)  # 24 = depthwise, not a power of two
    assert bm.group_choices(1) == (1,)
    assert bm.stage_widths(WIDTH) == (4, 8, 16, 16, 32, 32, 64, 64, 64, 64, 64, 64, 128, 128)
    assert bm.stage_widths(1.0)[-1] == 1024
    assert bm.block_strides() == (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)


def test_block_diagonal_mask_by_hand():
    mask = bm.block_diagonal_mask(4, 4, 2).numpy()
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(bm.block_diagonal_mask(4, 4, 4).numpy(), np.eye(4))
    np.testing.assert_array_equal(bm.block_diagonal_mask(4, 4, 1).numpy(), np.ones((4, 4)))


def _choice_layer(channels, binary):
    layer = bm.GroupChoiceConv2D(channels, 3, 1, choices=bm.group_choices(channels),
                                 binary_weights=binary)
    layer.build((None, 6, 6, channels))
    return layer


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_masked_full_conv_equals_grouped_conv(groups):
    """Real kernels: the masked full conv is Conv2D(groups=g) with the diagonal blocks."""
    channels = 8
    rng = np.random.default_rng(groups)
    x = np.sign(rng.normal(size=(2, 6, 6, channels))).astype(np.float32)  # RSign (shift 0) keeps +-1
    layer = _choice_layer(channels, binary=False)
    layer.choice.assign(layer.choices.index(groups))
    grouped = tf.keras.layers.Conv2D(channels, 3, padding="same", groups=groups, use_bias=False)
    grouped.build((None, 6, 6, channels))
    grouped.set_weights([bm.grouped_kernel_from_full(layer.kernel.numpy(), groups)])
    np.testing.assert_allclose(layer(x).numpy(), grouped(x).numpy(), rtol=1e-5, atol=1e-5)
    # the mask matters: with groups > 1 the full (unmasked) conv differs
    if groups > 1:
        full = tf.nn.conv2d(x, layer.kernel, 1, "SAME").numpy()
        assert not np.allclose(full, layer(x).numpy(), atol=1e-3)


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_binary_masked_conv_equals_larq_grouped_conv(groups):
    """Binary kernels: the per-output scale is the mean |W| over that output's group only."""
    channels = 8
    rng = np.random.default_rng(10 + groups)
    x = rng.normal(size=(2, 6, 6, channels)).astype(np.float32)
    layer = _choice_layer(channels, binary=True)
    layer.choice.assign(layer.choices.index(groups))
    larq_conv = lq.layers.QuantConv2D(channels, 3, padding="same", groups=groups, use_bias=False,
                                      input_quantizer="ste_sign",
                                      kernel_quantizer="magnitude_aware_sign",
                                      kernel_constraint="weight_clip")
    larq_conv.build((None, 6, 6, channels))
    larq_conv.set_weights([bm.grouped_kernel_from_full(layer.kernel.numpy(), groups)])
    np.testing.assert_allclose(layer(x).numpy(), larq_conv(x).numpy(), rtol=1e-5, atol=1e-5)


def test_supernet_path_equals_standalone_network():
    supernet = load("bmes_supernet", width=WIDTH, input_shape=SHAPE, num_classes=10)
    x = np.random.default_rng(0).normal(size=(2,) + SHAPE).astype(np.float32)
    outputs = []
    for groups in [(1,) * 13, (4, 8, 16, 1, 2, 32, 64, 1, 4, 8, 16, 2, 128)]:
        bm.set_groups(supernet, groups)
        standalone = load("bmes", arch=bm.encode_arch(groups), width=WIDTH, input_shape=SHAPE,
                              num_classes=10)
        bm.supernet_to_standalone(supernet, standalone, groups)
        ours = supernet(x, training=False).numpy()
        np.testing.assert_allclose(ours, standalone(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
        outputs.append(ours)
    assert not np.allclose(outputs[0], outputs[1], atol=1e-4)  # the group choice changes the net


def test_ops_against_hand_count(space):
    """16x16 input, width 0.125, groups 1 except block 1 (4 = depthwise) and block 13 (128)."""
    groups = (4,) + (1,) * 11 + (128,)
    model = load("bmes", arch=bm.encode_arch(groups), width=WIDTH, input_shape=SHAPE,
                     num_classes=10)
    flops = 8 * 8 * 9 * 3 * 4 + 128 * 10  # real stem 3x3/2 (3 -> 4) at 8x8, dense 128 -> 10
    bops = [
        8 * 8 * 9 * 4 * 1, 2 * 8 * 8 * 4 * 4,  # block 1: depthwise 3x3 at 8x8, two 1x1 4 -> 4
        4 * 4 * 9 * 8 * 8, 2 * 4 * 4 * 8 * 8,  # block 2: stride 2 -> 4x4
        4 * 4 * 9 * 16 * 16, 4 * 4 * 16 * 16,  # block 3
        2 * 2 * 9 * 16 * 16, 2 * 2 * 2 * 16 * 16,  # block 4: -> 2x2
        2 * 2 * 9 * 32 * 32, 2 * 2 * 32 * 32,  # block 5
        9 * 32 * 32, 2 * 32 * 32,  # block 6: -> 1x1
        5 * (9 * 64 * 64 + 64 * 64),  # blocks 7-11
        9 * 64 * 64, 2 * 64 * 64,  # block 12 (stride 2 on 1x1 stays 1x1)
        9 * 128 * 1, 128 * 128,  # block 13: depthwise 3x3, 1x1
    ]
    costs = model_costs(model)
    assert costs["float_macs"] == flops
    assert costs["binary_macs"] == sum(bops)
    assert costs["ops"] == flops + sum(bops) / 64
    assert space.cost(space.decode(bm.encode_arch(groups))) == pytest.approx(costs["ops"])


def test_space_cost_equals_keras_graph_and_round_trips(space):
    assert space.choices == tuple(len(bm.group_choices(c)) for c in bm.layer_channels(WIDTH))
    candidate = space.random(np.random.default_rng(3))
    arch = space.encode(candidate)
    assert space.decode(arch) == candidate
    model = load("bmes", arch=arch, width=WIDTH, input_shape=SHAPE, num_classes=10)
    assert space.cost(candidate) == pytest.approx(model_costs(model)["ops"])


def test_constraint_respected_by_sampled_candidates(space):
    cheapest = space.cost(tuple(n - 1 for n in space.choices))
    dearest = space.cost((0,) * len(space.choices))
    limit = cheapest + 0.3 * (dearest - cheapest)
    rng = np.random.default_rng(0)
    costs = [space.cost(sample_within(space, limit, rng, 2000)) for _ in range(30)]
    assert max(costs) <= limit and min(costs) >= cheapest


def test_bad_arch_strings_raise():
    with pytest.raises(InvalidInputError, match="group counts joined by"):
        load("bmes", arch="one-two", width=WIDTH, input_shape=SHAPE, num_classes=10)
    with pytest.raises(InvalidInputError, match="expected 13"):
        load("bmes", arch="1-1-1", width=WIDTH, input_shape=SHAPE, num_classes=10)
    with pytest.raises(InvalidInputError, match=r"one of \[1, 2, 4\]"):
        load("bmes", arch="3" + "-1" * 12, width=WIDTH, input_shape=SHAPE, num_classes=10)
    with pytest.raises(InvalidInputError, match="is for width 0.125"):
        load("bmes", arch="0.125x:" + "-".join(["1"] * 13), width=0.25, input_shape=SHAPE,
                 num_classes=10)
    with pytest.raises(InvalidInputError, match="the width"):
        load("bmes", arch="wide:" + "-".join(["1"] * 13), input_shape=SHAPE, num_classes=10)


def test_width_prefix_makes_the_string_self_contained():
    groups = (4, 8, 16, 16, 32, 32, 64, 64, 64, 64, 64, 64, 128)  # all depthwise at width 0.125
    arch = bm.encode_arch(groups, WIDTH)
    assert arch == "0.125x:" + "-".join(str(g) for g in groups)
    assert bm.encode_arch(groups) == "-".join(str(g) for g in groups)
    model = load("bmes", arch=arch, input_shape=SHAPE, num_classes=10)
    kernels = [l.kernel.shape for l in model.layers if l.name.endswith("_conv3x3")]
    assert [tuple(k) for k in kernels] == [(3, 3, 1, c) for c in groups]


def test_tiny_search_end_to_end(tmp_path, space, monkeypatch):
    """Supernet steps, a 2-generation search and the random baseline, all under the limit."""
    method = get_search("bmes")
    assert (method.model, method.supernet) == ("bmes", "bmes_supernet")
    limit = space.cost((2,) * 13)  # groups 4 everywhere
    config = SearchConfig(output=tmp_path, supernet_epochs=1, max_ops=limit, population=3,
                          generations=2, top_k=2, mutations=1, crossovers=1, batch_size=64,
                          image_size=16, limit=128, eval_limit=128, random_baseline=3,
                          recalibration_batches=1, extra={"width": WIDTH})
    result = method.run(config)
    assert result.cost <= limit and result.max_cost == limit
    assert len(result.random_scores) == 3 and 0 <= result.random_median_score <= 100
    log = json.loads((tmp_path / "search_log.json").read_text())
    assert all(c["cost"] <= limit for g in log["generations"] for c in g["population"])
    assert result.score == max(score for score, _ in log["evaluated"].values())
    model = load("bmes", arch=result.arch, width=WIDTH, input_shape=SHAPE, num_classes=10)
    assert model_costs(model)["ops"] == pytest.approx(result.cost)
    for name in ("supernet.h5", "search_log.json", "result.json", "search_progress.png"):
        assert (tmp_path / name).exists()
    # bmes' run directory and result: the supernet's weights only (no per-epoch log), its
    # result keys, result.json as the result
    assert not (tmp_path / "supernet_log.json").exists()
    assert not (tmp_path / "random_baseline.json").exists()
    assert list(result.extra) == ["model", "cost_metric", "input_shape", "supernet_epochs",
                                  "supernet_seconds", "search_seconds", "scored_candidates",
                                  "score", "plots", "width"]
    assert result.extra["model"] == "bmes" and result.extra["cost_metric"] == "OPs"
    assert result.extra["scored_candidates"] >= len(log["evaluated"])
    text = (tmp_path / "result.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(result.to_dict())) and text.startswith('{\n  "')
    # run again in the same directory: the trained supernet is reused, not trained again
    monkeypatch.setattr(oneshot, "train_supernet", _no_training)
    again = method.run(config)
    assert (again.arch, again.score, again.random_scores) == (result.arch, result.score,
                                                               result.random_scores)
    with pytest.raises(InvalidInputError, match="Unknown search setting"):
        method.run(SearchConfig(output=tmp_path / "x", extra={"widht": 0.5}))


def _no_training(*args, **kwargs):
    raise AssertionError("the supernet of the run directory should have been reused")
