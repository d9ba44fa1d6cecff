"""`zoo import`: released PyTorch checkpoints -> verified weight sets.

The fixtures (tests/fixtures/releases, made by tests/fixtures/make_torch_fixtures.py with
real PyTorch) are each release's network at a reduced width with random weights, saved
as the release is, with PyTorch's block outputs and logits. No torch is needed here.
"""
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import zoo.api as zoo
from conftest import assert_one_error_line, invoke
from zoo.cli import cli
from zoo.errors import WeightsError
from zoo.hub.releases import get_release, imported_manifest_path
from zoo.hub.cache import sha256_file
from zoo.imports import LAYOUTS as LAYOUT_RULES, build_imported, fill
from zoo.imports.mapping import match
from zoo.imports.torch_checkpoint import RefusedPickle, load_checkpoint, read_state_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "releases"
SIZE = 64  # the fixture images' side
# fixture -> (model, source, the Keras layer ending each block: the stem is block 0)
LAYOUTS = {
    "reactnet_a_official": ("reactnet_a", "official"),
    "reactnet_a_adambnn": ("reactnet_a", "adambnn"),
    "reactnet18_official": ("reactnet18", "official"),
    "spos_official": ("spos", "official"),
    # MetaPruning's V1 layout with the genome and width read from the file (the 0.5x and
    # 0.25x releases' way; the 0.75x entry fills the same layers: its full-size key list)
    "metapruning_v1_official": ("metapruning_mobilenet_v1", "0.5x"),
}
# fixture -> (model, source) whose full-size release the key list (*.keys.json) is
FULL_SIZE = {**LAYOUTS, "metapruning_v1_official": ("metapruning_mobilenet_v1_0_75", "official")}
# the genome the MetaPruning fixture was made with (make_torch_fixtures.py: rngs of
# layers 1-12, the stem's last), at 1/8 width, in the zoo's slot order
METAPRUNING_FIXTURE_RNGS = (13, 30, 12, 0, 25, 7, 19, 30, 2, 14, 21, 9, 17)


def _block_ends(model_name):
    if model_name == "spos":
        return ["stem_act"] + [f"layer{i}_concat" for i in range(20)] + ["last_act"]
    if model_name == "metapruning_mobilenet_v1":
        return ["stem_act"] + [f"block{i}_pw_act" for i in range(1, 14)]
    if model_name == "reactnet_a":
        return ["stem_conv_bn"] + [f"block{i}_rprelu2" for i in range(1, 14)]
    return ["stem_pool"] + [f"stage{s}_block{b}_rprelu" for s in range(1, 5) for b in range(1, 5)]


def _nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


def _turn(a):
    return a[:, ::-1, ::-1, :]


def _images(name, torch_arrays, count=None):
    """The fixture's images as the Keras model reads them: NHWC, RGB (SPOS's release
    reads BGR; the imported stem takes RGB)."""
    images = _nhwc(torch_arrays["images"][:count])
    return images[..., ::-1] if name.startswith("spos") else images


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def imported(request):
    """(fixture name, the Keras model filled from the fixture, PyTorch's arrays)."""
    name = request.param
    model_name, source = LAYOUTS[name]
    release = get_release(model_name, source)
    state = read_state_dict(FIXTURES / f"{name}.pth.tar")
    model, _, _ = build_imported(release, {k: v.shape for k, v in state.items()},
                                 input_shape=(SIZE, SIZE, 3))
    fill(model, release, state)
    return name, model, dict(np.load(FIXTURES / f"{name}.npz"))


def test_blocks_match_pytorch(imported):
    """Each block, fed PyTorch's input of that block, gives PyTorch's output (the model
    runs on maps turned by 180 degrees: padding="symmetric")."""
    name, model, torch_arrays = imported
    ends = _block_ends(LAYOUTS[name][0])
    assert len(ends) == sum(k.startswith("block") for k in torch_arrays)
    images = _images(name, torch_arrays, len(torch_arrays["block0"]))
    worst = []
    for i, end in enumerate(ends):
        start = model.input if i == 0 else model.get_layer(ends[i - 1]).output
        block = tf.keras.Model(start, model.get_layer(end).output)
        x = images if i == 0 else _turn(_nhwc(torch_arrays[f"block{i - 1}"]))
        ours = _turn(block.predict(x, verbose=0))
        theirs = _nhwc(torch_arrays[f"block{i}"])
        assert ours.shape == theirs.shape, (end, ours.shape, theirs.shape)
        worst.append(float(np.abs(ours - theirs).max()))
    assert max(worst) <= 1e-4, dict(zip(ends, worst))


