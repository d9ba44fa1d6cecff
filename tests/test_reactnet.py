"""ReActNet (arXiv 2003.03488): RSign / RPReLU layers, the four models, their OPs."""
import numpy as np
import pytest

import zoo  # noqa: F401  (before tensorflow)
import larq as lq
import tensorflow as tf

from zoo.costs import model_costs
from zoo.layers import RPReLU, RSign


@pytest.fixture(autouse=True)
def _fresh(fresh_session):
    """A clean Keras session and seed for every test (conftest.fresh_session)."""


def _grads(layer, x, upstream, variables):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x] + [getattr(layer, v) for v in variables])
    return y.numpy(), [g.numpy() for g in grads]


# ---------------------------------------------------------------------------------- RSign

# 3 positions x 2 channels; shifts b = (0.5, -0.25) -> z = x + b:
#   channel 0: x (-2, -0.5, 0.25)  -> z (-1.5, 0, 0.75)    -> sign (-1, +1, +1), dsign/dz (0, 2, 0.5)
#   channel 1: x (0, 0.5, 1.5)     -> z (-0.25, 0.25, 1.25) -> sign (-1, +1, +1), dsign/dz (1.5, 1.5, 0)
RSIGN_X = np.array([[-2.0, 0.0], [-0.5, 0.5], [0.25, 1.5]], np.float32)
RSIGN_B = np.array([0.5, -0.25], np.float32)
UPSTREAM = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)


def test_rsign_forward_and_gradients():
    layer = RSign()
    layer.build(RSIGN_X.shape)
    layer.bias.assign(RSIGN_B)
    y, (dx, db) = _grads(layer, RSIGN_X, UPSTREAM, ["bias"])
    # sign(x + b) with sign(0) = +1
    np.testing.assert_array_equal(y, [[-1, -1], [1, 1], [1, 1]])
    # ApproxSign gradient 2 - 2|x + b| on |x + b| < 1, times the upstream gradient
    np.testing.assert_allclose(dx, [[0 * 1, 1.5 * 2], [2 * 3, 1.5 * 4], [0.5 * 5, 0 * 6]], atol=1e-6)
    np.testing.assert_allclose(dx, [[0, 3], [6, 6], [2.5, 0]], atol=1e-6)
    # d/db: the same, summed over the positions of each channel
    np.testing.assert_allclose(db, [8.5, 9.0], atol=1e-6)


def test_rsign_defaults():
    layer = RSign()
    assert layer.precision == RSign.precision == 1
    x = tf.constant([[[[-0.3, 0.0, 2.0]]]])
    np.testing.assert_array_equal(layer(x).numpy(), [[[[-1, 1, 1]]]])  # shift 0: plain sign
    assert [w.name.split("/")[-1] for w in layer.weights] == ["bias:0"]
    assert layer.trainable_weights[0].shape == (3,)
    np.testing.assert_array_equal(layer.bias.numpy(), 0)


def test_rsign_as_input_quantizer_is_built_trained_and_counted_binary():
    inputs = tf.keras.Input((6, 6, 4))
    conv = lq.layers.QuantConv2D(8, 3, padding="same", use_bias=False, input_quantizer=RSign(),
                                 kernel_quantizer="magnitude_aware_sign",
                                 kernel_constraint="weight_clip")
    model = tf.keras.Model(inputs, conv(inputs))
    # the shift is a trainable weight of the conv, after its kernel
    assert [tuple(w.shape) for w in conv.trainable_weights] == [(3, 3, 4, 8), (4,)]
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)
    costs = model_costs(model)
    assert costs["binary_macs"] == 3 * 3 * 4 * 8 * 6 * 6
    assert costs["float_macs"] == 0  # the shift is not mistaken for a kernel
    assert costs["binary_params"] == 3 * 3 * 4 * 8 and costs["real_params"] == 4


