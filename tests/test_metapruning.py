"""MetaPruning: ratio -> channels, PruningNet weight cropping, PruningNet = pruned net, FLOPs."""
import json

import numpy as np
import pytest

import tensorflow as tf

import zoo

from zoo.api import load
from zoo.costs import model_costs
from zoo.errors import InvalidInputError
from zoo.models import metapruning as mp
from zoo.search import SearchConfig, get_search
from zoo.search.engine import sample_within
from zoo.search.metapruning import MetaPruningSpace

SHAPE = (16, 16, 3)
WIDTH = 0.125  # MobileNetV1 bases 4, 8, 16, 16, 32, 32, 64 x 6, 128, 128


@pytest.fixture(autouse=True)
def _fresh(fresh_session):
    """A clean Keras session and seed for every test (conftest.fresh_session)."""


def test_ratio_choices_and_channels_by_hand():
    assert len(mp.RATIO_PERCENTS) == 31
    assert mp.RATIO_PERCENTS[:3] == (10, 13, 16) and mp.RATIO_PERCENTS[-1] == 100
    # the official code's int(base * scale): floor of the float product, at least 1
    assert mp.channels_for(32, 10) == 3  # int(3.2)
    assert mp.channels_for(32, 100) == 32
    assert mp.channels_for(1024, 49) == 501  # int(501.76)
    assert mp.channels_for(44, 52) == 22  # int(22.88)
    assert mp.channels_for(8, 10) == 1
    assert mp.channels_for(100, 52) == 52
    assert mp.channels_for(100, 58) == int(100 * 0.58) == 57  # 57.99999999999999, as released
    with pytest.raises(InvalidInputError, match="not one of"):
        mp.channels_for(32, 50)


def test_network_specs():
    v1 = mp.network_spec("v1", WIDTH)
    assert v1.num_genes == 13
    assert v1.base == (4, 8, 16, 16, 32, 32, 64, 64, 64, 64, 64, 64, 128, 128)
    assert v1.channels([10] * 13)[-1] == 128  # the last block is not pruned
    v2 = mp.network_spec("v2", 1.0)
    # stem + 7 stage outputs + 17 mid widths: block 1 (t=1) keeps a 1x1 conv of its own width
    assert v2.num_genes == 25
    assert v2.base[:8] == (32, 16, 24, 32, 64, 96, 160, 320) and v2.base[-1] == 1280
    assert v2.base[8] == 32  # block 1's mid width: its input's (t=1)
    # the published fashion_mnist weights' layout (its manifest record sets block1_expand=False)
    assert mp.network_spec("v2", 1.0, block1_expand=False).num_genes == 24
    assert [c.name for c in v2.blocks[1][0]] == ["block1_expand", "block1_dw", "block1_project"]
    assert sum(residual for _, residual in v2.blocks) == 10  # MobileNetV2's 10 residual adds
    # generators: FC 1 -> 32 for the stem and the last 1x1 conv, FC 3 -> 64 in the bottlenecks
    hidden = {c.name: c.hidden or v2.hidden for c in v2.convs()}
    assert hidden.pop("stem") == hidden.pop("last") == 32 and set(hidden.values()) == {64}
    # width 1.4: the official stage_out_channel table (88 and 132, not 89 and 134)
    assert mp.network_spec("v2", 1.4).base[:8] == (44, 22, 33, 44, 88, 132, 224, 448)