def test_end_to_end_same_classes_as_pytorch(imported):
    name, model, torch_arrays = imported
    probs = model.predict(_images(name, torch_arrays), verbose=0)
    logits = torch_arrays["logits"].astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    np.testing.assert_array_equal(probs.argmax(1), logits.argmax(1))
    assert np.corrcoef(np.log(probs).ravel(), log_probs.ravel())[0, 1] >= 0.999


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_release_keys_fill_the_full_size_model(name):
    """The complete key/shape list of each release fills the full-size model: no tensor
    missing, none left over."""
    model_name, source = FULL_SIZE[name]
    release = get_release(model_name, source)
    keys = json.loads((FIXTURES / f"{name}.keys.json").read_text())
    shapes = {k[len("module."):]: tuple(v) for k, v in keys.items()}
    tf.keras.backend.clear_session()
    model, overrides, classes = build_imported(release, shapes, input_shape=(32, 32, 3))
    assert not {"width", "width_multiplier"} & set(overrides) and classes == 1000
    if model_name == "spos":  # the release's architecture, read from the file
        assert overrides["arch"] == "21012020202300003233-" + "4" * 20
    if model_name == "metapruning_mobilenet_v1_0_75":  # the release's genome, in our entry
        assert overrides == {"padding": "symmetric"}
    plan = match(model, LAYOUT_RULES[release.layout][0](model, source), shapes)
    assert len(plan) == len(model.weights)
    used = {rule.key for rule, _ in plan}
    assert {k for k in shapes if not k.endswith("num_batches_tracked")} == used


def test_metapruning_genome_is_read_from_the_file():
    """The 0.5x/0.25x way: each layer's width read from its tensors gives the genome and
    width the fixture was made with (the stem reads the release's last gene); the 0.75x
    release's key list read that way gives the 0.75x entry's widths."""
    from zoo.imports.metapruning import v1_overrides
    from zoo.models.metapruning import V1_0_75_ARCH, network_spec, parse_arch

    state = read_state_dict(FIXTURES / "metapruning_v1_official.pth.tar")
    found = v1_overrides({k: v.shape for k, v in state.items()})
    rngs = METAPRUNING_FIXTURE_RNGS
    spec = network_spec("v1", 0.125)
    wanted = spec.channels([10 + 3 * r for r in (rngs[-1],) + rngs[:-1]])
    width, body = found["arch"].split("x:")
    assert float(width) == 0.125 and found["num_classes"] == 10
    assert spec.channels(parse_arch(body, spec)) == wanted
    # stem: rngs[-1] = 17 -> 61% of 4; layer 1: rngs[0] = 13 -> 49% of 8; layer 2: 100% of 16
    assert wanted[:3] == (2, 3, 16)
    keys = json.loads((FIXTURES / "metapruning_v1_official.keys.json").read_text())
    full = v1_overrides({k[len("module."):]: v for k, v in keys.items()})
    v1 = network_spec("v1")
    assert v1.channels(parse_arch(full["arch"], v1)) == v1.channels(parse_arch(V1_0_75_ARCH, v1))
    # as evaluating/mobilenet_v1.py: the stem at rngs[-1] = 29 (97%), layer 1 at rngs[0] = 28 (94%)
    assert v1.channels(parse_arch(V1_0_75_ARCH, v1))[:2] == (31, 60)


def test_metapruning_refuses_widths_no_ratio_gives():
    from zoo.imports.metapruning import v1_overrides

    keys = json.loads((FIXTURES / "metapruning_v1_official.keys.json").read_text())
    shapes = {k[len("module."):]: tuple(v) for k, v in keys.items()}
    shapes["feature.3.pwconv_1x1.weight"] = (11, 124, 1, 1)  # 128 x 10% floors to 12 at least
    with pytest.raises(WeightsError, match=r"feature\.3\.pwconv_1x1\.weight .* 11 output channels"):
        v1_overrides(shapes)


def test_zoo_import_metapruning_0_75_refuses_another_genome(isolated_weights):
    """The 0.75x entry's genome is fixed: the fixture's file (another genome) is refused
    with the first misfitting tensor and both shapes."""
    result = invoke(cli, "import", "metapruning_mobilenet_v1_0_75",
                    str(FIXTURES / "metapruning_v1_official.pth.tar"))
    assert_one_error_line(result, "'feature.0.conv1.weight' has shape [2, 3, 3, 3]",
                          "[31, 3, 3, 3]")
    assert not imported_manifest_path().exists()