def test_rsign_config_round_trip(tmp_path):
    layer = RSign(bias_initializer=tf.keras.initializers.Constant(0.3), name="rs")
    config = layer.get_config()
    clone = RSign.from_config(config)
    assert clone.name == "rs"
    x = tf.constant([[-0.2, -0.4]])
    np.testing.assert_array_equal(clone(x).numpy(), [[1, -1]])  # shift 0.3 from the initializer
    assert tf.keras.utils.get_registered_name(RSign) == "zoo>RSign"
    restored = tf.keras.utils.deserialize_keras_object(tf.keras.utils.serialize_keras_object(layer))
    assert isinstance(restored, RSign)
    # as a QuantConv2D input quantizer: config and full-model h5 round trips
    conv = lq.layers.QuantConv2D(2, 1, input_quantizer=RSign(), use_bias=False)
    assert isinstance(lq.layers.QuantConv2D.from_config(conv.get_config()).input_quantizer, RSign)
    inputs = tf.keras.Input((3, 3, 2))
    model = tf.keras.Model(inputs, conv(inputs))
    conv.input_quantizer.bias.assign([0.75, -0.5])
    path = str(tmp_path / "m.h5")
    model.save(path)
    loaded = tf.keras.models.load_model(path, compile=False)
    assert isinstance(loaded.layers[1].input_quantizer, RSign)
    np.testing.assert_array_equal(loaded.layers[1].input_quantizer.bias.numpy(), [0.75, -0.5])
    xs = np.random.default_rng(2).normal(size=(2, 3, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded(xs).numpy(), model(xs).numpy())


# --------------------------------------------------------------------------------- RPReLU

def _rprelu(bias_in, alpha, bias_out):
    layer = RPReLU()
    layer.build((None, 2))
    layer.bias_in.assign(bias_in)
    layer.alpha.assign(alpha)
    layer.bias_out.assign(bias_out)
    return layer


def test_rprelu_values_and_gradients():
    # channel 0: b_in 0.5, slope 0.25, b_out 1;  channel 1: b_in -1, slope 0.1, b_out -2
    layer = _rprelu([0.5, -1.0], [0.25, 0.1], [1.0, -2.0])
    x = np.array([[-2.5, 3.0], [1.0, -1.0]], np.float32)
    # z = x + b_in: ch0 (-2, 1.5), ch1 (2, -2) -> PReLU: ch0 (-0.5, 1.5), ch1 (2, -0.2) -> + b_out
    y, (dx, d_in, d_alpha, d_out) = _grads(layer, x, np.ones_like(x),
                                           ["bias_in", "alpha", "bias_out"])
    np.testing.assert_allclose(y, [[0.5, 0.0], [2.5, -2.2]], atol=1e-6)
    np.testing.assert_allclose(dx, [[0.25, 1.0], [1.0, 0.1]], atol=1e-6)  # 1 or the slope
    np.testing.assert_allclose(d_in, [1.25, 1.1], atol=1e-6)
    np.testing.assert_allclose(d_alpha, [-2.0, -2.0], atol=1e-6)  # sum of z over z <= 0
    np.testing.assert_allclose(d_out, [2.0, 2.0], atol=1e-6)


def test_rprelu_defaults_match_prelu_with_slope_quarter():
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype(np.float32)
    layer = RPReLU()
    out = layer(x).numpy()
    np.testing.assert_allclose(out, np.where(x > 0, x, 0.25 * x), atol=1e-6)
    # one value per channel, shared over H and W: shift, slope, shift
    assert [w.name.split("/")[-1] for w in layer.weights] == ["bias_in:0", "alpha:0", "bias_out:0"]
    assert all(tuple(w.shape) == (3,) for w in layer.weights)


def test_rprelu_config_round_trip():
    layer = RPReLU(alpha_initializer=0.1, name="rp")
    clone = RPReLU.from_config(layer.get_config())
    assert clone.name == "rp"
    x = tf.constant([[-1.0, 2.0]])
    np.testing.assert_allclose(clone(x).numpy(), [[-0.1, 2.0]], atol=1e-6)
    assert tf.keras.utils.get_registered_name(RPReLU) == "zoo>RPReLU"
    restored = tf.keras.utils.deserialize_keras_object(tf.keras.utils.serialize_keras_object(clone))
    np.testing.assert_allclose(restored(x).numpy(), [[-0.1, 2.0]], atol=1e-6)


# --------------------------------------------------------------------------------- models

def _reactnet_a_macs(size=224, num_classes=1000):
    """Binary / float MACs of ReActNet-A counted by hand from the official layout."""
    widths = [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024] * 2
    side = size // 2
    float_macs = 3 * 3 * 3 * 32 * side * side + widths[-1] * num_classes  # stem + FC
    binary_macs = 0
    for prev, width in zip(widths, widths[1:]):
        if width != prev and width != 64:
            side //= 2
        binary_macs += 3 * 3 * prev * prev * side * side  # 3x3, C_in -> C_in
        binary_macs += prev * width * side * side  # one 1x1 C -> C, or two 1x1 C -> C
    return binary_macs, float_macs


def test_reactnet_a_ops_at_224():
    costs = zoo.info("reactnet_a")["costs"]
    assert costs["ops"] == pytest.approx(0.87e8, rel=0.02)  # official README / paper
    binary_macs, float_macs = _reactnet_a_macs()
    assert costs["binary_macs"] == binary_macs == 4_816_896_000  # README: 4.82e9 BOPs
    assert costs["float_macs"] == float_macs == 11_862_016  # README: 0.12e8 FLOPs


def test_reactnet18_ops_at_224():
    costs = zoo.info("reactnet18")["costs"]
    assert costs["ops"] == pytest.approx(1.63e8, rel=0.02)  # official README
    # Bi-Real-18's counts: 16 binary 3x3 convs; stem 7x7, 3 real 1x1 shortcuts and FC
    assert costs["binary_macs"] == 1_676_279_808
    assert costs["float_macs"] == 118_013_952 + 3 * 6_422_528 + 512_000


def _layers(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


@pytest.mark.parametrize("name, groups", [("reactnet_a", None), ("reactnet_b", 4), ("reactnet_c", 1)])
def test_mobilenet_variants_structure(name, groups):
    model = zoo.load(name, input_shape=(32, 32, 3), num_classes=10)
    quant = _layers(model, lq.layers.QuantConv2D)
    real = _layers(model, tf.keras.layers.Conv2D)
    # 13 blocks: 13 binary 3x3 convs, 8 blocks keep the width (one 1x1), 5 double it (two 1x1)
    assert sum(c.kernel_size == (3, 3) for c in quant) == 13
    assert all(isinstance(c.input_quantizer, RSign) for c in quant if c.kernel_size == (3, 3))
    assert all(c.kernel_quantizer.__class__.__name__ == "MagnitudeAwareSign" for c in quant)
    assert len(_layers(model, RPReLU)) == 26
    assert model.get_layer("stem_conv").kernel_size == (3, 3)
    assert model.get_layer("stem_conv").strides == (2, 2)
    assert model.output_shape == (None, 10)
    if groups is None:  # A: 8 + 2 * 5 binary 1x1 convs; the doubling pairs share one RSign
        assert len(quant) == 13 + 8 + 10 and len(real) == 1
        assert len(_layers(model, RSign)) == 5
        shared = [c for c in quant if isinstance(c.input_quantizer, lq.quantizers.NoOp)]
        assert len(shared) == 10 and all(c.input_quantizer.precision == 1 for c in shared)
    else:  # B / C: the doubling blocks' 10 1x1 convs are real, 4-group (B) or full (C)
        assert len(quant) == 13 + 8 and len(real) == 1 + 10
        assert sorted({c.groups for c in real[1:]}) == [groups]
        assert not _layers(model, RSign)


def test_reactnet_a_small_train_step_and_weights_round_trip(tmp_path):
    model = zoo.load("reactnet_a", input_shape=(32, 32, 3), num_classes=10)
    assert model.name == "reactnet_a"
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
    y = np.array([3, 8])

    # every trainable weight gets a gradient, RSign shifts and RPReLU parameters included
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    names = [w.name for w in model.trainable_weights]
    assert all(g is not None for g in grads), [n for n, g in zip(names, grads) if g is None]
    rsigns = _layers(model, RSign) + [c.input_quantizer for c in _layers(model, lq.layers.QuantConv2D)
                                      if isinstance(c.input_quantizer, RSign)]
    shifts = {id(layer.bias) for layer in rsigns}
    assert len(shifts) == 26  # 13 before the 3x3 convs, 13 before the 1x1 convs
    nonzero = {id(w) for w, g in zip(model.trainable_weights, grads) if np.any(g.numpy() != 0)}
    assert shifts <= nonzero
    assert sum(name.endswith("alpha:0") for name in names) == 26

    # one Adam step moves the weights that got a non-zero gradient
    before = [w.numpy().copy() for w in model.trainable_weights]
    tf.keras.optimizers.legacy.Adam(1e-3).apply_gradients(zip(grads, model.trainable_weights))
    after = [w.numpy() for w in model.trainable_weights]
    moved = {id(w) for w, b, a in zip(model.trainable_weights, before, after) if not np.array_equal(b, a)}
    assert shifts <= moved <= nonzero and len(moved) > len(before) // 2
    assert np.isfinite(model(x, training=False).numpy()).all()
    reference = model(x, training=False).numpy()

    path = str(tmp_path / "w.h5")
    model.save_weights(path)
    fresh = zoo.load("reactnet_a", input_shape=(32, 32, 3), num_classes=10)
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh(x, training=False).numpy(), reference)


@pytest.mark.parametrize("name", ["reactnet_a", "reactnet18"])
def test_step1_real_weights_transfer_to_binary(name):
    shape = (32, 32, 3)
    binary = zoo.load(name, input_shape=shape, num_classes=10)
    step1 = zoo.load(name, input_shape=shape, num_classes=10, binary_weights=False)
    # the same weight tensors, in the same order: step 1 initialises step 2 completely
    assert [tuple(w.shape) for w in step1.weights] == [tuple(w.shape) for w in binary.weights]
    assert [w.trainable for w in step1.weights] == [w.trainable for w in binary.weights]
    assert [w.name.split("/")[-1] for w in step1.weights] == [w.name.split("/")[-1] for w in binary.weights]
    for conv in _layers(step1, lq.layers.QuantConv2D):
        assert conv.kernel_quantizer is None and conv.kernel_constraint is None
        assert conv.input_quantizer.precision == 1  # activations stay binary in step 1
    binary.set_weights(step1.get_weights())
    for a, b in zip(binary.get_weights(), step1.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model_costs(step1)["binary_params"] == 0
    assert model_costs(binary)["binary_params"] > 0
    with pytest.raises(ValueError, match="binary_weights"):
        zoo.load(name, input_shape=shape, num_classes=10, binary_weights="latent_free")


def test_reactnet_alias_and_registry():
    model = zoo.load("reactnet", input_shape=(32, 32, 3), num_classes=10)
    assert model.name == "reactnet_a"
    entry = zoo.get_entry("reactnet")
    assert entry.name == "reactnet_a"
    for name in ("reactnet_a", "reactnet_b", "reactnet_c", "reactnet18"):
        entry = zoo.get_entry(name)
        assert entry.family == "reactnet"
        assert entry.paper.arxiv == "2003.03488"
        assert entry.default_recipe == "reactnet_two_step"
        assert entry.min_input_size == 16
        assert "top1" in entry.reported["imagenet2012"]
    assert zoo.list_models("reactnet*") == ["reactnet18", "reactnet_a", "reactnet_b", "reactnet_c"]


def test_reactnet18_structure_and_smallest_input():
    model = zoo.load("reactnet18", input_shape=(16, 16, 3), num_classes=10)
    quant = _layers(model, lq.layers.QuantConv2D)
    assert len(quant) == 16 and all(isinstance(c.input_quantizer, RSign) for c in quant)
    assert len(_layers(model, RPReLU)) == 16
    assert [c.kernel_size for c in _layers(model, tf.keras.layers.Conv2D)] == [(7, 7)] + [(1, 1)] * 3
    out = model(np.zeros((1, 16, 16, 3), np.float32), training=False).numpy()
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-5)
    with pytest.raises(zoo.InvalidInputError, match="too small"):
        zoo.load("reactnet_a", input_shape=(15, 15, 3), num_classes=10)


def test_two_step_transfer_moves_every_step1_kernel_into_step2():
    """The loop's transfer (zoo.training.transfer_weights) carries every trained step-1
    conv kernel into step 2 (the official MobileNet code silently drops them)."""
    from zoo.training import transfer_weights

    shape = (32, 32, 3)
    step1 = zoo.load("reactnet_a", input_shape=shape, num_classes=10, binary_weights=False)
    rng = np.random.RandomState(0)
    step1.set_weights([rng.randn(*w.shape).astype("float32") for w in step1.get_weights()])
    step2 = zoo.load("reactnet_a", input_shape=shape, num_classes=10)
    assert transfer_weights(step1, step2) == len(step2.weights)
    convs1 = _layers(step1, lq.layers.QuantConv2D)
    convs2 = _layers(step2, lq.layers.QuantConv2D)
    # 13 binary 3x3 convs + 1x1 convs: one in 8 blocks, two in the 5 channel-doubling ones
    assert len(convs1) == len(convs2) == 13 + 8 + 2 * 5
    for a, b in zip(convs1, convs2):
        np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())