def test_released_genomes_and_their_flops():
    """The official evaluating/ genomes: V1 0.75x at 316M (README) counted as cal_FLOPs.py does;
    V2's 35 released ids (18 overall, equal within residual stages, + 17 mid) are 25 genes here."""
    v1 = mp.network_spec("v1")
    genes = mp.parse_arch(mp.V1_0_75_ARCH, v1)
    # evaluating/mobilenet_v1.py: layer i has int(base_i * scale[rngs[i - 1]]) channels
    rngs = [28, 18, 10, 23, 23, 22, 22, 13, 17, 28, 17, 25, 29]
    expected = [int(b * ((10 + 3 * rngs[i - 1]) / 100)) for i, b in enumerate(mp.V1_BASE[:13])]
    assert list(v1.channels(genes)) == expected + [1024]
    assert mp.conv_flops(v1, genes, (224, 224, 3), 1000) == 311_663_518
    assert mp.release_flops(v1, genes) == pytest.approx(316e6, rel=0.01)  # 315.58M
    entry = zoo.get_entry("metapruning_mobilenet_v1_0_75")
    assert entry.reported["imagenet2012"]["top1"] == 70.9
    assert entry.extra["release_flops"] == mp.release_flops(v1, genes)
    for name in ("metapruning_mobilenet_v1", "metapruning_mobilenet_v2"):  # unpruned nets
        assert zoo.get_entry(name).reported == {}

    v2 = mp.network_spec("v2", 1.4)
    body, width = mp._arch.split_width(mp.V2_RELEASE_CODE_ARCH)
    genes = mp.parse_arch(body, v2)
    assert len(genes) == 25 and width == 1.4
    overall = [14, 12, 11, 11, 8, 8, 8, 7, 7, 7, 7, 8, 8, 8, 14, 14, 14, 8]
    mid = [6, 5, 2, 15, 7, 17, 14, 5, 11, 12, 12, 11, 6, 16, 14, 13, 14]
    table = [44, 22, 33, 33, 44, 44, 44, 88, 88, 88, 88, 132, 132, 132, 224, 224, 224, 448]
    scale = [(10 + 3 * i) / 100 for i in range(31)]
    outs = [int(table[i] * scale[overall[i]]) for i in range(18)]
    mids = [int(table[0] * scale[mid[0]])] + [int(6 * table[i] * scale[mid[i]]) for i in range(1, 17)]
    channels = v2.channels(genes)
    stage_of = [0, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7]
    assert [channels[s] for s in stage_of] == outs and list(channels[8:25]) == mids
    assert mp.conv_flops(v2, genes, (224, 224, 3), 1000) == 104_870_557
    model = load("metapruning_mobilenet_v2", arch=mp.V2_RELEASE_CODE_ARCH, input_shape=(32, 32, 3),
                 num_classes=10)  # the string builds (width 1.4 from its prefix)
    assert model.get_layer("block1_expand").filters == mids[0] == 12  # int(44 * 0.28)


def test_weight_cropping_by_hand():
    """A 1x1 conv, 3 -> 2 channels max, hidden 2: generated kernel, crop and conv by hand."""
    layer = mp.GeneratedConv2D("pw", 1, 1, max_in=3, max_out=2, in_gene=0, out_gene=1,
                               encoding_genes=(0, 1), hidden=2)
    layer.build((None, 1, 1, 3))
    layer.fc1_kernel.assign([[1.0, -1.0], [2.0, 0.5]])
    layer.fc1_bias.assign([0.0, 0.1])
    layer.fc2_kernel.assign([[1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60]])
    layer.fc2_bias.assign(np.zeros(6))
    layer.encoding.assign([0.5, 1.0])
    # hidden = relu([0.5 + 2, -0.5 + 0.5] + [0, 0.1]) = [2.5, 0.1]; flat = 2.5 r0 + 0.1 r1
    full = np.array([3.5, 7, 10.5, 14, 17.5, 21]).reshape(1, 1, 3, 2)
    np.testing.assert_allclose(layer.full_kernel().numpy(), full, rtol=1e-6)
    layer.active_in.assign(2)
    layer.active_out.assign(1)
    cropped = layer.cropped_kernel().numpy()
    np.testing.assert_allclose(cropped, full[:, :, :2, :1], rtol=1e-6)
    np.testing.assert_allclose(cropped.ravel(), [3.5, 10.5], rtol=1e-6)
    out = layer(np.array([1.0, 2.0, 100.0], np.float32).reshape(1, 1, 1, 3)).numpy().ravel()
    # active output: 3.5 * 1 + 10.5 * 2 (the inactive input channel is ignored); inactive: 0
    np.testing.assert_allclose(out, [24.5, 0.0], rtol=1e-6)
    # the encoding drives the generated weights
    layer.encoding.assign([1.0, 1.0])
    assert not np.allclose(layer.full_kernel().numpy(), full)