def test_zoo_import_metapruning_v1_then_load_matches_pytorch(isolated_weights):
    """`zoo import metapruning_mobilenet_v1 FILE --source 0.5x`: the record keeps the genome
    read from the file and the release's padding; zoo.load rebuilds that network, which
    gives PyTorch's logits; the 0.75x release is named before its import."""
    with pytest.raises(WeightsError, match=r"70\.9% top-1.*not imported yet.*sharepoint.*"
                                           r"zoo import metapruning_mobilenet_v1_0_75 FILE`"):
        zoo.load("metapruning_mobilenet_v1_0_75", weights="imagenet")
    checkpoint = FIXTURES / "metapruning_v1_official.pth.tar"
    result = invoke(cli, "import", "metapruning_mobilenet_v1", checkpoint, "--source", "0.5x")
    assert result.exit_code == 0, result.stderr
    spec = zoo.get_entry("metapruning_mobilenet_v1").weights["imagenet_0_5x"]
    assert spec.metrics["top1"] == 66.1 and spec.license == "MIT"
    assert spec.model_overrides == {"padding": "symmetric",
                                    "arch": "0.125x:52-40-100-46-10-85-31-67-100-16-52-73-37"}
    torch_arrays = dict(np.load(FIXTURES / "metapruning_v1_official.npz"))
    body = zoo.load("metapruning_mobilenet_v1", weights="imagenet_0_5x", include_top=False,
                    input_shape=(SIZE, SIZE, 3))  # the features turned back: PyTorch's layout
    x = _nhwc(torch_arrays["images"][:len(torch_arrays["block13"])])
    # end to end through 14 blocks (float rounding accumulates: 1.6e-4 measured)
    np.testing.assert_allclose(body.predict(x, verbose=0), _nhwc(torch_arrays["block13"]), atol=1e-3)
    release = get_release("metapruning_mobilenet_v1", "0.5x")
    state = read_state_dict(checkpoint)
    expected, _, _ = build_imported(release, {k: v.shape for k, v in state.items()})
    fill(expected, release, state)
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    loaded = zoo.load("metapruning_mobilenet_v1", weights="imagenet_0_5x")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected.predict(x, verbose=0), atol=1e-6)


def test_tf_same_padding_would_not_match_metapruning_release():
    """The control of padding="symmetric" on MetaPruning's V1: the TF-padded graph with the
    same weights misses PyTorch's stem output and changes classes."""
    from zoo.imports.mapping import transfer
    from zoo.imports.metapruning import v1_overrides, v1_rules

    tf.keras.backend.clear_session()
    state = read_state_dict(FIXTURES / "metapruning_v1_official.pth.tar")
    overrides = v1_overrides({k: v.shape for k, v in state.items()})
    model = zoo.load("metapruning_mobilenet_v1", input_shape=(SIZE, SIZE, 3), **overrides)
    transfer(model, v1_rules(model), state, turn=False)
    torch_arrays = dict(np.load(FIXTURES / "metapruning_v1_official.npz"))
    stem = tf.keras.Model(model.input, model.get_layer("stem_act").output)
    x = _nhwc(torch_arrays["images"])
    diff = np.abs(stem.predict(x[:2], verbose=0) - _nhwc(torch_arrays["block0"]))
    assert diff.max() > 0.5 and np.median(diff) > 0.05
    assert (model.predict(x, verbose=0).argmax(1) != torch_arrays["logits"].argmax(1)).any()


def test_reader_unwraps_state_dict_and_prefix_in_both_formats():
    zipped = FIXTURES / "reactnet_a_official.pth.tar"
    legacy = FIXTURES / "reactnet_a_adambnn.pth.tar"
    assert zipfile.is_zipfile(zipped) and not zipfile.is_zipfile(legacy)
    for path in (zipped, legacy):
        raw = load_checkpoint(path)
        assert set(raw) == {"epoch", "state_dict", "best_top1_acc", "optimizer"}
        assert all(k.startswith("module.") for k in raw["state_dict"])
        state = read_state_dict(path)
        assert list(state) == [k[len("module."):] for k in raw["state_dict"]]
        assert state["feature.0.bn1.num_batches_tracked"].dtype == np.int64
    # the re-released official kernels are exactly +-1, flat [Cout*Cin*k*k, 1]
    official = read_state_dict(zipped)
    kernel = official["feature.1.binary_3x3.weights"]
    assert kernel.shape == (2 * 2 * 9, 1) and set(np.unique(kernel)) == {-1.0, 1.0}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_refuses_a_pickle_that_runs_code_before_running_it(tmp_path, fmt):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": {"x": _Evil(marker)}}, protocol=2)
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as handle:
            handle.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(b"".join(pickle.dumps(v, protocol=2) for v in
                                  (0x1950A86A20F9469CFC6C, 1001, {})) + payload)
    with pytest.raises(RefusedPickle, match=r"calls posix\.system.*not run"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["reactnet_a_official", "reactnet_a_adambnn"])
