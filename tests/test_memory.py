"""zoo.memory: a model thrown away inside ``discarded_models`` is freed, not kept alive by
the gradient functions larq's quantizers register."""
import gc
import weakref

import larq as lq
import numpy as np
import tensorflow as tf

from zoo.memory import discarded_models, forget_custom_gradients


def _custom_gradients():
    from tensorflow.python.framework import ops

    return {n for n in ops._gradient_registry._registry if n.startswith("CustomGradient-")}


def _binary_model():
    inputs = tf.keras.Input((8, 8, 3))
    x = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False)(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(x))


def _built_and_dropped():
    model = _binary_model()
    kernel = weakref.ref(model.layers[1].kernel.handle)  # the variable's buffer
    del model
    tf.keras.backend.clear_session()
    gc.collect()
    return kernel


def test_a_discarded_model_is_freed_and_one_built_before_keeps_its_gradients():
    forget_custom_gradients()
    kept = _binary_model()
    before = _custom_gradients()
    assert before, "larq's quantizers register their gradients while Keras builds the graph"

    leaked = _built_and_dropped()
    assert leaked() is not None  # what the module is for: the registry holds the kernel

    forget_custom_gradients(keep=before)
    gc.collect()
    assert leaked() is None
    with discarded_models():
        freed = _built_and_dropped()
    assert freed() is None
    assert _custom_gradients() == before  # the registrations made before the block stay

    x, y = np.ones((4, 8, 8, 3), np.float32), np.array([0, 1, 0, 1])
    kept.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(kept.fit(x, y, epochs=1, verbose=0).history["loss"][0])


def test_a_model_trained_inside_the_block_trains():
    x, y = np.ones((4, 8, 8, 3), np.float32), np.array([0, 1, 0, 1])
    with discarded_models():
        model = _binary_model()
        model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        kernel = model.layers[1].kernel.numpy().copy()
        model.fit(x, y, epochs=2, verbose=0)
        assert not np.array_equal(kernel, model.layers[1].kernel.numpy())
    assert forget_custom_gradients() == 0  # the block dropped everything it registered