def test_depthwise_cropping():
    layer = mp.GeneratedConv2D("dw", 3, 1, max_in=6, max_out=6, in_gene=0, out_gene=0,
                               encoding_genes=(0, 1), hidden=4)
    layer.build((None, 5, 5, 6))
    layer.active_in.assign(4)
    layer.active_out.assign(4)
    full = layer.full_kernel().numpy()
    assert full.shape == (3, 3, 6, 1)
    np.testing.assert_array_equal(layer.cropped_kernel().numpy(), full[:, :, :4, :])
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 6)).astype(np.float32)
    out = layer(x).numpy()
    expected = tf.nn.depthwise_conv2d(x[..., :4], full[:, :, :4, :], [1, 1, 1, 1], "SAME").numpy()
    np.testing.assert_allclose(out[..., :4], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[..., 4:], 0.0)


def _widths_of_pruned(model, name):
    layer = model.get_layer(name)
    kernel = layer.weights[0].shape
    if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
        return int(kernel[2]), int(kernel[2])
    return int(kernel[2]), int(kernel[3])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pruningnet_and_pruned_network_agree(version):
    """Every conv: the PruningNet's cropped widths are the pruned net's, and with the
    generated weights copied over both compute the same function."""
    spec = mp.network_spec(version, WIDTH)
    rng = np.random.default_rng(1)
    percents = tuple(int(p) for p in rng.choice(mp.RATIO_PERCENTS, spec.num_genes))
    pruningnet = load(f"pruningnet_mobilenet_{version}", width=WIDTH, input_shape=SHAPE,
                          num_classes=10)
    pruned = load(f"metapruning_mobilenet_{version}", arch=mp.encode_arch(percents),
                      width=WIDTH, input_shape=SHAPE, num_classes=10)
    mp.set_architecture(pruningnet, percents)
    layers = mp.generated_layers(pruningnet)
    assert len(layers) == len(spec.convs())
    for layer in layers:
        assert (int(layer.active_in), int(layer.active_out)) == _widths_of_pruned(pruned, layer.name)
    rng_bn = np.random.default_rng(3)
    for layer in pruningnet.layers:  # trained-looking BN statistics, so the output is not flat
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.set_weights([rng_bn.uniform(0.5, 1.5, w.shape) if i in (0, 3)
                               else rng_bn.normal(0, 0.1, w.shape)
                               for i, w in enumerate(layer.get_weights())])
    mp.pruningnet_to_pruned(pruningnet, pruned, percents)
    x = np.random.default_rng(2).normal(size=(2,) + SHAPE).astype(np.float32)
    ours = pruningnet(x, training=False).numpy()
    np.testing.assert_allclose(ours, pruned(x, training=False).numpy(), rtol=1e-4, atol=1e-6)
    assert np.ptp(ours) > 1e-3  # not a constant output

    if version == "v1":
        # the upstream slip (evaluation layer i reading gene i - 1) gives other widths: caught
        shifted = percents[-1:] + percents[:-1]
        if shifted != percents:
            other = load("metapruning_mobilenet_v1", arch=mp.encode_arch(shifted), width=WIDTH,
                             input_shape=SHAPE, num_classes=10)
            with pytest.raises(ValueError):
                mp.pruningnet_to_pruned(pruningnet, other, percents)


def test_v1_flops_against_hand_count():
    """Unpruned MobileNetV1 at width 0.125 on 16x16: conv MACs layer by layer."""
    macs = [
        8 * 8 * 9 * 3 * 4,  # stem 3x3/2, 3 -> 4, 8x8 out
        8 * 8 * 9 * 4, 8 * 8 * 4 * 8,  # block 1: dw 3x3 (4), pw 4 -> 8
        4 * 4 * 9 * 8, 4 * 4 * 8 * 16,  # block 2: stride 2 -> 4x4
        4 * 4 * 9 * 16, 4 * 4 * 16 * 16,  # block 3
        2 * 2 * 9 * 16, 2 * 2 * 16 * 32,  # block 4: -> 2x2
        2 * 2 * 9 * 32, 2 * 2 * 32 * 32,  # block 5
        9 * 32, 32 * 64,  # block 6: -> 1x1
        5 * (9 * 64 + 64 * 64),  # blocks 7-11
        9 * 64, 64 * 128,  # block 12
        9 * 128, 128 * 128,  # block 13
        128 * 10,  # classifier
    ]
    spec = mp.network_spec("v1", WIDTH)
    full = (100,) * 13
    model = load("metapruning_mobilenet_v1", width=WIDTH, input_shape=SHAPE, num_classes=10)
    assert model_costs(model)["float_macs"] == sum(macs) == mp.conv_flops(spec, full, SHAPE, 10)
    # pruned: stem at 52% -> int(4 * 0.52) = 2 channels: the stem and block 1's dw/pw shrink
    pruned = (52,) + (100,) * 12
    delta = 8 * 8 * 9 * 3 * 2 + 8 * 8 * 9 * 2 + 8 * 8 * 2 * 8
    assert mp.conv_flops(spec, pruned, SHAPE, 10) == sum(macs) - delta


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_space_cost_equals_keras_graph(version):
    space = MetaPruningSpace(version, WIDTH, SHAPE, 10)
    candidate = space.random(np.random.default_rng(5))
    arch = space.encode(candidate)
    assert space.decode(arch) == candidate
    model = load(f"metapruning_mobilenet_{version}", arch=arch, width=WIDTH, input_shape=SHAPE,
                     num_classes=10)
    assert space.cost(candidate) == model_costs(model)["float_macs"]


