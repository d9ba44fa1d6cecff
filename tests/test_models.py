"""Every registered model builds, runs, trains a step and survives save / load round trips."""
import numpy as np
import pytest
from conftest import model_names

import zoo
import larq as lq
import larq_zoo as lqz
import tensorflow as tf

from zoo.costs import model_costs

NUM_CLASSES = 10
BATCH = 2

# larq-zoo models whose full-model h5 file tf.keras.models.load_model cannot read back
# (zoo bug, see the report): plain functions used as quantizer / initializer
# (QuickNet's blurpool_initializer, DoReFa-Net's magnitude_aware_sign_unclipped,
# XNOR-Net's xnor_weight_scale), an unregistered Model subclass (BinaryDenseNet) and
# Python lambdas (MeliusNet). Their weights-only round trip is still checked: the strict
# xfail takes only the full-model load's failure (FullH5DoesNotLoad), and fixing one fails
# the suite until it is removed here.
FULL_H5_BROKEN = {
    "quicknet", "quicknet_small", "quicknet_large", "dorefanet", "xnornet", "meliusnet22",
    "binary_densenet28", "binary_densenet37", "binary_densenet37_dilated", "binary_densenet45",
}


class FullH5DoesNotLoad(Exception):
    """``tf.keras.models.load_model`` cannot read back a full-model h5 file."""


def _round_trip_params():
    params = []
    for name in model_names():
        marks = []
        if name in FULL_H5_BROKEN:
            marks.append(pytest.mark.xfail(strict=True, raises=FullH5DoesNotLoad,
                                           reason=f"zoo bug: full-model h5 of {name} does not load"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(autouse=True)
def _fresh(fresh_session):
    """A clean Keras session and seed for every test (conftest.fresh_session)."""


def _predict(model, x):
    return model(x, training=False).numpy()


@pytest.mark.parametrize("name", _round_trip_params())
def test_model_build_forward_train_save_load(name, tmp_path):
    entry = zoo.get_entry(name)
    size = max(32, entry.min_input_size)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(BATCH, size, size, 3)).astype(np.float32)
    y = np.array([1, 7])

    model = zoo.load(name, input_shape=(size, size, 3), num_classes=NUM_CLASSES)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, NUM_CLASSES)

    # forward: softmax probabilities
    probs = _predict(model, x)
    assert probs.shape == (BATCH, NUM_CLASSES)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # one training step moves at least one trainable weight
    model.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,  # same gradients, no minutes-long graph tracing of the deep nets
    )
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss) and loss > 0
    after = [w.numpy() for w in model.trainable_weights]
    assert len(before) > 0
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))

    reference = _predict(model, x)
    assert np.all(np.isfinite(reference))

    # weights-only h5 round trip into a freshly built model
    weights_path = tmp_path / "w.h5"
    model.save_weights(str(weights_path))
    trained = model.get_weights()
    fresh = zoo.load(name, input_shape=(size, size, 3), num_classes=NUM_CLASSES)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), trained))
    fresh.load_weights(str(weights_path))
    assert len(fresh.get_weights()) == len(trained)
    for a, b in zip(fresh.get_weights(), trained):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(_predict(fresh, x), reference, rtol=1e-5, atol=1e-6)
    del fresh

    weights_path.unlink()  # the deepest nets' files take hundreds of MB each

    # full-model h5 round trip (larq's and zoo's custom objects are registered globally)
    model_path = tmp_path / "m.h5"
    model.save(str(model_path), include_optimizer=False)
    try:
        restored = tf.keras.models.load_model(str(model_path), compile=False)
    except (TypeError, ValueError) as error:  # everything above passed: only this step failed
        raise FullH5DoesNotLoad(f"full-model h5 of {name} does not load: "
                                f"{str(error).splitlines()[0][:200]}") from error
    finally:
        model_path.unlink()
    assert restored.count_params() == model.count_params()
    for a, b in zip(restored.get_weights(), trained):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(_predict(restored, x), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, channels", [("birealnet18", 512), ("birealnet50", 2048), ("quicknet", None)])
def test_include_top_false_returns_feature_map(name, channels):
    model = zoo.load(name, include_top=False, input_shape=(64, 64, 3), num_classes=NUM_CLASSES)
    assert len(model.output_shape) == 4
    batch, height, width, depth = model.output_shape
    assert batch is None and height == width == 2  # /32
    if channels is not None:
        assert depth == channels
    features = model(np.zeros((1, 64, 64, 3), np.float32), training=False)
    assert features.shape[1:] == model.output_shape[1:]
    assert not any(isinstance(layer, tf.keras.layers.Dense) for layer in model.layers)


def test_input_tensor():
    inputs = tf.keras.Input((32, 32, 3))
    model = zoo.load("birealnet18", input_tensor=inputs, num_classes=10)
    assert model.inputs[0] is inputs
    assert model.output_shape == (None, 10)
    out = model(np.ones((3, 32, 32, 3), np.float32), training=False).numpy()
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", zoo.list_models())
def test_too_small_input_raises(name):
    low = zoo.get_entry(name).min_input_size
    for shape in [(low - 1, low - 1, 3), (low, low - 1, 3), (low - 1, 2 * low, 3)]:
        with pytest.raises(zoo.InvalidInputError, match="too small"):
            zoo.load(name, input_shape=shape, num_classes=10)


@pytest.mark.parametrize("name", model_names(at_min_size=True))
def test_builds_at_declared_min_input_size(name):
    """``min_input_size`` is the smallest input the entry accepts: it must also build there
    (an entry declaring less than its architecture needs fails here; e.g. XNOR-Net's last
    6x6 valid conv after a /4 stem and three 3x3/2 valid max-pools needs >= 217, QuickNet's
    blur-pool transitions >= 29)."""
    low = zoo.get_entry(name).min_input_size
    model = zoo.load(name, input_shape=(low, low, 3), num_classes=10)
    out = model(np.zeros((1, low, low, 3), np.float32), training=False).numpy()
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_birealnet18_too_small_input_raises():
    with pytest.raises(zoo.InvalidInputError, match="too small"):
        zoo.load("birealnet18", input_shape=(8, 8, 3), num_classes=10)


@pytest.mark.parametrize("name", ["birealnet18", "quicknet"])
@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 3, 1)])
def test_wrong_rank_input_shape_raises(name, shape):
    with pytest.raises(zoo.InvalidInputError, match="height, width, channels"):
        zoo.load(name, input_shape=shape, num_classes=10)