def test_release_switch_resets_only_the_binary_kernels_after_the_transfer():
    """reset_binary_kernels (a stage field) reproduces the released MobileNet step 2, whose
    strict=False load leaves the binary kernels at their fresh initialisation."""
    from zoo.layers import reset_binary_kernels
    from zoo.training import transfer_weights
    from zoo.training.recipes import get_recipe

    assert get_recipe("reactnet_two_step").stages[1].reset_binary_kernels is False  # paper, AdamBNN
    assert get_recipe("reactnet_two_step").resolve(
        stage_overrides={"reset_binary_kernels": True}).stages[1].reset_binary_kernels is True
    shape = (32, 32, 3)
    step1 = zoo.load("reactnet_a", input_shape=shape, num_classes=10, binary_weights=False)
    rng = np.random.RandomState(0)
    step1.set_weights([rng.randn(*w.shape).astype("float32") + 5.0 for w in step1.get_weights()])
    step2 = zoo.load("reactnet_a", input_shape=shape, num_classes=10)
    transfer_weights(step1, step2)
    assert reset_binary_kernels(step2) == 13 + 8 + 2 * 5
    binary = {id(l.kernel) for l in _layers(step2, lq.layers.QuantConv2D)}
    for before, after in zip(step1.weights, step2.weights):
        if id(after) in binary:  # fresh draws around 0, not the transferred values around 5
            assert abs(float(np.mean(after.numpy()))) < 0.5
        else:
            np.testing.assert_array_equal(before.numpy(), after.numpy())


