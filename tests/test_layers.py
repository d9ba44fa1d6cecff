"""Quantizers used by the zoo's binary convs: zoo.layers.Clip and Larq's ApproxSign / MagnitudeAwareSign."""
import numpy as np
import pytest

import zoo  # noqa: F401  (before tensorflow)
import larq as lq
import tensorflow as tf

from zoo.layers import Clip

XS = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=np.float32)
# points away from the kinks at |x| == 1, where the derivative is not defined
GRAD_XS = np.array([-3.0, -1.5, -0.99, -0.5, -0.2, 0.0, 0.3, 0.75, 0.99, 1.01, 2.0], dtype=np.float32)


def _value_and_grad(fn, xs):
    x = tf.constant(xs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y.numpy(), tape.gradient(y, x).numpy()


def test_clip_values():
    out = Clip()(tf.constant(XS)).numpy()
    np.testing.assert_array_equal(out, np.clip(XS, -1, 1))
    np.testing.assert_array_equal(out, [-1, -1, -0.5, 0, 0.5, 1, 1])


def test_leaky_clip_values():
    out = Clip(slope=0.1)(tf.constant(XS)).numpy()
    expected = np.where(XS < -1, -1 + 0.1 * (XS + 1), np.where(XS > 1, 1 + 0.1 * (XS - 1), XS))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out, [-1.2, -1, -0.5, 0, 0.5, 1, 1.2], atol=1e-6)


def test_clip_gradient():
    _, grad = _value_and_grad(Clip(), GRAD_XS)
    np.testing.assert_array_equal(grad, np.where(np.abs(GRAD_XS) < 1, 1.0, 0.0))


def test_leaky_clip_gradient():
    _, grad = _value_and_grad(Clip(slope=0.1), GRAD_XS)
    np.testing.assert_allclose(grad, np.where(np.abs(GRAD_XS) < 1, 1.0, 0.1), atol=1e-6)


def test_clip_is_real_valued():
    assert Clip.precision == 32 and Clip(slope=0.1).precision == 32


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_clip_config_round_trip(slope):
    layer = Clip(slope=slope)
    config = layer.get_config()
    assert config["slope"] == slope
    clone = Clip.from_config(config)
    assert clone.slope == slope
    np.testing.assert_array_equal(clone(tf.constant(XS)).numpy(), layer(tf.constant(XS)).numpy())
    # registered under the zoo package: resolvable by name, e.g. as a QuantConv2D input quantizer
    assert tf.keras.utils.get_registered_name(Clip) == "zoo>Clip"
    restored = tf.keras.utils.deserialize_keras_object(tf.keras.utils.serialize_keras_object(layer))
    assert isinstance(restored, Clip) and restored.slope == slope


def test_clip_as_input_quantizer_serializes():
    conv = lq.layers.QuantConv2D(2, 1, input_quantizer=Clip(slope=0.1), use_bias=False)
    clone = lq.layers.QuantConv2D.from_config(conv.get_config())
    assert isinstance(clone.input_quantizer, Clip) and clone.input_quantizer.slope == 0.1


def test_approx_sign_forward_and_gradient():
    quantizer = lq.quantizers.get("approx_sign")
    y, grad = _value_and_grad(quantizer, GRAD_XS)
    # sign with sign(0) = +1 (Larq's convention)
    np.testing.assert_array_equal(y, np.where(GRAD_XS >= 0, 1.0, -1.0))
    expected = np.where(np.abs(GRAD_XS) < 1, 2 - 2 * np.abs(GRAD_XS), 0.0)
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    # a few values by hand: 2 at 0, 1 at +-0.5, 0.5 at 0.75, 0 beyond 1
    _, g = _value_and_grad(lq.quantizers.ApproxSign(), np.array([0.0, 0.5, -0.5, 0.75, 1.5], np.float32))
    np.testing.assert_allclose(g, [2.0, 1.0, 1.0, 0.5, 0.0], atol=1e-6)


def test_birealnet_convs_use_approx_sign_and_magnitude_aware_sign():
    model = zoo.load("birealnet18", input_shape=(32, 32, 3), num_classes=10)
    convs = [layer for layer in model.layers if isinstance(layer, lq.layers.QuantConv2D)]
    assert len(convs) == 16  # one binary conv per basic block, 4 stages x 4 blocks
    for conv in convs:
        assert isinstance(conv.input_quantizer, lq.quantizers.ApproxSign)
        assert isinstance(conv.kernel_quantizer, lq.quantizers.MagnitudeAwareSign)
    tf.keras.backend.clear_session()


def test_magnitude_aware_sign_per_output_channel():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    kernel[np.abs(kernel) < 1e-3] = 0.5  # keep sign(0) out of it
    out = lq.quantizers.MagnitudeAwareSign()(tf.constant(kernel)).numpy()
    scale = np.abs(kernel).mean(axis=(0, 1, 2))
    assert scale.shape == (5,) and len(set(np.round(scale, 5))) == 5
    np.testing.assert_allclose(out, scale * np.sign(kernel), rtol=1e-6)
    # every output channel holds exactly two values, +-its scale
    for c in range(5):
        np.testing.assert_allclose(np.unique(np.abs(out[..., c])), [scale[c]], rtol=1e-6)


def test_magnitude_aware_sign_small_example():
    # a 1x1 conv kernel with 2 inputs and 2 output channels
    kernel = np.array([[[[1.0, -0.2], [-3.0, 0.6]]]], dtype=np.float32)  # (1, 1, 2, 2)
    out = lq.quantizers.MagnitudeAwareSign()(tf.constant(kernel)).numpy()
    # channel 0: mean(|1|, |-3|) = 2; channel 1: mean(0.2, 0.6) = 0.4
    np.testing.assert_allclose(out, [[[[2.0, -0.4], [-2.0, 0.4]]]], rtol=1e-6)
