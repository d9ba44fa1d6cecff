"""zoo.costs.model_costs on tiny hand-built models, counted by hand."""
import pytest

import zoo  # noqa: F401  (before tensorflow)
import larq as lq
import tensorflow as tf

from zoo.costs import model_costs

H = W = 8
CONV1_PARAMS = 3 * 3 * 3 * 4  # 108
CONV2_PARAMS = 3 * 3 * 4 * 6  # 216
DENSE_PARAMS = H * W * 6 * 10 + 10  # 3850
CONV1_MACS = H * W * 3 * 3 * 3 * 4  # 6912
CONV2_MACS = H * W * 3 * 3 * 4 * 6  # 13824
DENSE_MACS = H * W * 6 * 10  # 3840


def _tiny(input_quantizer, kernel_quantizer):
    inputs = tf.keras.Input((H, W, 3))
    x = tf.keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = lq.layers.QuantConv2D(
        6, 3, padding="same", input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer, use_bias=False,
        kernel_constraint="weight_clip" if kernel_quantizer else None,
    )(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(10)(x)
    return tf.keras.Model(inputs, outputs)


@pytest.fixture(autouse=True)
def _clear():
    yield
    tf.keras.backend.clear_session()


def test_binary_conv_counts():
    costs = model_costs(_tiny("ste_sign", "ste_sign"))
    assert costs["input_shape"] == [H, W, 3]
    assert costs["params"] == CONV1_PARAMS + CONV2_PARAMS + DENSE_PARAMS == 4174
    assert costs["binary_params"] == CONV2_PARAMS == 216
    assert costs["real_params"] == CONV1_PARAMS + DENSE_PARAMS == 3958
    assert costs["binary_macs"] == CONV2_MACS == 13824
    assert costs["float_macs"] == CONV1_MACS + DENSE_MACS == 10752
    assert costs["ops"] == pytest.approx(10752 + 13824 / 64) == 10968
    assert costs["model_size_bytes"] == pytest.approx((216 + 32 * 3958) / 8)


def test_kernel_only_quantizer_counts_float_macs():
    # real-valued inputs times binary weights: the MACs are not XNOR-popcounts
    costs = model_costs(_tiny(None, "ste_sign"))
    assert costs["params"] == 4174
    assert costs["binary_params"] == CONV2_PARAMS  # the weights themselves are still 1-bit
    assert costs["binary_macs"] == 0
    assert costs["float_macs"] == CONV1_MACS + CONV2_MACS + DENSE_MACS == 24576
    assert costs["ops"] == 24576


def test_input_only_quantizer_counts_float_macs():
    costs = model_costs(_tiny("ste_sign", None))
    assert costs["binary_params"] == 0
    assert costs["binary_macs"] == 0
    assert costs["float_macs"] == 24576


def test_real_model_has_no_binary_costs():
    costs = model_costs(_tiny(None, None))
    assert costs["binary_params"] == 0 and costs["binary_macs"] == 0
    assert costs["params"] == costs["real_params"] == 4174
    assert costs["model_size_bytes"] == 4174 * 4


def test_strided_binary_conv_counts_output_pixels():
    inputs = tf.keras.Input((16, 16, 2))
    x = lq.layers.QuantConv2D(
        3, 3, strides=2, padding="same", input_quantizer="ste_sign",
        kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False,
    )(inputs)
    costs = model_costs(tf.keras.Model(inputs, x))
    # 8x8 output pixels, each 3*3*2 MACs per output channel, 3 channels
    assert costs["binary_macs"] == 8 * 8 * 3 * 3 * 2 * 3 == 3456
    assert costs["float_macs"] == 0
    assert costs["ops"] == pytest.approx(3456 / 64)