def test_bad_num_classes_raises():
    with pytest.raises(zoo.InvalidInputError):
        zoo.load("birealnet18", input_shape=(32, 32, 3), num_classes=0)


def test_unknown_model_raises():
    with pytest.raises(zoo.UnknownNameError, match="birealnet18"):
        zoo.load("birealnet81")
    with pytest.raises(zoo.UnknownNameError):
        zoo.load("no_such_model_at_all")


def test_alias_loads_the_same_architecture():
    a = zoo.load("birealnet", input_shape=(32, 32, 3), num_classes=10)
    b = zoo.load("birealnet18", input_shape=(32, 32, 3), num_classes=10)
    assert a.name == b.name == "birealnet18"
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]


@pytest.mark.parametrize("shape, classes, expected", [
    ((32, 32, 3), 10, 11191242),
    ((64, 64, 3), 1000, 11699112),
])
def test_birealnet18_params_match_larq_zoo(shape, classes, expected):
    ours = zoo.load("birealnet18", input_shape=shape, num_classes=classes).count_params()
    theirs = lqz.literature.BiRealNet(weights=None, input_shape=shape, num_classes=classes).count_params()
    assert ours == theirs == expected


def test_single_channel_input():
    model = zoo.load("birealnet18", input_shape=(32, 32, 1), num_classes=10)
    assert model.input_shape == (None, 32, 32, 1)
    first_conv = next(l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D))
    assert tuple(first_conv.kernel.shape) == (7, 7, 1, 64)
    out = model(np.zeros((2, 32, 32, 1), np.float32), training=False).numpy()
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_real_valued_variant_shares_weights_with_binary():
    shape = (32, 32, 3)
    binary = zoo.load("birealnet18", input_shape=shape, num_classes=10)
    real = zoo.load("birealnet18", input_shape=shape, num_classes=10,
                    activation="clip", binary_weights=False)
    assert [tuple(w.shape) for w in real.weights] == [tuple(w.shape) for w in binary.weights]
    assert [w.trainable for w in real.weights] == [w.trainable for w in binary.weights]

    quant_convs = [l for l in real.layers if isinstance(l, lq.layers.QuantConv2D)]
    assert len(quant_convs) == 16
    for conv in quant_convs:
        assert isinstance(conv.input_quantizer, zoo.layers.Clip) and conv.input_quantizer.slope == 0
        assert conv.kernel_quantizer is None

    # weights transfer one to one: pre-trained real net -> binary net
    x = np.random.default_rng(1).uniform(-1, 1, (2,) + shape).astype(np.float32)
    binary.set_weights(real.get_weights())
    for a, b in zip(binary.get_weights(), real.get_weights()):
        np.testing.assert_array_equal(a, b)
    # same weights, different activations: the outputs differ
    assert not np.allclose(binary(x, training=False).numpy(), real(x, training=False).numpy(), atol=1e-6)

    real_costs, binary_costs = model_costs(real), model_costs(binary)
    assert real_costs["binary_macs"] == 0
    assert real_costs["binary_params"] == 0
    assert real_costs["params"] == binary_costs["params"]
    assert binary_costs["binary_macs"] > 0
    # the same MACs, all of them float in the real-valued variant
    assert real_costs["float_macs"] == binary_costs["float_macs"] + binary_costs["binary_macs"]