def test_constraint_respected_by_sampled_candidates():
    space = MetaPruningSpace("v1", WIDTH, SHAPE, 10)
    limit = 0.5 * space.full_cost()
    rng = np.random.default_rng(0)
    costs = [space.cost(sample_within(space, limit, rng, 2000)) for _ in range(50)]
    assert max(costs) <= limit


def test_bad_arch_strings_raise():
    with pytest.raises(InvalidInputError, match="width percents joined by"):
        load("metapruning_mobilenet_v1", arch="half", width=WIDTH, input_shape=SHAPE,
                 num_classes=10)
    with pytest.raises(InvalidInputError, match="expected 13"):
        load("metapruning_mobilenet_v1", arch="10-13", width=WIDTH, input_shape=SHAPE,
                 num_classes=10)
    with pytest.raises(InvalidInputError, match="not a width percent"):
        load("metapruning_mobilenet_v2", arch="-".join(["50"] * 25), width=WIDTH,
                 input_shape=SHAPE, num_classes=10)


def test_tiny_search_end_to_end(tmp_path):
    method = get_search("metapruning")
    assert method.name == "metapruning_mobilenet_v1"
    assert (method.model, method.supernet) == ("metapruning_mobilenet_v1", "pruningnet_mobilenet_v1")
    space = MetaPruningSpace("v1", WIDTH, SHAPE, 10)
    limit = 0.5 * space.full_cost()
    config = SearchConfig(output=tmp_path, supernet_epochs=1, max_ops=limit, population=3,
                          generations=2, top_k=2, mutations=1, crossovers=1, batch_size=64,
                          image_size=16, limit=128, eval_limit=128, random_baseline=2,
                          recalibration_batches=1, extra={"width": WIDTH})
    result = method.run(config)
    assert result.cost <= limit
    log = json.loads((tmp_path / "search_log.json").read_text())
    assert all(c["cost"] <= limit for g in log["generations"] for c in g["population"])
    assert result.score == max(score for score, _ in log["evaluated"].values())
    model = load("metapruning_mobilenet_v1", arch=result.arch, width=WIDTH, input_shape=SHAPE,
                     num_classes=10)
    assert model_costs(model)["float_macs"] == result.cost
    assert result.extra["cost_metric"] == "FLOPs" and result.extra["width"] == WIDTH
    assert result.extra["unpruned_flops"] == space.full_cost()
    assert json.loads((tmp_path / "result.json").read_text())["arch"] == result.arch


@pytest.mark.parametrize("version, width", [("v1", "1.0"), ("v2", "1.4")])
def test_search_default_width(version, width, tmp_path):
    """Without --set width the search uses MetaPruning's widths (V1 1.0, V2 1.4: at 0.5 the V2
    PruningNet diverged); an impossible limit names the width it was checked at."""
    method = get_search(f"metapruning_mobilenet_{version}")
    with pytest.raises(InvalidInputError, match=rf"at width {width} and input \(28, 28, 3\)"):
        method.run(SearchConfig(output=tmp_path, max_ops=1.0))
    assert not any(tmp_path.iterdir())  # refused before anything was written