def test_refuses_a_truncated_file(tmp_path, name):
    data = (FIXTURES / f"{name}.pth.tar").read_bytes()
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(WeightsError, match="truncated"):
        read_state_dict(path)


@pytest.mark.parametrize("args, needles", [
    # ReAct-ResNet-18's file as ReActNet-A: the first key and both shapes
    (["reactnet_a", "reactnet18_official.pth.tar"],
     ["no tensor 'feature.0.conv1.weight'", "[32, 3, 'k', 'k']", "'conv1.weight' [4, 3, 7, 7]"]),
    # the official layout read as AdamBNN's: flat kernels where 4-D ones belong
    (["reactnet_a", "reactnet_a_official.pth.tar", "--source", "adambnn"],
     ["'feature.1.binary_3x3.weight'", "[2, 2, 3, 3]", "'feature.1.binary_3x3.weights' [36, 1]"]),
    (["reactnet18", "reactnet_a_official.pth.tar"], ["'conv1.weight'"]),
    (["reactnet18", "reactnet18_official.pth.tar", "--source", "adambnn"], ["No released checkpoint of reactnet18 from 'adambnn'"]),
    (["birealnet18", "reactnet18_official.pth.tar"], ["No released checkpoint of birealnet18"]),
])
def test_zoo_import_refuses_another_architecture(isolated_weights, args, needles):
    args = [args[0], str(FIXTURES / args[1]), *args[2:]]
    assert_one_error_line(invoke(cli, "import", *args), *needles)
    assert not imported_manifest_path().exists()


def test_zoo_import_then_load_and_refusals(isolated_weights, monkeypatch):
    """Before: one error naming the release page and the command. After: zoo.load gives
    the filled model; the record keeps the checkpoint's hash; a different file under the
    same tag and a damaged weight file are refused."""
    with pytest.raises(WeightsError, match=r"not imported yet.*sharepoint.*zoo import reactnet_a"):
        zoo.load("reactnet_a", weights="imagenet")
    checkpoint = FIXTURES / "reactnet_a_official.pth.tar"
    result = invoke(cli, "import", "reactnet_a", checkpoint)
    assert result.exit_code == 0, result.stderr
    spec = zoo.get_entry("reactnet_a").weights["imagenet"]
    assert spec.release["sha256"] == sha256_file(checkpoint)
    assert spec.release["size"] == checkpoint.stat().st_size
    assert spec.metrics["top1"] == 69.5 and tuple(spec.preprocessing["mean"]) == (0.485, 0.456, 0.406)
    assert spec.model_overrides["padding"] == "symmetric" and len(spec.labels) == 10
    assert "reactnet_a" in zoo.list_models(pretrained=True)

    release = get_release("reactnet_a")
    state = read_state_dict(checkpoint)
    expected, _, _ = build_imported(release, {k: v.shape for k, v in state.items()})
    fill(expected, release, state)
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    loaded = zoo.load("reactnet_a", weights="imagenet")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected.predict(x, verbose=0),
                               atol=1e-6)
    notop = zoo.load("reactnet_a", weights="imagenet", include_top=False, input_shape=(64, 64, 3))
    assert notop.output_shape == (None, 2, 2, 64)  # 1024 channels at 1/16

    # the same file again: nothing to do; another file under the same tag: refused
    assert invoke(cli, "import", "reactnet_a", checkpoint).exit_code == 0
    other = FIXTURES / "reactnet_a_adambnn.pth.tar"
    assert_one_error_line(invoke(cli, "import", "reactnet_a", other, "--tag", "imagenet",
                                 "--source", "adambnn"),
                          "reactnet_a.imagenet was imported from another file",
                          sha256_file(other))
    # a weight file whose sha256 no longer matches its record is not loaded
    top = imported_manifest_path().parent / spec.top.file
    data = bytearray(top.read_bytes())
    data[len(data) // 2] ^= 0xFF
    top.write_bytes(bytes(data))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError, match=spec.top.file):
        zoo.load("reactnet_a", weights="imagenet")