def test_leaky_clip_variant_builds():
    model = zoo.load("birealnet18", input_shape=(32, 32, 3), num_classes=10, activation="leaky_clip")
    slopes = {l.input_quantizer.slope for l in model.layers if isinstance(l, lq.layers.QuantConv2D)}
    assert slopes == {0.1}
    with pytest.raises(ValueError, match="activation"):
        zoo.load("birealnet18", input_shape=(32, 32, 3), num_classes=10, activation="tanh")


def test_input_multiple_is_enforced_and_the_pipeline_pads_to_it():
    from zoo import data as zdata
    from zoo.errors import InvalidInputError

    entry = zoo.get_entry("binary_resnet_e18")
    assert entry.input_multiple == 8
    with pytest.raises(InvalidInputError, match="divisible by 8 .*32x32"):
        zoo.load("binary_resnet_e18", input_shape=(28, 28, 3), num_classes=10)
    fmnist = zdata.get_dataset("fashion_mnist")
    assert zdata.input_shape_for(fmnist, entry) == (32, 32, 3)
    assert zdata.input_shape_for(fmnist, zoo.get_entry("birealnet18")) == (28, 28, 3)
    model = zoo.load("binary_resnet_e18", input_shape=(40, 40, 3), num_classes=10)
    assert model.output_shape == (None, 10)


def _binary_convs(model):
    return [layer for layer in model.layers if isinstance(layer, lq.layers.QuantConv2D)
            and layer.input_quantizer is not None]


def test_birealnet_ablation_plain_resnet_has_one_shortcut_per_two_convs():
    shape = (32, 32, 3)
    bireal = zoo.load("birealnet18", input_shape=shape, num_classes=10)
    plain = zoo.load("birealnet18", input_shape=shape, num_classes=10, shortcut="per_two_convs")
    adds = lambda m: sum(isinstance(layer, tf.keras.layers.Add) for layer in m.layers)  # noqa: E731
    assert (adds(bireal), adds(plain)) == (16, 8)  # 16 binary convs either way
    assert len(_binary_convs(bireal)) == len(_binary_convs(plain)) == 16
    assert bireal.count_params() == plain.count_params()
    # the plain ResNet's first block: the second conv reads the first one's BN output
    convs = _binary_convs(plain)
    assert isinstance(convs[1].input.node.layer, tf.keras.layers.BatchNormalization)
    assert isinstance(_binary_convs(bireal)[1].input.node.layer, tf.keras.layers.Add)
    with pytest.raises(ValueError, match="per_two_convs"):
        zoo.load("birealnet50", input_shape=shape, num_classes=10, shortcut="per_two_convs")


def test_birealnet_ablation_ste_sign_activation_and_plain_sign_weights():
    shape = (32, 32, 3)
    model = zoo.load("birealnet18", input_shape=shape, num_classes=10, activation="ste_sign",
                     binary_weights="sign")
    conv = _binary_convs(model)[0]
    assert isinstance(conv.input_quantizer, lq.quantizers.SteSign)
    assert isinstance(conv.kernel_quantizer, lq.quantizers.SteSign)
    # straight-through gradient 1 at |x| = 0.25, ApproxSign's is 2 - 2 * 0.25 = 1.5
    x = tf.constant([0.25, -0.25, 2.0])
    for quantizer, expected in ((conv.input_quantizer, [1.0, 1.0, 0.0]),
                                (lq.quantizers.ApproxSign(), [1.5, 1.5, 0.0])):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = quantizer(x)
        np.testing.assert_allclose(tape.gradient(y, x).numpy(), expected)
    # plain sign weights are +-1; the magnitude-aware ones are scaled by mean |W| per channel
    kernel = tf.constant(conv.kernel.numpy())
    np.testing.assert_array_equal(np.abs(conv.kernel_quantizer(kernel).numpy()), 1.0)
    scaled = lq.quantizers.MagnitudeAwareSign()(kernel).numpy()
    np.testing.assert_allclose(np.abs(scaled)[..., 0], np.mean(np.abs(kernel.numpy()[..., 0])),
                               rtol=1e-5)