@pytest.mark.parametrize("name", ["reactnet18", "reactnet_a"])
def test_sign_prelu_baseline_drops_only_the_learnable_shifts(name):
    shape = (32, 32, 3)
    react = zoo.load(name, input_shape=shape, num_classes=10)
    plain = zoo.load(name, input_shape=shape, num_classes=10, activations="sign_prelu")
    rprelus = [layer for layer in react.layers if isinstance(layer, RPReLU)]
    prelus = [layer for layer in plain.layers if isinstance(layer, tf.keras.layers.PReLU)]
    assert len(rprelus) == len(prelus) > 0
    assert not any(isinstance(layer, RPReLU) for layer in plain.layers)
    convs = [layer for layer in plain.layers if isinstance(layer, lq.layers.QuantConv2D)]
    assert not any(isinstance(c.input_quantizer, RSign) for c in convs)
    # per layer: RPReLU has 3 vectors (shift, slope, shift), PReLU 1; RSign's shift goes
    rsign_shifts = sum(int(c.input_quantizer.bias.shape[0]) for c in
                       [layer for layer in react.layers if isinstance(layer, lq.layers.QuantConv2D)]
                       if isinstance(c.input_quantizer, RSign))
    rsign_shifts += sum(int(layer.bias.shape[0]) for layer in react.layers if isinstance(layer, RSign))
    shifts = sum(2 * int(layer.alpha.shape[0]) for layer in rprelus)
    assert react.count_params() - plain.count_params() == shifts + rsign_shifts
    # PReLU: slope 0.25 per channel, shared over height and width
    prelu = prelus[0]
    np.testing.assert_allclose(prelu.get_weights()[0], 0.25)
    x = tf.constant([[[[-2.0] * prelu.get_weights()[0].shape[-1]]]])
    np.testing.assert_allclose(prelu(x).numpy(), -0.5)
    with pytest.raises(ValueError, match="activations"):
        zoo.load(name, input_shape=shape, num_classes=10, activations="relu")