def test_birealnet18_imagenet_is_larq_zoos_release_and_its_layers_match(tmp_path):
    """birealnet18.imagenet is larq-zoo's Bi-Real Net file (same URL and sha256); larq-zoo's
    network with random weights, saved and loaded into birealnet18, gives identical outputs."""
    import larq_zoo

    ours = zoo.get_entry("birealnet18").weights["imagenet"]
    theirs = zoo.get_entry("larq_zoo_birealnet").weights["imagenet"]
    assert ours.files() == theirs.files() and ours.top.sha256.startswith("6e6efac1")
    tf.keras.backend.clear_session()
    reference = larq_zoo.literature.BiRealNet(weights=None, input_shape=(32, 32, 3), num_classes=10)
    rng = np.random.default_rng(3)
    for weight in reference.weights:
        shape, name = tuple(weight.shape), weight.name
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0, 0.2, shape)
        weight.assign(value.astype(np.float32))
    path = tmp_path / "birealnet.h5"
    reference.save_weights(str(path))
    model = zoo.load("birealnet18", weights=str(path), input_shape=(32, 32, 3), num_classes=10)
    x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0),
                               rtol=0, atol=1e-6)


def test_imported_reactnet_a_converts_with_every_binary_conv_native(tmp_path):
    """The imported (reduced) ReActNet-A in LCE: every binary conv is an LceBconv2d (the
    180-degree turn keeps them "same" convs), and LCE predicts Keras' classes."""
    from zoo import deploy
    from zoo.costs import model_costs

    tf.keras.backend.clear_session()
    release = get_release("reactnet_a")
    state = read_state_dict(FIXTURES / "reactnet_a_official.pth.tar")
    model, _, _ = build_imported(release, {k: v.shape for k, v in state.items()},
                                 input_shape=(SIZE, SIZE, 3))
    fill(model, release, state)
    flatbuffer = deploy.convert(model)
    census = deploy.op_census(flatbuffer)
    binary_convs = [layer for layer in model.layers if type(layer).__name__ == "QuantConv2D"]
    assert len(binary_convs) == 13 + 18  # a 3x3 per block, a 1x1 or two (doubling) per block
    assert census["op_counts"]["LceBconv2d"] == len(binary_convs)
    assert census["binary_macs"] == model_costs(model)["binary_macs"]
    x = _nhwc(dict(np.load(FIXTURES / "reactnet_a_official.npz"))["images"])
    np.testing.assert_array_equal(deploy.predict(flatbuffer, x).argmax(1),
                                  model.predict(x, verbose=0).argmax(1))


def test_tf_same_padding_would_not_match_the_release():
    """The control of padding="symmetric": the same weights in the TF-padded graph miss
    PyTorch's stem output (TF pads the 7x7/2 conv 2 before and 3 after, PyTorch 3 and 2
    on an even input, so every strided window sits one pixel off)."""
    from zoo.imports.mapping import transfer
    from zoo.imports.reactnet import resnet18_rules

    tf.keras.backend.clear_session()
    state = read_state_dict(FIXTURES / "reactnet18_official.pth.tar")
    model = zoo.load("reactnet18", input_shape=(SIZE, SIZE, 3), num_classes=10,
                     width_multiplier=1 / 16)
    transfer(model, resnet18_rules(model), state, turn=False)
    torch_arrays = dict(np.load(FIXTURES / "reactnet18_official.npz"))
    stem = tf.keras.Model(model.input, model.get_layer("stem_pool").output)
    x = _nhwc(torch_arrays["images"][: len(torch_arrays["block0"])])
    diff = np.abs(stem.predict(x, verbose=0) - _nhwc(torch_arrays["block0"]))
    assert diff.max() > 0.5 and np.median(diff) > 0.05


def test_imagenet_class_names_ship_with_the_package():
    from zoo.preprocessing import decode_predictions, imagenet_labels

    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) > 990
    assert (labels[0], labels[1], labels[999]) == ("tench", "goldfish", "toilet tissue")
    preds = np.full((1, 1000), 1e-4)
    preds[0, 1], preds[0, 0] = 0.7, 0.2
    assert [name for name, _ in decode_predictions(preds, top=2)[0]] == ["goldfish", "tench"]
